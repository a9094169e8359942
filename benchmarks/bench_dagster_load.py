"""How long a Dagster code location with many migrations and features takes to load.

The project (``metaxy_core.testing.scale``): N features in a tree, M diff migrations, each bumping one
feature, so the chain walks through M + 1 snapshots, every snapshot file beside the migrations. Each
measurement runs in a fresh spawned interpreter and reports the first load (what a code server does at start,
Dagster's own import time excluded) and a second one (a reload in the same process), as wall and CPU seconds;
the machine is shared, so CPU seconds are the steadier figure. The same project loaded without feature assets
is the baseline of the ratio: what the feature assets and their lineage cost.

    .venv/bin/python benchmarks/bench_dagster_load.py                    # 200 migrations, 200 features
    .venv/bin/python benchmarks/bench_dagster_load.py --features 400 --migrations 200 --repeat 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _scale_common as C  # noqa: E402


def _setup(root: str, features: int, migrations: int) -> dict[str, Any]:
    from metaxy_core.testing.scale import write_scale_project

    shutil.rmtree(root, ignore_errors=True)
    return {"config": str(write_scale_project(Path(root), features=features, migrations=migrations))}


def _load(config: str, include_feature_assets: bool) -> dict[str, Any]:
    import dagster  # noqa: F401  (imported before the clock starts: every code server pays it anyway)

    from metaxy_core import FeatureGraph
    from metaxy_dagster import build_migration_definitions

    times, graph = [], FeatureGraph()  # one graph: the entrypoint registers into it once, as in a code server
    for _ in range(2):
        with graph.use():
            wall, cpu = time.perf_counter(), time.process_time()
            defs = build_migration_definitions(
                config_path=config, include_feature_assets=include_feature_assets
            )
            times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        "first_wall_s": times[0][0],
        "first_cpu_s": times[0][1],
        "second_wall_s": times[1][0],
        "second_cpu_s": times[1][1],
        "assets": len(list(defs.assets)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=C.ROOT / "dagster_load")
    parser.add_argument("--features", type=int, default=200)
    parser.add_argument("--migrations", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per variant (median reported)")
    args = parser.parse_args()
    setup = C.run_isolated(_setup, str(args.dir), args.features, args.migrations)
    if "error" in setup:
        raise SystemExit(setup["error"])
    written = setup["seconds"]
    print(f"project: {args.migrations} migrations, {args.features} features ({written:.1f}s to write)")
    results: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(args.repeat):
        for features in (True, False):
            run = C.run_isolated(_load, setup["config"], features)
            if "error" in run:
                raise SystemExit(run["error"])
            results[features].append(run)

    def median(features: bool, key: str) -> float:
        return statistics.median(r[key] for r in results[features])

    rows = []
    for features, label in ((True, "migrations + feature assets"), (False, "migrations only (baseline)")):
        rows.append(
            [
                f"{label} ({results[features][0]['assets']} assets)",
                median(features, "first_wall_s"),
                median(features, "first_cpu_s"),
                median(features, "second_wall_s"),
                median(features, "second_cpu_s"),
                max(r["peak_rss_mib"] for r in results[features]),
            ]
        )
    print()
    print(
        C.fmt_table(
            f"build_migration_definitions, median of {args.repeat} fresh processes",
            ["definitions", "1st load s", "1st CPU s", "reload s", "reload CPU s", "peak RSS MiB"],
            rows,
        )
    )
    ratio = median(True, "first_cpu_s") / median(False, "first_cpu_s")
    print(f"feature assets and lineage: x{ratio:.2f} the CPU of the first load without them")


if __name__ == "__main__":
    main()
