"""Shared pieces of the scale benchmarks: the benchmark graph, data builders and the measurement harness.

Every measurement runs in a fresh *spawned* subprocess (never forked: delta-rs must not be forked once
loaded) whose peak RSS (``ru_maxrss``) is reported next to its wall time. Data lives under ``/tmp``.

The graph (the issue's "2-feature graph"; the video graph of :mod:`metaxy_core.testing.graphs` under the
``bench/`` prefix):

* ``bench/raw`` (root): id ``sample_uid``; fields ``frames`` and ``audio``; user column ``path``;
* ``bench/embeddings``: depends on ``bench/raw``; fields ``embedding`` and ``transcript``; user columns
  ``embedding_path`` and ``dim``. In the *old* graph both fields depend on every upstream field; the *new*
  graph refines field-level lineage (``embedding`` <- ``frames``, ``transcript`` <- ``audio``), the textbook
  case for a reconciliation: definitions changed, computed results did not.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("METAXY_BENCH_DIR", "/tmp/metaxy-bench"))

# Measured processes start like an installed package's: with bytecode caches. Where PYTHONDONTWRITEBYTECODE
# is set (as on the CI machine, whose venv holds no caches) every process would compile each module it
# imports, ~1.7 s of start-up for polars + deltalake + metaxy_core, which a pip-installed venv (0.1.x's
# here) never pays. Children (spawned here or by the side-by-side scripts) keep caches under ROOT/pycache.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / "pycache"))
RAW = "bench/raw"
EMB = "bench/embeddings"
WRITE_CHUNK = 1_000_000


# ----------------------------------------------------------------------------- graph
def graphs() -> tuple[Any, Any]:
    """(old graph, new graph) of the benchmark; built fresh so every process gets identical versions."""
    from metaxy_core.testing import video_graph

    return (
        video_graph(prefix="bench", transcript="1", refined=False),
        video_graph(prefix="bench", transcript="1", refined=True),
    )


# ------------------------------------------------------------------------------ data
_LAYOUT = {"shuffled": False, "n": 0}


def sample_ids(start: int, stop: int) -> Any:
    """Sample numbers of write chunk [start, stop): consecutive, or (shuffled layout) spread over all ids."""
    import polars as pl

    if not _LAYOUT["shuffled"]:
        return pl.int_range(start, stop, dtype=pl.Int64, eager=True).alias("i")
    n, chunks = _LAYOUT["n"], max(1, -(-_LAYOUT["n"] // WRITE_CHUNK))
    c = start // WRITE_CHUNK
    return pl.int_range(c, n, chunks, dtype=pl.Int64, eager=True).alias("i")


def raw_frame(start: int, stop: int) -> Any:
    """Root rows [start, stop): ids, a path and content hashes as the root's provenance."""
    import polars as pl
    import polars_hash  # noqa: F401

    i = sample_ids(start, stop).to_frame()
    uid = pl.format("s{}", pl.col("i").cast(pl.String).str.zfill(10))
    return i.select(
        uid.alias("sample_uid"),
        pl.format("s3://videos/raw/{}.mp4", pl.col("i")).alias("path"),
        pl.struct(
            pl.format("f{}", pl.col("i")).nchash.xxh3_64().cast(pl.String).alias("frames"),
            pl.format("a{}", pl.col("i")).nchash.xxh3_64().cast(pl.String).alias("audio"),
        ).alias("metaxy_provenance_by_field"),
    )


def emb_user_frame(start: int, stop: int) -> Any:
    import polars as pl

    i = sample_ids(start, stop).to_frame()
    return i.select(
        pl.format("s{}", pl.col("i").cast(pl.String).str.zfill(10)).alias("sample_uid"),
        pl.format("s3://videos/emb/{}.npy", pl.col("i")).alias("embedding_path"),
        (pl.col("i") % 1024 + 256).alias("dim"),
    )


def build_store(
    root: Path | str,
    n_rows: int,
    *,
    project: str = "bench",
    shuffled: bool = False,
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write ``n_rows`` root rows and ``n_rows`` downstream rows under the old graph; push both snapshots.
    ``root`` may be an S3 URI (``options`` reach it): the store then writes as it does on S3.

    Rows are written in chunks of ``WRITE_CHUNK`` (one commit each). By default each chunk holds consecutive
    sample ids (ingestion order, so files are clustered on the id column); ``shuffled=True`` spreads every
    chunk over the whole id range (no clustering: the engine must fall back to hash buckets and a spill).
    """
    _LAYOUT.update(shuffled=shuffled, n=n_rows)
    import polars as pl

    from metaxy_core import DeltaMetadataStore

    if isinstance(root, Path) and root.exists():
        shutil.rmtree(root)
    old, new = graphs()
    store = DeltaMetadataStore(root, options, project=project)
    t0 = time.perf_counter()
    for start in range(0, n_rows, WRITE_CHUNK):
        store.write_metadata(RAW, raw_frame(start, min(n_rows, start + WRITE_CHUNK)), graph=old)
    spec = old.spec(EMB)
    expected = store.expected_provenance(spec, old).select("sample_uid", "metaxy_provenance_by_field")
    for start in range(0, n_rows, WRITE_CHUNK):
        stop = min(n_rows, start + WRITE_CHUNK)
        users = emb_user_frame(start, stop)
        # rows in the order they were produced (ingestion order: ids ascending in the clustered layout)
        chunk = users.lazy().join(expected, on="sample_uid", how="inner", maintain_order="left").collect()
        store.write_metadata(EMB, chunk, graph=old)
    store.push_snapshot(old)
    time.sleep(0.01)
    store.push_snapshot(new)
    _ = pl
    return {"build_s": time.perf_counter() - t0, "old": old.snapshot_version, "new": new.snapshot_version}


def reconcile_migration(old: Any, new: Any, migration_id: str = "20250101_000000_refine_lineage") -> Any:
    from metaxy_core.migrations import DiffMigration

    return DiffMigration(
        migration_id=migration_id,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        parent="initial",
        from_snapshot_version=old.snapshot_version,
        to_snapshot_version=new.snapshot_version,
        ops=[{"type": "metaxy_core.migrations.ops.DataVersionReconciliation"}],
    )


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- harness
def _child(fn: Callable[..., dict[str, Any]], args: tuple, kwargs: dict, queue: Any) -> None:
    try:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs) or {}
        out.setdefault("seconds", time.perf_counter() - t0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["cpu_s"] = usage.ru_utime + usage.ru_stime
        out["peak_rss_mib"] = usage.ru_maxrss / 1024
        queue.put(("ok", out))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))


def run_isolated(
    fn: Callable[..., dict[str, Any]],
    *args: Any,
    timeout: float = 3600,
    code: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``fn(*args, **kwargs)`` in a fresh spawned interpreter; returns its dict + seconds + peak RSS.

    ``code``: a folder holding another ``metaxy_core`` (e.g. ``git archive`` of an earlier commit) that the
    child imports instead of this checkout's, for before/after comparisons in one run.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, kwargs, queue))
    if code is not None:  # a spawned child starts with the parent's sys.path
        sys.path.insert(0, code)
    try:
        proc.start()
    finally:
        if code is not None:
            sys.path.remove(code)
    try:
        status, payload = queue.get(timeout=timeout)
    except Exception:  # noqa: BLE001 - queue.Empty or a broken pipe: the child died
        proc.kill()
        proc.join()
        return {"error": f"no result (exit code {proc.exitcode}; killed by the OOM killer or timed out?)"}
    proc.join()
    if status == "error":
        print(payload, file=sys.stderr)
        return {"error": payload.splitlines()[0]}
    return payload


def fmt_table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [
        title,
        line,
        "| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |",
        line,
    ]
    out += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=False)) + " |" for r in cells[1:]]
    out.append(line)
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine() -> str:
    import platform

    import deltalake
    import polars as pl

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()} {os.cpu_count()} cores, {mem:.0f} GiB RAM, "
        f"Python {platform.python_version()}, "
        f"polars {pl.__version__}, deltalake {deltalake.__version__}"
    )
