"""Bulk appends: a batch of frames as one Delta commit, and a background writer that overlaps it with work.

:func:`append_frames` is the write path of bucketed work (reconciliation writes one commit per bucket): it
writes Parquet files with polars' own writer straight into the table folder (LZ4; on S3 zstd, streamed into a
multipart upload, parts going up while the next ones are encoded, see :mod:`metaxy_core.store.upload`) and
commits them in one Delta transaction with their statistics.
Either way a batch of frames is one atomic commit. :class:`BackgroundWriter` runs one such write at a time
in a thread, so the next bucket is computed while the previous one is written.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from deltalake.exceptions import CommitFailedError

from metaxy_core.store import _io, _storage
from metaxy_core.store._storage import is_remote
from metaxy_core.store.layout import RANGE_TYPES
from metaxy_core.store.orphans import staging_path
from metaxy_core.store.provenance import (
    COMMIT_ORDER,
    COMMIT_ORDER_FACT,
    FEATURE_VERSION,
    ROWS_FACT,
    SNAPSHOT_VERSION,
    WRITE_ID,
    data_version_facts,
)
from metaxy_core.store.upload import upload_pieces

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.store.scope import Fence

#: columns whose statistics the bulk writer records in the Delta log (what reads filter on)
#: commit attempts of a fenced bulk append racing the other writers of its lease (units of one run)
_FENCED_ATTEMPTS = 20
_STAT_COLUMNS = (FEATURE_VERSION, SNAPSHOT_VERSION, WRITE_ID, COMMIT_ORDER)
_STAT_TYPES = (pl.String, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.Date)


def _stat_value(value: Any) -> Any:
    """A statistic as the Delta log's JSON holds it (dates and times as ISO strings)."""
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _file_stats(df: pl.DataFrame, ids: Sequence[str]) -> str:
    """The add action's ``stats``: row count, and min/max/nulls of the columns reads skip files with."""
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in dict.fromkeys([*ids, *_STAT_COLUMNS]):
        if name not in df.columns or df.schema[name] not in _STAT_TYPES:
            continue
        s = df.get_column(name)
        nulls[name] = s.null_count()
        if nulls[name] < df.height:
            mins[name], maxs[name] = _stat_value(s.min()), _stat_value(s.max())
    return json.dumps({"numRecords": df.height, "minValues": mins, "maxValues": maxs, "nullCount": nulls})


def _parquet_writer(
    frame: pl.DataFrame, *, remote: bool, row_group_rows: int | None = None
) -> Callable[[str], None]:
    """Writes ``frame`` as a bulk file at a local path (on S3: the spool file it uploads) with polars' native
    writer, in the codec of :func:`_codec`, row groups of ``row_group_rows`` (None: polars' default,
    262,144); row-group statistics are left out (the Delta log gets the file's statistics; they cost ~12% of
    the write CPU), so readers can skip these files only as wholes: :func:`_id_slices` keeps them small."""
    codec = _codec(remote)
    level = 1 if codec == "zstd" else None
    return lambda path: frame.write_parquet(
        path, compression=codec, compression_level=level, statistics=False, row_group_size=row_group_rows
    )


def _codec(remote: bool) -> Literal["zstd", "lz4"]:
    """The compression of bulk files: zstd level 1 on S3, LZ4 on a local disk.

    Why: on S3 the bytes are the cost (uploaded while the next file is encoded; zstd-1 is half the bytes of
    delta-rs' snappy). Locally the CPU is: six hash strings per row are most of a reconciled row, and zstd-1
    costs ~0.6 CPU-s per 1M rows; LZ4 (Parquet's LZ4_RAW) writes them ~20 % faster (1M reconciled rows: 0.26
    vs 0.32 s wall on 2 cores) and reads them ~35 % faster (0.11 vs 0.16 s), for about the bytes of the
    store's other files (130 MB per 1M rows against 59 MB zstd-1; delta-rs' snappy 117 MB): the same choice
    as ``write_metadata``'s files (see :data:`metaxy_core.store._io.ROW_GROUP_ROWS`).
    """
    return "zstd" if remote else "lz4"


#: rows per file of a local bulk append whose rows are in id order (see :func:`_id_slices`)
FILE_ROWS = 262_144
#: runs in id order a frame may hold and still be cut into files (more: rows not in id order, one file)
_MAX_RUNS = 64


def _id_slices(frame: pl.DataFrame, ids: Sequence[str]) -> list[pl.DataFrame]:
    """``frame`` cut into slices of at most :data:`FILE_ROWS` rows, one file each, when they hold disjoint id
    ranges; else ``[frame]``.

    Why: bulk files carry no row-group statistics, so a reader skips them only as whole files, by their
    Delta-log statistics. A reconciled million-row file was one unit: ``resolve_update`` right after a
    migration could not cut buckets inside it and spilled both inputs (1M rows: 789 MiB instead of 377).
    Files of ``FILE_ROWS`` rows with disjoint id ranges are cut between (``resolve_update``'s buckets are as
    big); the write costs the same CPU. Reconciliation's rows come as a few runs in id order (one per file
    it read): each run is sliced, and the slices are kept when no two overlap. Overlapping files of one
    write would make readers check every sample for repeats: such frames stay one file.
    """
    n = frame.height
    if n <= FILE_ROWS or len(ids) != 1 or ids[0] not in frame.columns:
        return [frame]
    column = frame.get_column(ids[0])
    if column.dtype not in RANGE_TYPES or column.has_nulls():
        return [frame]
    if column.is_sorted():  # one pass, no comparison frame: the usual case (rows paired with sorted upstream)
        runs = [0, n]
    else:
        runs = [0, *((column.slice(1) < column.slice(0, n - 1)).arg_true() + 1).to_list(), n]
    if len(runs) > 2 + _MAX_RUNS:
        return [frame]
    slices = [
        frame.slice(start, min(FILE_ROWS, end - start))
        for begin, end in itertools.pairwise(runs)
        for start in range(begin, end, FILE_ROWS)
    ]
    bounds = sorted((s.get_column(ids[0])[0], s.get_column(ids[0])[-1]) for s in slices)  # each in id order
    if any(hi >= lo for (_, hi), (lo, _) in itertools.pairwise(bounds)):
        return [frame]
    return slices


#: rows per row group of local bulk files: polars encodes the row groups of a file in parallel, and a
#: :data:`FILE_ROWS` file of one (polars' default size) left a core idle (1M rows as 4 files: 0.345 s wall,
#: 0.68 CPU-s with 262,144-row groups, 0.32 s / 0.63 with 65,536, as one file)
_LOCAL_ROW_GROUP_ROWS = 65_536


def _write_local(paths: list[str], frames: list[pl.DataFrame], write_id: str | None) -> list[int]:
    """Writes ``frames`` at local ``paths``, two at a time (see :data:`_LOCAL_ROW_GROUP_ROWS`); returns
    their sizes in bytes.

    Each file is written under its staging name (:func:`~metaxy_core.store.orphans.staging_path`, when the
    rows carry one write id) and renamed once complete: a process killed mid-write leaves a staging file the
    step's re-run removes, never a truncated file under a data file's name that no one can tell is ours.
    """

    def write(path: str, frame: pl.DataFrame) -> int:
        staged = path if write_id is None else staging_path(path, write_id)
        try:
            _parquet_writer(frame, remote=False, row_group_rows=_LOCAL_ROW_GROUP_ROWS)(staged)
            os.replace(staged, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(staged)
            raise
        return os.path.getsize(path)

    if len(paths) == 1:
        return [write(paths[0], frames[0])]
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="metaxy-bulk-file") as pool:
        return list(pool.map(write, paths, frames))


def _single_write_id(frames: Sequence[pl.DataFrame]) -> str | None:
    """The write id that labels a bulk write's staging files: its first row's (a bulk write holds one
    step's rows); None without one. A label only: staging files are never committed, whoever removes them."""
    if not frames or WRITE_ID not in frames[0].columns or not frames[0].height:
        return None
    first = frames[0].get_column(WRITE_ID)[0]
    return None if first is None else str(first)


#: in-memory size of the rows of one file of a bulk append to S3: a bucket of ~1M rows of a typical feature
#: table is a few files, each uploaded while the next is encoded (see :func:`upload_pieces`)
_PIECE_BYTES = 64 * 1024 * 1024


def _pieces(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """``frame`` cut into consecutive slices of about :data:`_PIECE_BYTES` (zero-copy; order kept, so files
    of rows in id order stay in id order, each with its own statistics)."""
    k = max(1, -(-frame.estimated_size() // _PIECE_BYTES))
    rows = -(-frame.height // k)
    return [frame.slice(start, rows) for start in range(0, frame.height, rows)]


def _native_compatible(table: DeltaTable, frame_schema: pl.Schema) -> bool:
    """Whether Parquet written by polars for ``frame_schema`` can be committed as-is to ``table``."""
    try:
        table_schema = pl.Schema(pl.scan_delta(table).collect_schema())
    except (pl.exceptions.PolarsError, OSError, ValueError):  # an unreadable schema: let delta-rs decide
        return False
    if table.metadata().partition_columns:
        return False
    return dict(table_schema) == dict(frame_schema)


def append_frames(
    uri: str,
    frames: Iterable[pl.DataFrame],
    options: Mapping[str, str],
    *,
    ids: Sequence[str] = (),
    fence: Fence | None = None,
) -> int:
    """Append ``frames`` to the Delta table at ``uri`` in one commit; returns the rows written.

    The rows are *derived* rows: they already carry their commit order (``2·R+1``, see
    :mod:`metaxy_core.store.order`), so the commit may land at any version. ``fence`` (the lease of the
    migration step that writes them; commits from a background thread do not see the caller's context) is
    checked before the commit and carried by it.

    Tables whose schema matches get Parquet files written by polars (LZ4, on S3 zstd; uploaded with the
    store's S3 client on S3) plus one ``create_write_transaction``; anything else goes through delta-rs
    (``schema_mode="merge"``). A failure
    before the commit leaves no visible rows (stray files are removed, or left to ``vacuum``).
    """
    frames = [f for f in frames if f.height]
    if not frames:
        return 0
    if COMMIT_ORDER not in frames[0].columns or frames[0].get_column(COMMIT_ORDER).has_nulls():
        raise ValueError(f"bulk rows for {uri} must carry their {COMMIT_ORDER} (rows derived from a read)")
    total = sum(f.height for f in frames)
    if fence is not None and not fence.guards(uri):
        fence = None
    facts = data_version_facts(frames)
    if facts:  # which rows the facts are about (derived rows: their commit order is not the version)
        order = frames[0].get_column(COMMIT_ORDER)
        if all(f.get_column(COMMIT_ORDER).n_unique() == 1 for f in frames) and order.n_unique() == 1:
            facts.update({COMMIT_ORDER_FACT: str(order[0]), ROWS_FACT: str(total)})
    table = _io.open_table(uri, options, for_commit=True)
    _io.clean_leftovers(uri, options, table, frames[0], fence)  # a re-run: what a failed attempt left
    if table is None or not _native_compatible(table, frames[0].schema):
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed", rechunk=False)
        _io.append(uri, frame, options, derived=True, fence=fence, custom_metadata=facts)
        return total
    from deltalake.transaction import AddAction

    remote = is_remote(uri)
    written: list[str] = []
    actions = []
    with _io.guard("write to", uri, options):
        try:
            files: list[tuple[str, pl.DataFrame]] = []  # (file name, its rows)
            for frame in frames:
                if dict(frame.schema) != dict(frames[0].schema):
                    frame = frame.select(frames[0].columns).cast(dict(frames[0].schema))  # type: ignore[arg-type]
                for piece in _pieces(frame) if remote else _id_slices(frame, ids):
                    files.append((f"part-00000-{uuid.uuid4()}-c000.{_codec(remote)}.parquet", piece))
            # Statistics for skipping files go to the Delta log (below); row-group statistics cost ~12% of
            # the write CPU (see _parquet_writer), so they are left out.
            if remote:  # zstd (half delta-rs' snappy bytes); a piece goes up while the next is encoded
                paths = [f"{uri.rstrip('/')}/{name}" for name, _ in files]
                written.extend(paths)
                writers = [
                    (path, _parquet_writer(rows, remote=True))
                    for path, (_, rows) in zip(paths, files, strict=True)
                ]
                sizes = upload_pieces(writers, options, timed_out=_io.timed_out)
            else:
                paths = [os.path.join(uri, name) for name, _ in files]
                written.extend(paths)
                sizes = _write_local(paths, [rows for _, rows in files], _single_write_id(frames))
            for (name, rows), size in zip(files, sizes, strict=True):
                actions.append(
                    AddAction(
                        path=name,
                        size=size,
                        partition_values={},
                        modification_time=int(time.time() * 1000),
                        data_change=True,
                        stats=_file_stats(rows, ids),
                    )
                )
            for attempt in range(1, _FENCED_ATTEMPTS + 1):
                try:
                    table.create_write_transaction(
                        actions,
                        mode="append",
                        schema=table.schema(),
                        commit_properties=_io.fenced_properties(fence, table, facts),
                    )
                    _io.keep_for_commit(uri, options, table)  # the next bucket's commit updates it
                    break
                except CommitFailedError:
                    if fence is None:
                        raise
                    # A newer lease wrote the table meanwhile: say so, not "commit failed". Otherwise a
                    # sibling writer of the same lease (another unit of this run) committed first: Delta
                    # refuses concurrent commits carrying the same app transaction, so commit the files
                    # again on the table as it now is (derived rows may land at any version).
                    latest = _io.open_table(uri, options, for_commit=True)
                    fence.check(None if latest is None else latest.transaction_version(fence.app_id))
                    if latest is None or attempt == _FENCED_ATTEMPTS:
                        raise
                    table = latest
                    time.sleep(random.uniform(0.0, min(1.0, 0.02 * 2**attempt)))
        except BaseException as exc:
            # Best effort: what stays is unreferenced, removed by the step's re-run (store/orphans.py) or a
            # vacuum. Not after a timeout: the endpoint is stalled, a delete would wait a full timeout again.
            for path in [] if _io.timed_out(exc) else written:
                with contextlib.suppress(Exception):
                    _storage.delete_path(path, options)
            raise
    return total


class BackgroundWriter:
    """One write at a time in a background thread; ``finish`` waits for it and reports its commit.

    ``on_commit`` receives the rows of every write that committed, in order. Holding at most one write in
    flight while the caller computes the next batch keeps memory at two batches.
    """

    def __init__(self, on_commit: Callable[[int], None]) -> None:
        self._on_commit = on_commit
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: concurrent.futures.Future[int] | None = None

    def start(self, fn: Callable[..., int], *args: Any, **kwargs: Any) -> None:
        """Run ``fn(*args, **kwargs)`` (a write returning its row count) once the previous one finished."""
        assert self._pending is None
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metaxy-writer")
        self._pending = self._pool.submit(fn, *args, **kwargs)

    def finish(self) -> None:
        """Wait for the running write (its error propagates) and report its commit."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        self._on_commit(pending.result())

    def close(self) -> None:
        """Wait for a write still running (an error elsewhere is propagating: do not mask it)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            concurrent.futures.wait([pending])
            if pending.exception() is None:  # it committed: report it (the caller's error still propagates)
                with contextlib.suppress(Exception):
                    self._on_commit(pending.result())
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
