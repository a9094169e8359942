"""Bounded-memory processing of large feature tables: hash buckets of the samples, and a fast bulk append.

Work that joins whole feature tables on their id columns (reconciliation, ``resolve_update``) needs hash tables
whose size grows with the number of samples; at tens of millions of rows that no longer fits. Large inputs are
therefore split into ``K`` *buckets* of samples, ``bucket = xxh3_64(id columns) % K``, with ``K`` chosen from
the table size (``rows / partition_rows``, read from the Delta log's statistics, not from the data). Every input
is spilled once, in one streaming pass, into per-bucket Parquet files in a local temporary folder; each bucket
is then processed on its own with the in-memory engine and its result appended in one Delta commit. Peak memory
follows ``partition_rows``, not the table size, and each input is read from the store exactly once.

Small inputs (``K == 1``) skip the spill and run as a single query.

:func:`append_frames` is the bulk write path: on a local store it writes Parquet files with polars' own
(multi-threaded) writer straight into the table folder and commits them in one Delta transaction with their
statistics; elsewhere (S3) it uses delta-rs. Either way a batch of frames is one atomic commit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import itertools
import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import polars as pl
from polars.io.plugins import register_io_source

from metaxy_core._process import current_pid, hostname, pid_alive
from metaxy_core.store import _io
from metaxy_core.store._storage import is_remote
from metaxy_core.store.provenance import (
    CREATED_AT,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    SNAPSHOT_VERSION,
    SYSTEM_COLUMNS,
    WRITE_ID,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.graph.graph import FeatureGraph
    from metaxy_core.graph.keys import FeatureKey
    from metaxy_core.graph.spec import FeatureSpec
    from metaxy_core.store.base import Increment
    from metaxy_core.store.delta import DeltaMetadataStore

#: rows per bucket when nothing else is configured (about 0.6 GiB of working memory for a typical table)
DEFAULT_PARTITION_ROWS = 1_000_000
#: environment variable naming the folder for spill files (default: the system temporary folder)
SPILL_DIR_ENV = "METAXY_SPILL_DIR"
BUCKET = "__metaxy_bucket"
#: columns whose statistics the bulk writer records in the Delta log (what reads filter on)
_STAT_COLUMNS = (FEATURE_VERSION, SNAPSHOT_VERSION, WRITE_ID)
_STAT_TYPES = (pl.String, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.Date)


# ----------------------------------------------------------------------------- buckets
def id_hash(ids: Sequence[str], schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """Stable 64-bit hash of the id columns (XXH3-64 via polars-hash; identical across versions/processes)."""
    import polars_hash  # noqa: F401  (registers .nchash)

    if len(ids) == 1 and schema.get(ids[0]) == pl.String:
        key = pl.col(ids[0])
    else:
        key = pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in ids], separator="\x1f")
    return key.nchash.xxh3_64()  # type: ignore[attr-defined]


def bucket_of(ids: Sequence[str], schema: Mapping[str, pl.DataType], k: int) -> pl.Expr:
    return (id_hash(ids, schema) % k).fill_null(0).cast(pl.UInt32)


MAX_BUCKETS = 4096


def buckets_for(rows: int, partition_rows: int) -> int:
    """How many buckets keep each one under ``partition_rows`` rows (at most :data:`MAX_BUCKETS`)."""
    return min(MAX_BUCKETS, max(1, math.ceil(rows / max(1, partition_rows))))


@dataclass(frozen=True)
class Layout:
    """What the Delta log's file statistics say about the rows of one feature version in a table.

    ``ranges`` has one row per data file that may hold the version: ``lo``/``hi`` (the first id column's
    min/max) and ``n`` (rows); it is ``None`` when those statistics are unusable (several id columns, a type
    without order, missing or possibly truncated statistics). ``single_writes`` says every file holds the
    rows of one write (its ``metaxy_write_id`` statistics have min == max); compaction merges writes.
    """

    rows: int
    ranges: pl.DataFrame | None = None
    single_writes: bool = False

    @property
    def may_repeat(self) -> bool:
        """Whether a sample can have several rows.

        A write never repeats a sample, so files that each hold one write and whose id ranges do not overlap
        cannot either; anything else (overlaps, compacted files, missing statistics) may.
        """
        if self.ranges is None or not self.single_writes:
            return True
        if self.ranges.height <= 1:
            return False
        r = self.ranges.sort("lo")
        return bool(r.select((pl.col("lo").slice(1) <= pl.col("hi").slice(0, r.height - 1)).any()).item())

    def read_rows(self, boundaries: pl.Series) -> int:
        """Rows read when each of the ranges cut at ``boundaries`` is read with file skipping."""
        if self.ranges is None:
            return -1
        edges = [None, *boundaries.to_list(), None]
        total = 0
        for lo, hi in itertools.pairwise(edges):
            keep = pl.lit(True)
            if lo is not None:
                keep = keep & (pl.col("hi") >= lo)
            if hi is not None:
                keep = keep & (pl.col("lo") < hi)
            total += int(self.ranges.filter(keep).select(pl.col("n").sum()).item() or 0)
        return total


_RANGE_TYPES = (pl.String, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
#: string statistics this long may have been truncated by the writer; do not reason with them
_MAX_STAT_CHARS = 31


def layout(
    table: DeltaTable | None,
    ids: Sequence[str],
    schema: Mapping[str, pl.DataType],
    feature_version: str | None,
) -> Layout:
    """File statistics of the rows of ``feature_version`` (all rows when None) in ``table``; metadata only."""
    if table is None:
        return Layout(0, pl.DataFrame(schema={"lo": pl.String, "hi": pl.String, "n": pl.Int64}))
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.height == 0 or "num_records" not in actions.columns:
        return Layout(0, None) if actions.height == 0 else Layout(1 << 62, None)
    if feature_version is not None:
        lo, hi = f"min.{FEATURE_VERSION}", f"max.{FEATURE_VERSION}"
        if lo in actions.columns and hi in actions.columns:
            keep = (
                pl.col(lo).is_null()
                | pl.col(hi).is_null()
                | ((pl.col(lo) <= feature_version) & (pl.col(hi) >= feature_version))
            )
            actions = actions.filter(keep)
    if actions.select(pl.col("num_records").is_null().any()).item():
        return Layout(1 << 62, None)
    rows = int(actions.select(pl.col("num_records").sum()).item() or 0)
    first = ids[0]
    lo_col, hi_col = f"min.{first}", f"max.{first}"
    if (
        len(ids) != 1
        or schema.get(first) not in _RANGE_TYPES
        or lo_col not in actions.columns
        or hi_col not in actions.columns
    ):
        return Layout(rows, None)
    ranges = actions.select(
        pl.col(lo_col).alias("lo"),
        pl.col(hi_col).alias("hi"),
        pl.col("num_records").cast(pl.Int64).alias("n"),
    ).filter(pl.col("n") > 0)
    if ranges.select(pl.any_horizontal(pl.col("lo").is_null().any(), pl.col("hi").is_null().any())).item():
        return Layout(rows, None)
    if ranges.schema["lo"] == pl.String and ranges.height:
        longest = ranges.select(
            pl.max_horizontal(pl.col("lo").str.len_chars().max(), pl.col("hi").str.len_chars().max())
        )
        if (longest.item() or 0) >= _MAX_STAT_CHARS:
            return Layout(rows, None)
    wlo, whi = f"min.{WRITE_ID}", f"max.{WRITE_ID}"
    single = (
        wlo in actions.columns
        and whi in actions.columns
        and bool(
            actions.filter(pl.col("num_records") > 0)
            .select((pl.col(wlo).is_not_null() & (pl.col(wlo) == pl.col(whi))).all())
            .item()
        )
    )
    return Layout(rows, ranges, single)


def estimate_rows(table: DeltaTable | None, *, feature_version: str | None = None) -> int:
    """Rows stored in ``table`` (optionally: in files that may hold ``feature_version``), from the Delta log."""
    return layout(table, ["__none__"], {}, feature_version).rows


@dataclass(frozen=True)
class Partitioning:
    """How samples are split into ``k`` buckets: one bucket, ranges of the first id column, or id hashes."""

    k: int
    ids: tuple[str, ...]
    boundaries: pl.Series | None = None  # range mode: bucket b holds boundaries[b-1] <= id < boundaries[b]

    @property
    def mode(self) -> str:
        return "single" if self.k == 1 else ("range" if self.boundaries is not None else "hash")

    def key(self, schema: Mapping[str, pl.DataType]) -> pl.Expr:
        """The bucket index of a row."""
        if self.boundaries is not None:
            return (
                pl.lit(self.boundaries)
                .search_sorted(pl.col(self.ids[0]), side="right")
                .fill_null(0)
                .cast(pl.UInt32)
            )
        return bucket_of(self.ids, schema, self.k)

    def predicate(self, b: int) -> pl.Expr:
        """Range mode: a filter on the id column that file statistics can skip files with."""
        assert self.boundaries is not None
        col, edges = pl.col(self.ids[0]), self.boundaries.to_list()
        keep = pl.lit(True)
        if b > 0:
            keep = keep & (col >= edges[b - 1])
        if b < len(edges):
            keep = keep & (col < edges[b])
        return keep


def plan(old: Layout, ids: Sequence[str], partition_rows: int) -> Partitioning:
    """Buckets for a table whose rows of interest are described by ``old``.

    When the files do not overlap on the first id column (tables written in id order, compacted with z-order,
    or produced by an earlier reconciliation), buckets are ranges cut between files: each bucket then reads only
    its own files and its output stays clustered. Otherwise buckets are id hashes and inputs are spilled.
    """
    k = buckets_for(old.rows, partition_rows)
    if k == 1:
        return Partitioning(1, tuple(ids))
    if old.ranges is not None and old.ranges.height > 1:
        # Clusters of files whose id ranges overlap (e.g. the files of one write); cuts fall between clusters.
        clusters: list[list[Any]] = []
        for lo, hi, n in old.ranges.sort("lo").iter_rows():
            if clusters and lo <= clusters[-1][1]:
                clusters[-1][1] = max(clusters[-1][1], hi)
                clusters[-1][2] += n
            else:
                clusters.append([lo, hi, n])
        target = max(1, old.rows // k)
        cuts: list[Any] = []
        sizes = [0]
        for lo, _, n in clusters:
            if sizes[-1] >= target:
                cuts.append(lo)
                sizes.append(0)
            sizes[-1] += n
        if cuts and max(sizes) <= 2 * partition_rows:
            return Partitioning(
                len(cuts) + 1, tuple(ids), pl.Series("boundaries", cuts, dtype=old.ranges.schema["lo"])
            )
    return Partitioning(k, tuple(ids))


def spill_root() -> str:
    return os.environ.get(SPILL_DIR_ENV) or tempfile.gettempdir()


def _spill_prefix(pid: int | None = None) -> str:
    return f"metaxy-buckets-{current_pid() if pid is None else pid}@{hostname()}-"


def remove_stale_spills(root: str) -> list[str]:
    """Delete spill folders left by processes of this host that died without cleaning up (SIGKILL, OOM kill):
    a crashed reconciliation must not leave gigabytes behind in the temporary folder on every attempt."""
    removed = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        pid = name.removeprefix("metaxy-buckets-").split("@", 1)[0]
        if name.startswith("metaxy-buckets-") and pid.isdigit() and name.startswith(_spill_prefix(int(pid))):
            if int(pid) != current_pid() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(name)
    return removed


class Buckets:
    """Inputs split into the buckets of a :class:`Partitioning`; use as a context manager (spills are removed).

    An input is read directly, one bucket at a time, when that is cheap: always with a single bucket, and in
    range mode when its files are clustered on the id column (each bucket's filter skips the other files).
    Otherwise it is sunk once, streaming, into per-bucket Parquet files in a local temporary folder.
    """

    def __init__(self, partitioning: Partitioning, *, directory: str | None = None) -> None:
        self.partitioning = partitioning
        self._root = directory
        self._dir: str | None = None
        self._direct: dict[str, pl.LazyFrame] = {}
        self._schemas: dict[str, pl.Schema] = {}
        self.spilled: list[str] = []

    @property
    def k(self) -> int:
        return self.partitioning.k

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def add(
        self, name: str, lf: pl.LazyFrame, where: Layout | None = None, *, max_amplification: float = 1.5
    ) -> None:
        """Register an input holding the id columns; ``where`` describes its files (for direct range reads)."""
        schema = lf.collect_schema()
        self._schemas[name] = schema
        part = self.partitioning
        if part.k == 1:
            self._direct[name] = lf
            return
        clustered = part.boundaries is not None and where is not None and where.ranges is not None
        if clustered and (
            where.rows == 0 or where.read_rows(part.boundaries) <= max_amplification * where.rows
        ):
            self._direct[name] = lf
            return
        if self._dir is None:
            root = self._root or spill_root()
            os.makedirs(root, exist_ok=True)
            remove_stale_spills(root)
            self._dir = tempfile.mkdtemp(
                prefix=_spill_prefix(), dir=root
            )  # pid and host: see remove_stale_spills
        lf.with_columns(part.key(schema).alias(BUCKET)).sink_parquet(
            pl.PartitionBy(os.path.join(self._dir, name), key=BUCKET, include_key=False),
            compression="uncompressed",  # hash strings hardly compress: lz4 cost ~40% more spill CPU for little
            statistics=False,
            mkdir=True,
        )
        self.spilled.append(name)

    def get(self, name: str, b: int) -> pl.LazyFrame:
        """Bucket ``b`` of input ``name`` (an empty frame with the input's schema if the bucket is empty)."""
        part = self.partitioning
        if name in self._direct:
            lf = self._direct[name]
            return lf if part.k == 1 else lf.filter(part.predicate(b))
        assert self._dir is not None
        folder = os.path.join(self._dir, name, f"{BUCKET}={b}")
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder)) if os.path.isdir(folder) else []
        if not files:
            return pl.LazyFrame(schema=self._schemas[name])
        return pl.scan_parquet(files, schema=self._schemas[name])


# ------------------------------------------------------------------------ latest rows
def newest_rows(df: pl.DataFrame, ids: Sequence[str]) -> pl.DataFrame:
    """The newest row (by ``metaxy_created_at``) of every sample of an in-memory frame.

    Write batches never repeat a sample, so most frames hold one row per sample: a single grouping finds the
    few repeated samples, and only their rows are sorted (ties on the timestamp keep one row).
    """
    if df.height == 0:
        return df
    ids = list(ids)
    repeated = (
        df.lazy().group_by(ids).agg(pl.len().alias("__n")).filter(pl.col("__n") > 1).drop("__n").collect()
    )
    if repeated.height == 0:
        return df
    single = df.lazy().join(repeated.lazy(), on=ids, how="anti", nulls_equal=True)
    newest = (
        df.lazy()
        .join(repeated.lazy(), on=ids, how="semi", nulls_equal=True)
        .sort(CREATED_AT, nulls_last=False)
        .unique(subset=ids, keep="last", maintain_order=False)
    )
    return pl.concat([single, newest]).collect()


# ------------------------------------------------------------------------- bulk writes
def _stat_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _file_stats(df: pl.DataFrame, ids: Sequence[str]) -> str:
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
) -> int:
    """Append ``frames`` to the Delta table at ``uri`` in one commit; returns the rows written.

    Local tables whose schema matches get Parquet files written by polars (zstd, multi-threaded) plus one
    ``create_write_transaction``; anything else goes through delta-rs (``schema_mode="merge"``). A failure
    before the commit leaves no visible rows (stray files are removed, or left to ``vacuum``).
    """
    frames = [f for f in frames if f.height]
    if not frames:
        return 0
    total = sum(f.height for f in frames)
    table = _io.open_table(uri, options)
    if table is None or is_remote(uri) or not _native_compatible(table, frames[0].schema):
        if len(frames) == 1:
            _io.append(uri, frames[0], options)
        else:
            _io.append(uri, pl.concat(frames, how="vertical_relaxed", rechunk=False), options)
        return total
    from deltalake.transaction import AddAction

    written: list[str] = []
    actions = []
    with _io.guard("write to", uri, options):
        try:
            for frame in frames:
                if dict(frame.schema) != dict(frames[0].schema):
                    frame = frame.select(frames[0].columns).cast(dict(frames[0].schema))  # type: ignore[arg-type]
                name = f"part-00000-{uuid.uuid4()}-c000.zstd.parquet"
                path = os.path.join(uri, name)
                # Statistics for skipping files go to the Delta log (below); row-group statistics cost ~15%
                # of the write and bulk files are bucket-sized, so they are left out.
                frame.write_parquet(path, compression="zstd", compression_level=1, statistics=False)
                written.append(path)
                actions.append(
                    AddAction(
                        path=name,
                        size=os.path.getsize(path),
                        partition_values={},
                        modification_time=int(time.time() * 1000),
                        data_change=True,
                        stats=_file_stats(frame, ids),
                    )
                )
            table.create_write_transaction(actions, mode="append", schema=table.schema())
        except BaseException:
            for path in written:
                try:
                    os.remove(path)
                except OSError:
                    pass
            raise
    return total


# ----------------------------------------------------------------------- reconciliation
@dataclass
class CarryOverResult:
    rows: int = 0
    missing: int = 0
    buckets: int = 1
    mode: str = "single"
    spilled: list[str] = field(default_factory=list)
    commits: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(result: CarryOverResult, name: str) -> Iterator[None]:
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        result.timings[name] = result.timings.get(name, 0.0) + time.perf_counter() - start
        result.timings[f"{name}_cpu"] = result.timings.get(f"{name}_cpu", 0.0) + time.process_time() - cpu


def carry_over(
    store: DeltaMetadataStore,
    spec: FeatureSpec,
    *,
    old_graph: FeatureGraph,
    new_graph: FeatureGraph,
    write_id: str | None,
    snapshot_version: str,
    dry_run: bool = False,
    partition_rows: int = DEFAULT_PARTITION_ROWS,
    on_commit: Callable[[int], None] | None = None,
) -> CarryOverResult:
    """Reconcile one downstream feature: carry its rows at the old version over to the new version.

    Bucket by bucket: the newest row of every sample at the old version that has no row at the new version
    yet keeps its user columns, gets its provenance recomputed from the upstream features' current data
    versions, is stamped with the new versions and appended (one commit per bucket). Re-running skips samples
    already carried, so an interrupted run resumes without duplicates. In a dry run nothing is written and
    ``rows`` is what would be. ``on_commit`` is called with the row count of every commit.
    """
    key = spec.key
    ids = list(spec.id_columns)
    old_version, new_version = old_graph.feature_version(key), new_graph.feature_version(key)
    uri = store.table_uri(key)
    result = CarryOverResult()
    table = _io.open_table(uri, store.storage_options)
    scan = store._scan_feature(key)
    if table is None or scan is None:
        return result
    schema = scan.collect_schema()
    keep = [c for c in schema if c not in (PROVENANCE_BY_FIELD, SNAPSHOT_VERSION, WRITE_ID, FEATURE_VERSION)]
    # The stored data-version struct only matters for custom data versions: null it for default ones, so
    # that a spill of the old rows (hash buckets) writes and reads a fraction of it.
    dvbf = pl.col(DATA_VERSION_BY_FIELD)
    old_rows = (
        scan.filter(pl.col(FEATURE_VERSION) == old_version)
        .select(keep)
        .with_columns(
            pl.when(pl.col(DATA_VERSION) == pl.col(PROVENANCE))
            .then(pl.lit(None, dtype=schema[DATA_VERSION_BY_FIELD]))
            .otherwise(dvbf)
            .alias(DATA_VERSION_BY_FIELD)
        )
    )
    inputs: list[tuple[str, pl.LazyFrame, Layout]] = [
        ("old", old_rows, layout(table, ids, schema, old_version)),
        (
            "done",
            scan.filter(pl.col(FEATURE_VERSION) == new_version).select(ids),
            layout(table, ids, schema, new_version),
        ),
    ]
    for i, dep in enumerate(spec.deps):
        up_spec = new_graph.spec(dep.feature)
        up_uri = store.table_uri(up_spec.key)
        up_table = _io.open_table(up_uri, store.storage_options)
        up_scan = store._scan_feature(up_spec.key)
        if up_table is None or up_scan is None:
            from metaxy_core.store.delta import MetadataNotFoundError

            raise MetadataNotFoundError(
                f"feature {key} depends on {dep.feature}, which has no metadata in {store.root_uri}; "
                f"write {dep.feature} first"
            )
        up_version = new_graph.feature_version(up_spec.key)
        inputs.append(
            (
                f"up{i}",
                up_scan.filter(pl.col(FEATURE_VERSION) == up_version).select(
                    [*ids, DATA_VERSION_BY_FIELD, CREATED_AT]
                ),
                layout(up_table, ids, up_scan.collect_schema(), up_version),
            )
        )
    partitioning = plan(inputs[0][2], ids, partition_rows)
    result.buckets, result.mode = partitioning.k, partitioning.mode
    repeats = {name: where.may_repeat for name, _, where in inputs}
    lean = _lean_stamp_ok(schema, spec)

    writer = _BackgroundWriter(result, on_commit)
    with Buckets(partitioning) as buckets, contextlib.closing(writer):
        with _timed(result, "spill"):
            for name, lf, where in inputs:
                buckets.add(name, lf, where)
        result.spilled = list(buckets.spilled)
        for b in range(partitioning.k):
            with _timed(result, "read"):
                # The stored data-version struct is only needed for custom data versions; most rows have the
                # default one (equal to the provenance), so read it only for buckets that have others.
                old_rows = buckets.get("old", b)
                todo = old_rows.drop(DATA_VERSION_BY_FIELD).collect()
                dv = todo.get_column(DATA_VERSION)
                if not lean or dv.has_nulls() or not (dv == todo.get_column(PROVENANCE)).all():
                    todo = old_rows.collect()
                if repeats["old"]:
                    todo = newest_rows(todo, ids)
                if todo.height and inputs[1][2].rows:
                    done_ids = buckets.get("done", b).collect()
                    if done_ids.height:
                        todo = todo.join(done_ids, on=ids, how="anti", nulls_equal=True)
                if todo.height == 0:
                    continue
                ups = {}
                for i, dep in enumerate(spec.deps):
                    frame = buckets.get(f"up{i}", b).collect()
                    if repeats[f"up{i}"]:
                        frame = newest_rows(frame, ids)
                    ups[dep.feature] = frame.drop(CREATED_AT).lazy()
            with _timed(result, "compute"):
                expected = store.expected_provenance(spec, new_graph, upstream=ups).rename(
                    {PROVENANCE_BY_FIELD: "__new_pbf", PROVENANCE: "__new_prov"}
                )
                # Upstream rows are one per sample, so the inner join keeps each sample at most once and the
                # samples without upstream rows are the difference.
                carried = todo.lazy().join(expected, on=ids, how="inner", nulls_equal=True)
                if dry_run:
                    rows = carried.select(pl.len()).collect().item()
                    result.rows += rows
                    result.missing += todo.height - rows
                    continue
                if lean and not todo.get_column(DATA_VERSION).has_nulls():
                    stamped = _stamp_carried(carried, spec, new_graph, write_id, snapshot_version, schema)
                else:
                    stamped = store.stamp(
                        _carry_columns(carried),
                        spec,
                        new_graph,
                        write_id=write_id,
                        snapshot_version=snapshot_version,
                    )
                out = stamped.collect()
                result.missing += todo.height - out.height
                del todo, carried, ups, expected
            with _timed(result, "write"):
                # The previous bucket's write overlaps this bucket's reads and joins (both release the GIL):
                # at most one bucket being written and one being computed, so memory stays at two buckets.
                writer.finish()
                writer.start(append_frames, uri, [out], store.storage_options, ids=ids)
            del out
        with _timed(result, "write"):
            writer.finish()
    return result


class _BackgroundWriter:
    """One write at a time in a background thread; ``finish`` waits for it and accounts for its commit."""

    def __init__(self, result: CarryOverResult, on_commit: Callable[[int], None] | None) -> None:
        self._result = result
        self._on_commit = on_commit
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: concurrent.futures.Future[int] | None = None

    def start(self, fn: Callable[..., int], *args: Any, **kwargs: Any) -> None:
        assert self._pending is None
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metaxy-writer")
        self._pending = self._pool.submit(fn, *args, **kwargs)

    def finish(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        written = pending.result()
        self._result.rows += written
        self._result.commits += 1
        if self._on_commit is not None:
            self._on_commit(written)

    def close(self) -> None:
        """Wait for a write still running (an error elsewhere is propagating: do not mask it)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            concurrent.futures.wait([pending])
            if pending.exception() is None:  # it committed: count it (the caller's error still propagates)
                self._result.rows += pending.result()
                self._result.commits += 1
                if self._on_commit is not None:
                    with contextlib.suppress(Exception):
                        self._on_commit(pending.result())
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def _default_dv() -> pl.Expr:
    """Rows whose data version is the default one (the provenance): it follows the new provenance."""
    return pl.col(DATA_VERSION) == pl.col(PROVENANCE)


def _carry_columns(joined: pl.LazyFrame) -> pl.LazyFrame:
    """Generic carry-over for :meth:`DeltaMetadataStore.stamp`: custom data versions survive."""
    default = _default_dv()
    return (
        joined.with_columns(
            pl.when(default)
            .then(pl.col("__new_pbf"))
            .otherwise(pl.col(DATA_VERSION_BY_FIELD))
            .alias(DATA_VERSION_BY_FIELD),
            pl.when(default)
            .then(pl.lit(None, dtype=pl.String))
            .otherwise(pl.col(DATA_VERSION))
            .alias(DATA_VERSION),
        )
        .drop(PROVENANCE, CREATED_AT, "__new_prov")
        .rename({"__new_pbf": PROVENANCE_BY_FIELD})
    )


def _lean_stamp_ok(schema: Mapping[str, pl.DataType], spec: FeatureSpec) -> bool:
    """The stored data-version struct has exactly the new fields, so no field needs re-deriving."""
    dvbf = schema.get(DATA_VERSION_BY_FIELD)
    return isinstance(dvbf, pl.Struct) and [f.name for f in dvbf.fields] == spec.field_names


def _stamp_carried(
    joined: pl.LazyFrame,
    spec: FeatureSpec,
    graph: FeatureGraph,
    write_id: str | None,
    snapshot_version: str,
    schema: Mapping[str, pl.DataType],
) -> pl.LazyFrame:
    """What ``_carry_columns`` + ``stamp`` produce, reusing the provenance hashes computed for the join.

    Default data versions become the new provenance (struct and combined hash alike); custom ones are kept,
    with fields missing from them filled from the new provenance, exactly as ``stamp`` derives them.
    """
    ids = list(spec.id_columns)
    fields = spec.field_names
    default = _default_dv()
    new_pbf, old_dv = pl.col("__new_pbf"), pl.col(DATA_VERSION_BY_FIELD)
    if DATA_VERSION_BY_FIELD in joined.collect_schema():
        custom_dvbf = pl.struct(
            [pl.coalesce(old_dv.struct.field(f), new_pbf.struct.field(f)).alias(f) for f in fields]
        )
        dvbf = pl.when(default).then(new_pbf).otherwise(custom_dvbf)
        dv = pl.when(default).then(pl.col("__new_prov")).otherwise(pl.col(DATA_VERSION))
    else:  # the caller checked: every row has the default data version
        dvbf, dv = new_pbf, pl.col("__new_prov")
    stamped = joined.with_columns(
        pl.col("__new_prov").alias(PROVENANCE),
        dvbf.alias(DATA_VERSION_BY_FIELD),
        dv.alias(DATA_VERSION),
        pl.lit(graph.feature_version(spec.key)).alias(FEATURE_VERSION),
        pl.lit(snapshot_version).alias(SNAPSHOT_VERSION),
        pl.lit(datetime.now(UTC), dtype=pl.Datetime("us", "UTC")).alias(CREATED_AT),
        pl.lit(write_id or uuid.uuid4().hex).alias(WRITE_ID),
    ).rename({"__new_pbf": PROVENANCE_BY_FIELD})
    system = set(SYSTEM_COLUMNS)
    user = [c for c in schema if c not in ids and c not in system]
    return stamped.select([*ids, *user, *SYSTEM_COLUMNS])


# ---------------------------------------------------------------------------- resolve_update
#: one bucket in memory at a time, even when polars pulls several frames at once (``pl.collect_all``)
_BUCKET_LOCK = threading.Lock()


def bucketed_increment(
    store: DeltaMetadataStore,
    spec: FeatureSpec,
    graph: FeatureGraph,
    samples: pl.DataFrame | pl.LazyFrame | None,
) -> Increment | None:
    """``resolve_update`` for large inputs, or None when they are small enough for a single query.

    Each of ``added``/``changed``/``removed`` is a lazy frame backed by a Python IO source: collecting (or
    sinking, counting...) it computes the increment one bucket of samples at a time with the regular
    single-query code on that bucket's rows, so memory follows the bucket size, never the table size.
    Projections, filters and ``head`` pushed down by polars are applied per bucket.
    """
    from metaxy_core.store.base import Increment

    ids = list(spec.id_columns)
    inputs: list[tuple[str, FeatureKey | None, pl.LazyFrame, Layout | None]] = []
    table = _io.open_table(store.table_uri(spec.key), store.storage_options)
    scan = store._scan_feature(spec.key) if table is not None else None
    if scan is not None:
        narrow = [*ids, PROVENANCE_BY_FIELD, PROVENANCE, FEATURE_VERSION, CREATED_AT]
        schema = scan.collect_schema()
        inputs.append(("stored", spec.key, scan.select(narrow), layout(table, ids, schema, None)))
    for i, dep in enumerate(spec.deps):
        up_spec = graph.spec(dep.feature)
        up_table = _io.open_table(store.table_uri(up_spec.key), store.storage_options)
        up_scan = store._scan_feature(up_spec.key) if up_table is not None else None
        if up_scan is None:
            return None  # the regular path raises the helpful "write the upstream first" error
        version = graph.feature_version(up_spec.key)
        up_schema = up_scan.collect_schema()
        inputs.append(
            (
                f"up{i}",
                up_spec.key,
                up_scan.select([*ids, DATA_VERSION_BY_FIELD, FEATURE_VERSION, CREATED_AT]),
                layout(up_table, ids, up_schema, version),
            )
        )
    sample_rows = samples.height if isinstance(samples, pl.DataFrame) else 0
    sizes = [where.rows for _, _, _, where in inputs if where is not None] + [sample_rows]
    if max(sizes) <= store.partition_rows:
        return None
    if samples is not None:
        inputs.append(("samples", None, samples.lazy(), None))
    biggest = max((where for _, _, _, where in inputs if where is not None), key=lambda w: w.rows)
    partitioning = plan(biggest, ids, max(1, store.partition_rows // 2))
    if partitioning.k == 1:
        return None

    def view_for(frames: Mapping[str, pl.LazyFrame]) -> tuple[DeltaMetadataStore, pl.LazyFrame | None]:
        view = copy.copy(store)
        view._scan_overrides = {key: frames[name] for name, key, _, _ in inputs if key is not None}
        return view, frames.get("samples")

    # Output schemas, from the regular plan over empty inputs (nothing is read).
    view, empty_samples = view_for({name: lf.head(0) for name, _, lf, _ in inputs})
    template = view.resolve_update(spec.key, samples=empty_samples, graph=graph)

    shared = _SharedSpill(partitioning, inputs)

    def frame(which: str) -> pl.LazyFrame:
        def source(
            with_columns: list[str] | None,
            predicate: pl.Expr | None,
            n_rows: int | None,
            batch_size: int | None,
        ) -> Iterator[pl.DataFrame]:
            produced = 0
            with _BUCKET_LOCK:
                buckets = shared.buckets()
            for b in range(partitioning.k):
                with _BUCKET_LOCK:
                    bucket_view, bucket_samples = view_for(
                        {name: buckets.get(name, b) for name, _, _, _ in inputs}
                    )
                    inc = bucket_view.resolve_update(spec.key, samples=bucket_samples, graph=graph)
                    lf = getattr(inc, which).lazy()
                    if predicate is not None:
                        lf = lf.filter(predicate)
                    if with_columns is not None:
                        lf = lf.select(with_columns)
                    if n_rows is not None:
                        lf = lf.head(max(0, n_rows - produced))
                    df = lf.collect()
                if df.height:
                    produced += df.height
                    yield df
                if n_rows is not None and produced >= n_rows:
                    return

        schema = getattr(template, which).lazy().collect_schema()
        return register_io_source(
            source,
            schema=schema,
            explain_name=f"metaxy resolve_update {which}",
            explain_detail=f"{spec.key}, {partitioning.k} {partitioning.mode} buckets",
        )

    return Increment(added=frame("added"), changed=frame("changed"), removed=frame("removed"))


class _SharedSpill:
    """The bucketed inputs of one ``resolve_update`` result, prepared on first use and shared by its frames.

    Spilling (when needed) happens once, however many times ``added``/``changed``/``removed`` are collected;
    the files are removed when the last frame referencing them is garbage-collected (or at exit). Scans are
    pinned to the table versions seen when ``resolve_update`` was called, so reuse is consistent.
    """

    def __init__(
        self, partitioning: Partitioning, inputs: Sequence[tuple[str, Any, pl.LazyFrame, Any]]
    ) -> None:
        self._partitioning = partitioning
        self._inputs = list(inputs)
        self._buckets: Buckets | None = None

    def buckets(self) -> Buckets:
        if self._buckets is None:
            buckets = Buckets(self._partitioning)
            weakref.finalize(self, buckets.__exit__, None, None, None)
            for name, _, lf, where in self._inputs:
                buckets.add(name, lf, where)
            self._buckets = buckets
        return self._buckets


def may_repeat(
    store: DeltaMetadataStore,
    spec: FeatureSpec,
    lf: pl.LazyFrame,
    feature_version: str | None,
    *,
    count_up_to: int | None = None,
) -> bool:
    """Whether ``lf`` (rows of ``spec``'s table, of ``feature_version`` or of every version) can hold a
    sample more than once, i.e. whether the latest-row selection is needed.

    The Delta log's file statistics answer for free when the files do not overlap on the id column;
    otherwise one pass over the id columns counts distinct samples (much cheaper than the group-by and join
    that the latest-row selection costs), if the rows are at most ``count_up_to`` (None: always). ``lf`` is
    pinned to a table version, so the answer holds for it.
    """
    ids = list(spec.id_columns)
    overridden = store._scan_overrides is not None and spec.key in store._scan_overrides
    rows = None
    if not overridden:
        table = _io.open_table(store.table_uri(spec.key), store.storage_options)
        if table is not None:
            where = layout(table, ids, lf.collect_schema(), feature_version)
            if not where.may_repeat:
                return False
            rows = where.rows
    if count_up_to is not None and (rows is None or rows > count_up_to):
        return True  # too big to count eagerly here: keep the caller's plan lazy and streaming
    key = pl.col(ids[0]) if len(ids) == 1 else pl.struct(ids)
    with _io.guard("read", store.table_uri(spec.key), store.storage_options):
        counts = lf.select(pl.len().alias("rows"), key.n_unique().alias("samples")).collect()
    return int(counts["rows"][0]) != int(counts["samples"][0])
