"""Adopting a Metaxy 0.1.6 store: ``metaxy migrations import-016`` then the 0.1.6 migration's apply, timed.

1. Makes a 0.1.6 project with the real ``metaxy==0.1.6`` (``tests/fixtures/metaxy016/make_store.py``: three
   features ``video/raw`` -> ``video/embeddings`` -> ``video/clip_scores``, ``--rows`` samples, then the
   lineage refined and 0.1.6's reconciliation migration generated). Reused across runs (``--rebuild``).
2. Copies its store and migration file under this project's configuration (ported features) and times, as
   subprocesses (wall time; peak RSS from ``wait4``): ``metaxy migrations import-016`` (snapshots rebuilt and
   pushed, rows of all three features carried over) and ``metaxy migrations apply`` (the 0.1.6 YAML,
   reconciling two features).

``--bucket-rows`` repeats both steps per value on a fresh copy: the import holds one hash bucket of samples of
one 0.1.6 feature version at a time, so its peak RSS follows ``bucket_rows`` (a huge value imports each
version in one piece, as before bucketing).

Usage::

    .venv/bin/python benchmarks/bench_import_016.py --rows 1000000
    .venv/bin/python benchmarks/bench_import_016.py --rows 3000000 --bucket-rows 500000,1000000,1000000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "metaxy016"))

import make_store  # noqa: E402

OURS_BIN = Path(sys.executable).parent / "metaxy"
PORTED = """
from metaxy_core import Feature, FeatureDep, FeatureSpec, FieldDep, FieldSpec

class Raw(Feature, spec=FeatureSpec(key="video/raw", id_columns=["sample_uid"],
        fields=[FieldSpec(key="frames"), FieldSpec(key="audio")])):
    path: str

class Emb(Feature, spec=FeatureSpec(key="video/embeddings", id_columns=["sample_uid"],
        deps=[FeatureDep(feature=Raw)],
        fields=[FieldSpec(key="embedding", deps=[FieldDep(feature=Raw, fields="frames")]),
                FieldSpec(key="transcript", deps=[FieldDep(feature=Raw, fields="audio")])])):
    dim: int

class Scores(Feature, spec=FeatureSpec(key="video/clip_scores", id_columns=["sample_uid"],
        deps=[FeatureDep(feature=Emb)], fields=[FieldSpec(key="score")])):
    score: float
"""


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, float | int | str]:
    """Run ``cmd`` in ``cwd``; wall time, peak RSS of that process (``wait4``) and its output."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env={
                **os.environ,
                **(env or {}),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")])),
            },
            stdout=log,
            stderr=log,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read().decode(errors="replace")
    return {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024, "exit": proc.returncode, "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/metaxy-bench/import016"))
    parser.add_argument("--venv", type=Path, default=Path("/tmp/metaxy016-venv"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--bucket-rows",
        default="1000000",
        help="comma-separated bucket_rows to import with, each on a fresh copy (e.g. 500000,1000000000: the "
        "second imports each 0.1.6 feature version in one piece)",
    )
    args = parser.parse_args()
    legacy = args.dir / f"legacy_{args.rows}"
    if args.rebuild or not (legacy / ".complete").exists():
        shutil.rmtree(legacy, ignore_errors=True)
        print(f"0.1.6: writing {args.rows:,} samples x 3 features ...", flush=True)
        t0 = time.perf_counter()
        make_store.make_project(legacy, make_store.ensure_venv(args.venv), n_samples=args.rows)
        print(f"  {time.perf_counter() - t0:.0f} s")
        (legacy / ".complete").write_text("ok")
    rows = 3 * args.rows
    print(f"{'step':<12} {'bucket_rows':>13} {'rows':>12} {'time':>8} {'rows/s':>10} {'peak RSS':>10}")
    for bucket_rows in [int(b) for b in args.bucket_rows.split(",")]:
        ours = args.dir / f"ours_{args.rows}"
        shutil.rmtree(ours, ignore_errors=True)
        ours.mkdir(parents=True)
        (ours / "legacy_features.py").write_text(textwrap.dedent(PORTED))
        (ours / "metaxy.toml").write_text(
            'project = "legacy"\nentrypoints = ["legacy_features"]\n[store]\nroot = "store"\n'
        )
        shutil.copytree(legacy / "store", ours / "store")
        shutil.copytree(legacy / ".metaxy" / "migrations", ours / ".metaxy" / "migrations")
        env = {"METAXY_BUCKET_ROWS": str(bucket_rows)}
        for verb, n in (("import-016", rows), ("apply", 2 * args.rows)):
            result = timed([str(OURS_BIN), "migrations", verb], ours, env)
            if result["exit"] != 0:
                raise SystemExit(f"{verb} failed:\n{result['output']}")
            seconds = float(result["seconds"])
            print(
                f"{verb:<12} {bucket_rows:>13,} {n:>12,} {seconds:>7.1f}s {n / seconds:>10,.0f} "
                f"{result['rss_mib']:>8.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
