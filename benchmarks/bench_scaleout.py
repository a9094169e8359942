"""Scale-out: one reconciliation at N rows, run whole (today's default) and as units on 1 and 2 local workers.

The scale-out project (:mod:`metaxy_core.testing.scaleout`): ``wide/left`` and ``wide/right`` (independent)
and ``wide/below`` (below ``left``), N samples each, written in id order in commits of a million rows, so
buckets are id ranges. Every measurement copies the seeded project and applies its migration in a fresh
*spawned* interpreter:

* ``whole``: ``metaxy migrations apply`` as it runs by default (``--workers 1``: each step in one call);
* ``workers=1`` / ``workers=2``: the same apply with its units on that many spawned worker processes.

Reported: wall time, the ratio to ``whole``, the units' total CPU seconds (the work: divide by the workers
to read off the ideal wall time at N workers), and per unit its wall, CPU and the peak RSS of the process
that ran it (what a worker must be given: bounded by ``bucket_rows``, whatever N is).

    .venv/bin/python benchmarks/bench_scaleout.py                       # 5M samples, buckets of 1M
    .venv/bin/python benchmarks/bench_scaleout.py --samples 1000000 --bucket-rows 250000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Any


def _seed(root: str, samples: int, bucket_rows: int) -> None:
    from metaxy_core.graph import FeatureGraph
    from metaxy_core.testing.scaleout import write_scaleout_project

    with FeatureGraph().use():
        write_scaleout_project(Path(root), samples=samples, bucket_rows=bucket_rows)


def _apply(config: str, workers: int, out: Any) -> None:
    """Apply the migration (``workers`` 0: whole steps in this process) and report what happened."""
    from metaxy_core.commands import open_project
    from metaxy_core.commands.workers import WorkerPool
    from metaxy_core.graph import FeatureGraph

    collected: list[dict[str, Any]] = []
    with FeatureGraph().use():
        project = open_project(config)
        executor = project.executor()
        start = time.perf_counter()
        if workers == 0:
            results = executor.apply(project.chain)
        else:
            pool = WorkerPool(
                project.config, workers=workers, run_id=executor.run_id, batch_rows=executor.batch_rows
            )
            with pool:

                def run(migration: Any, units: list[Any]) -> list[Any]:
                    done = pool(migration, units)
                    collected.extend(r.model_dump(mode="json") for r in done)
                    return done

                executor.run_units = run
                results = executor.apply(project.chain)
        wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put(
        {
            "wall": wall,
            "rows": sum(s.rows for r in results for s in r.steps),
            "coordinator_cpu": usage.ru_utime + usage.ru_stime,
            "coordinator_rss_mib": usage.ru_maxrss / 1024,
            "units": collected,
        }
    )


def _spawned(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def _seed_spawned(root: str, samples: int, bucket_rows: int, queue: Any) -> None:
    _seed(root, samples, bucket_rows)
    queue.put(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5_000_000)
    parser.add_argument("--bucket-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--dir", default=os.environ.get("METAXY_BENCH_DIR", "/tmp/metaxy-bench") + "/scaleout"
    )
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    base = Path(args.dir)
    template = base / f"seeded-{args.samples}-{args.bucket_rows}"
    if args.rebuild or not (template / "metaxy.toml").is_file():
        shutil.rmtree(template, ignore_errors=True)
        start = time.perf_counter()
        _spawned(_seed_spawned, str(template), args.samples, args.bucket_rows)
        print(f"seeded {args.samples:,} samples x 4 features in {time.perf_counter() - start:.0f} s")
    rows: list[tuple[str, dict[str, Any]]] = []
    for label, workers in (("whole", 0), ("workers=1", 1), ("workers=2", 2)):
        work = base / "run"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(template, work)
        got = _spawned(_apply, str(work / "metaxy.toml"), workers)
        rows.append((label, got))
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nreconciliation of 3 features x {args.samples:,} samples, buckets of {args.bucket_rows:,} rows")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(
        f"{'run':<10} {'wall s':>8} {'x whole':>8} {'rows':>11} {'units':>6} {'unit CPU s':>11} "
        f"{'unit wall s (med/max)':>22} {'unit peak RSS MiB (max)':>24} {'coordinator RSS MiB':>20}"
    )
    whole = rows[0][1]["wall"]
    for label, got in rows:
        units = got["units"]
        cpu = sum(u["cpu_s"] for u in units) if units else got["coordinator_cpu"]
        walls = [u["duration_s"] for u in units] or [got["wall"]]
        rss = max((u["peak_rss_mib"] for u in units), default=got["coordinator_rss_mib"])
        print(
            f"{label:<10} {got['wall']:>8.1f} {got['wall'] / whole:>8.2f} {got['rows']:>11,} {len(units):>6} "
            f"{cpu:>11.1f} {statistics.median(walls):>10.1f} / {max(walls):>9.1f} {rss:>24.0f} "
            f"{got['coordinator_rss_mib']:>20.0f}"
        )
    print("\n" + json.dumps({label: {k: v for k, v in got.items() if k != "units"} for label, got in rows}))


if __name__ == "__main__":
    main()
