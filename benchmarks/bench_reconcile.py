"""Benchmark: DataVersionReconciliation throughput and peak memory.

Builds a 2-feature graph at N rows, writes it under graph v1 (in batches), pushes the snapshot, bumps the
downstream feature's code_version (v2), and measures ``MigrationExecutor.apply`` of a YAML
``DataVersionReconciliation`` migration in a FRESH spawned subprocess (never forked: delta-rs must not be
forked once loaded). The child reports its wall time for ``apply`` and its peak RSS (``ru_maxrss``) before
and after the apply, so the import baseline can be told apart from what reconciliation costs.

Linux carries ``ru_maxrss`` across fork+exec, so a child spawned by a big parent would report the parent's
size: this script's main process therefore imports nothing heavy, and building the data and checking the
result also run in their own spawned processes. ``VmHWM`` (the child's own high-water mark) is printed as a
cross-check.

The graph:

* ``bench/raw`` (root): id ``sample_uid``; fields ``frames`` and ``audio``; user column ``path``;
* ``bench/emb``: depends on ``bench/raw``; fields ``embedding`` (<- ``frames``) and ``sync`` (<- ``frames`` +
  ``audio``); user columns ``score`` (f64) and ``label`` (str).

Usage::

    .venv/bin/python benchmarks/bench_reconcile.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/bench_reconcile.py 1000000 3000000  # several sizes, one table
    .venv/bin/python benchmarks/bench_reconcile.py 200000 --batch-rows 50000 --keep
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RAW, EMB = "bench/raw", "bench/emb"
PROJECT = "bench"
MIGRATION_ID = "20250101_000000_bench_reconcile"
WRITE_BATCH = 500_000


def make_graph(emb_code_version: str) -> Any:
    from metaxy_core import FeatureDep, FeatureGraph, FeatureSpec, FieldDep, FieldSpec

    g = FeatureGraph()
    g.add(
        FeatureSpec(
            key=RAW,
            id_columns=["sample_uid"],
            fields=[FieldSpec(key="frames", code_version="1"), FieldSpec(key="audio", code_version="1")],
        )
    )
    g.add(
        FeatureSpec(
            key=EMB,
            id_columns=["sample_uid"],
            deps=[FeatureDep(feature=RAW)],
            fields=[
                FieldSpec(
                    key="embedding",
                    code_version=emb_code_version,
                    deps=[FieldDep(feature=RAW, fields=["frames"])],
                ),
                FieldSpec(key="sync", code_version="1"),
            ],
        )
    )
    return g


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build(root: Path, rows: int) -> tuple[str, str]:
    """Write ``rows`` samples of both features under v1 in batches; push v1 and v2; return their snapshots."""
    import polars as pl

    from metaxy_core import DeltaMetadataStore

    g1, g2 = make_graph("1"), make_graph("2")
    store = DeltaMetadataStore(root / "store", project=PROJECT)
    for start in range(0, rows, WRITE_BATCH):
        i = pl.int_range(start, min(start + WRITE_BATCH, rows), eager=True, dtype=pl.Int64).alias(
            "sample_uid"
        )
        raw = pl.DataFrame(i).with_columns(
            pl.format("s3://videos/{}.mp4", i).alias("path"),
            pl.struct(pl.format("fr{}", i).alias("frames"), pl.format("au{}", i).alias("audio")).alias(
                "metaxy_provenance_by_field"
            ),
        )
        store.write_metadata(RAW, raw, graph=g1)
    for start in range(0, rows, WRITE_BATCH):
        i = pl.int_range(start, min(start + WRITE_BATCH, rows), eager=True, dtype=pl.Int64).alias(
            "sample_uid"
        )
        emb = pl.DataFrame(i).with_columns(
            (i.cast(pl.Float64) / 7).alias("score"), pl.format("label-{}", i).alias("label")
        )
        store.write_metadata(EMB, emb, graph=g1)
    store.push_snapshot(g1)
    store.push_snapshot(g2)
    migrations = root / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / f"{MIGRATION_ID}.yaml").write_text(
        f"migration_id: {MIGRATION_ID}\n"
        "created_at: 2025-01-01T00:00:00+00:00\n"
        "parent: initial\n"
        f"from_snapshot_version: {g1.snapshot_version}\n"
        f"to_snapshot_version: {g2.snapshot_version}\n"
        "ops:\n"
        "  - type: metaxy_core.migrations.DataVersionReconciliation\n"
    )
    return g1.snapshot_version, g2.snapshot_version


def child_apply(root: str, batch_rows: int, out: Any) -> None:
    """Runs in a fresh spawned process: apply the migration, report time and peak RSS."""
    try:
        from metaxy_core import DeltaMetadataStore
        from metaxy_core.migrations import MigrationExecutor, load_chain

        store = DeltaMetadataStore(Path(root) / "store", project=PROJECT)
        graph = make_graph("2")
        chain = load_chain(Path(root) / "migrations")
        rss_before = _rss_mib()
        start = time.perf_counter()
        [result] = MigrationExecutor(store, graph=graph, batch_rows=batch_rows).apply(chain)
        wall = time.perf_counter() - start
        out.put(
            {
                "ok": True,
                "wall": wall,
                "rows": result.rows_total,
                "status": result.status,
                "rss_before": rss_before,
                "rss_peak": _rss_mib(),
                "hwm": _hwm_mib(),
            }
        )
    except BaseException as exc:  # report instead of dying silently
        out.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def verify(root: Path, rows: int) -> str:
    from metaxy_core import DeltaMetadataStore

    store = DeltaMetadataStore(root / "store", project=PROJECT)
    g2 = make_graph("2")
    current = store.read_metadata(EMB, graph=g2, columns=["label"]).collect().height
    changed = store.resolve_update(EMB, graph=g2).collect().changed.height
    return "ok" if current == rows and changed == 0 else f"FAILED ({current} rows, {changed} changed)"


def _in_child(target: Any, *args: Any) -> Any:
    """Run ``target(*args, queue)`` in a fresh spawned process and return what it put on the queue."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, out))
    proc.start()
    result = out.get()
    proc.join()
    return result


def child_build(root: str, rows: int, out: Any) -> None:
    t = time.perf_counter()
    build(Path(root), rows)
    out.put(time.perf_counter() - t)


def child_verify(root: str, rows: int, out: Any) -> None:
    out.put(verify(Path(root), rows))


def run(rows: int, batch_rows: int, keep: bool, check: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"metaxy-bench-reconcile-{rows}-"))
    try:
        setup = _in_child(child_build, str(root), rows)
        report = _in_child(child_apply, str(root), batch_rows)
        if not report["ok"]:
            raise SystemExit(f"apply failed at {rows} rows: {report['error']}")
        report.update(
            n=rows,
            batch_rows=batch_rows,
            setup=setup,
            check=_in_child(child_verify, str(root), rows) if check else "-",
        )
        return report
    finally:
        if keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "rows", nargs="*", type=int, default=[1_000_000], help="table sizes (default 1000000)"
    )
    parser.add_argument(
        "--batch-rows", type=int, default=500_000, help="executor batch size (default 500000)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated store")
    parser.add_argument("--no-verify", action="store_true", help="skip the correctness check afterwards")
    args = parser.parse_args(argv)
    reports = []
    for rows in args.rows:
        report = run(rows, args.batch_rows, args.keep, not args.no_verify)
        reports.append(report)
        print(f"{rows:,} rows done", file=sys.stderr)
    header = (
        f"{'rows':>11} {'batch':>9} {'apply s':>8} {'rows/s':>11} {'RSS before':>11} {'peak RSS':>10} "
        f"{'delta':>9} {'VmHWM':>9} {'verify':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in reports:
        print(
            f"{r['n']:>11,} {r['batch_rows']:>9,} {r['wall']:>8.2f} {r['rows'] / r['wall']:>11,.0f} "
            f"{r['rss_before']:>8.0f} MiB {r['rss_peak']:>6.0f} MiB "
            f"{r['rss_peak'] - r['rss_before']:>5.0f} MiB "
            f"{r['hwm']:>5.0f} MiB {r['check']:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
