"""Benchmark: the Delta metadata store's core calls at N rows (wall time, rows/s, peak RSS).

For each N it builds a 2-feature graph and measures, each in a FRESH spawned subprocess (never forked:
delta-rs must not be forked once it is loaded):

* ``write_metadata`` of the root (N rows that bring their own provenance);
* ``write_metadata`` of the downstream (N rows from ``resolve_update(...).added`` plus two user columns);
* ``read_metadata(...).collect()`` of both;
* ``resolve_update(...).collect()`` of the downstream after 1% of the root samples changed one field;
* ``write_metadata`` of a 1,000-row batch of the downstream (what a pipeline writes per run).

Peak RSS is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` read in the measuring child, in MiB; "base" is the
same number right before the measured call (interpreter, imports and the input frame), so the difference is
what the call itself cost. Linux carries ``ru_maxrss`` across fork+exec, so this script's own process imports
nothing heavy and the input data is built in spawned children too.

The graph (the video graph of :mod:`metaxy_core.testing.graphs` under the ``bench/`` prefix):

* ``bench/raw`` (root): id ``sample_uid``; fields ``frames`` and ``audio``; user column ``path``;
* ``bench/embeddings``: depends on ``bench/raw``; fields ``embedding`` (<- ``frames``) and ``transcript``
  (<- ``audio``); user columns ``embedding_path`` (str) and ``dim`` (int).

Usage::

    .venv/bin/python benchmarks/bench_store.py                      # 100,000 and 1,000,000 rows
    .venv/bin/python benchmarks/bench_store.py 100000               # one size
    .venv/bin/python benchmarks/bench_store.py 1000000 --dir /data/bench --keep
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAW = "bench/raw"
EMB = "bench/embeddings"
CHANGED_FRACTION = 0.01


# ------------------------------------------------------------------------------------ graph & data
def build_graph() -> Any:
    """The benchmark graph, built the same way in every process (so every process gets the same versions)."""
    from metaxy_core.testing import video_graph

    return video_graph(prefix="bench", transcript="1")


def root_frame(n: int, *, audio_salt: str = "") -> Any:
    """N root rows; the provenance strings stand in for content hashes of the source files."""
    import polars as pl

    uid = pl.int_range(0, n, dtype=pl.Int64).alias("sample_uid")
    return pl.select(uid).with_columns(
        pl.format("s3://videos/{}.mp4", "sample_uid").alias("path"),
        pl.struct(
            frames=pl.col("sample_uid").hash(1).cast(pl.String),
            audio=(pl.col("sample_uid").hash(2).cast(pl.String) + audio_salt),
        ).alias("metaxy_provenance_by_field"),
    )


# ------------------------------------------------------------------------------------ child steps
def _store(root: str) -> Any:
    from metaxy_core import DeltaMetadataStore

    return DeltaMetadataStore(root)


def step_prepare_root(root: str, data: str, n: int) -> dict[str, Any]:
    root_frame(n).write_parquet(f"{data}/raw.parquet")
    changed = root_frame(n, audio_salt="-remastered").sample(fraction=CHANGED_FRACTION, seed=7, shuffle=True)
    changed.write_parquet(f"{data}/raw_changed.parquet")
    return {}


def step_prepare_downstream(root: str, data: str, n: int) -> dict[str, Any]:
    import polars as pl

    added = _store(root).resolve_update(EMB, graph=build_graph()).collect().added
    added.with_columns(
        pl.format("s3://embeddings/{}.npy", "sample_uid").alias("embedding_path"), pl.lit(512).alias("dim")
    ).write_parquet(f"{data}/emb.parquet")
    return {"rows": added.height}


def step_change_root(root: str, data: str, n: int) -> dict[str, Any]:
    import polars as pl

    rows = _store(root).write_metadata(
        RAW, pl.read_parquet(f"{data}/raw_changed.parquet"), graph=build_graph()
    )
    return {"rows": rows}


def _measure(call: Callable[[], Any]) -> dict[str, Any]:
    """Time ``call``; the caller must pop ``out`` (never send a frame back to the parent: it would grow, and
    children inherit the parent's ``ru_maxrss`` through fork+exec)."""
    base = _maxrss_mib()
    started = time.perf_counter()
    out = call()
    return {"seconds": time.perf_counter() - started, "base_mib": base, "out": out}


def step_write_root(root: str, data: str, n: int) -> dict[str, Any]:
    import polars as pl

    graph, frame, store = build_graph(), pl.read_parquet(f"{data}/raw.parquet"), _store(root)
    m = _measure(lambda: store.write_metadata(RAW, frame, graph=graph))
    return {"rows": m.pop("out"), **m}


def step_write_downstream(root: str, data: str, n: int) -> dict[str, Any]:
    import polars as pl

    graph, frame, store = build_graph(), pl.read_parquet(f"{data}/emb.parquet"), _store(root)
    m = _measure(lambda: store.write_metadata(EMB, frame, graph=graph))
    return {"rows": m.pop("out"), **m}


def step_read_root(root: str, data: str, n: int) -> dict[str, Any]:
    graph, store = build_graph(), _store(root)
    m = _measure(lambda: store.read_metadata(RAW, graph=graph).collect())
    return {"rows": m.pop("out").height, **m}


def step_read_downstream(root: str, data: str, n: int) -> dict[str, Any]:
    graph, store = build_graph(), _store(root)
    m = _measure(lambda: store.read_metadata(EMB, graph=graph).collect())
    return {"rows": m.pop("out").height, **m}


def step_resolve_downstream(root: str, data: str, n: int) -> dict[str, Any]:
    graph, store = build_graph(), _store(root)
    m = _measure(lambda: store.resolve_update(EMB, graph=graph).collect())
    increment = m.pop("out")
    counts = (
        f"added {increment.added.height}, changed {increment.changed.height}, "
        f"removed {increment.removed.height}"
    )
    return {"rows": n, "note": counts, **m}


def step_write_downstream_batch(root: str, data: str, n: int) -> dict[str, Any]:
    """A pipeline's typical write: a batch of 1,000 samples (recomputed) of a feature whose upstream has N;
    only those samples' upstream provenance is hashed."""
    import polars as pl

    graph, store = build_graph(), _store(root)
    frame = pl.read_parquet(f"{data}/emb.parquet", n_rows=BATCH_ROWS)
    m = _measure(lambda: store.write_metadata(EMB, frame, graph=graph))
    return {"rows": m.pop("out"), **m}


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ------------------------------------------------------------------------------------- harness
def _child(step_name: str, root: str, data: str, n: int, queue: Any) -> None:
    try:
        result = globals()[step_name](root, data, n)
        result["peak_mib"] = _maxrss_mib()
        queue.put(result)
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails loudly
        queue.put({"error": traceback.format_exc()})


def run_in_spawned_child(step: Callable[..., Any], root: Path, data: Path, n: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(step.__name__, str(root), str(data), n, queue))
    process.start()
    result = queue.get()
    process.join()
    if "error" in result:
        raise RuntimeError(f"{step.__name__} failed in its subprocess:\n{result['error']}")
    return result


MEASURED = [
    ("write_metadata(raw)", step_write_root),
    ("write_metadata(embeddings)", step_write_downstream),
    ("read_metadata(raw).collect()", step_read_root),
    ("read_metadata(embeddings).collect()", step_read_downstream),
    ("resolve_update(embeddings).collect()", step_resolve_downstream),
    ("write_metadata(embeddings), 1,000-row batch", step_write_downstream_batch),
]
BATCH_ROWS = 1_000


def bench(n: int, base_dir: Path, *, keep: bool) -> list[dict[str, Any]]:
    work = base_dir / f"n{n}"
    shutil.rmtree(work, ignore_errors=True)
    root, data = work / "store", work / "data"
    data.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    try:
        run_in_spawned_child(step_prepare_root, root, data, n)
        for label, step in MEASURED:
            if step is step_write_downstream:
                run_in_spawned_child(step_prepare_downstream, root, data, n)
            if step is step_resolve_downstream:
                run_in_spawned_child(step_change_root, root, data, n)  # 1% of samples get new audio
            result = run_in_spawned_child(step, root, data, n)
            rows.append({"n": n, "operation": label, **result})
            print(f"  {label:<38} {result['seconds']:8.2f} s", file=sys.stderr, flush=True)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = [
        ("N", 9),
        ("operation", 38),
        ("rows", 9),
        ("wall s", 7),
        ("rows/s", 11),
        ("peak RSS MiB", 12),
        ("base MiB", 8),
        ("note", 32),
    ]
    print("| " + " | ".join(f"{name:<{width}}" for name, width in columns) + " |")
    print("|" + "|".join("-" * (width + 2) for _, width in columns) + "|")
    for r in rows:
        rate = r["rows"] / r["seconds"] if r["seconds"] > 0 else float("inf")
        cells = [
            f"{r['n']:>9,}",
            f"{r['operation']:<38}",
            f"{r['rows']:>9,}",
            f"{r['seconds']:>7.2f}",
            f"{rate:>11,.0f}",
            f"{r['peak_mib']:>12.0f}",
            f"{r['base_mib']:>8.0f}",
            f"{r.get('note', ''):<32}",
        ]
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100_000, 1_000_000], help="row counts (N)")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/metaxy-bench-store"), help="scratch folder")
    parser.add_argument("--keep", action="store_true", help="keep the Delta tables afterwards")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        print(f"N = {n:,}", file=sys.stderr, flush=True)
        rows.extend(bench(n, args.dir, keep=args.keep))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
