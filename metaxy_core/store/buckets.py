"""Buckets of samples: work over whole feature tables split so that memory follows a bucket, not a table.

Work that joins whole feature tables on their id columns (reconciliation, ``resolve_update``) needs hash
tables whose size grows with the number of samples; at tens of millions of rows that no longer fits. Large
inputs are therefore split into ``K`` *buckets* of samples, with ``K`` chosen from the table size (``rows /
partition_rows``, read from the Delta log's statistics, see :mod:`metaxy_core.store.layout`, not from the
data). When the files are clustered on the id column, buckets are ranges cut between files and each bucket
reads only its own files; otherwise ``bucket = xxh3_64(id columns) % K`` and every input is spilled once, in
one streaming pass, into per-bucket Parquet files in a local temporary folder. Each bucket is then processed
on its own with the in-memory engine. Small inputs (``K == 1``) skip the spill.

Spill folders are named by pid, host and host identity (:func:`metaxy_core._process.host_identity`), so
the next spill on the same host removes those left by dead processes, and never a live one of another
container sharing the folder and the hostname.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import polars as pl

from metaxy_core._process import current_pid, host_tag, hostname, pid_alive
from metaxy_core.store.layout import RANGE_TYPES, Layout

#: rows per bucket when nothing else is configured (about 0.6 GiB of working memory for a typical table)
DEFAULT_PARTITION_ROWS = 1_000_000
#: environment variable naming the folder for spill files (default: the system temporary folder)
SPILL_DIR_ENV = "METAXY_SPILL_DIR"
BUCKET = "__metaxy_bucket"


def id_hash(ids: Sequence[str], schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """Stable 64-bit hash of the id columns (XXH3-64 via polars-hash; identical across versions/processes)."""
    import polars_hash  # noqa: F401  (registers .nchash)

    if len(ids) == 1 and schema.get(ids[0]) == pl.String:
        key = pl.col(ids[0])
    else:
        key = pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in ids], separator="\x1f")
    return key.nchash.xxh3_64()  # type: ignore[attr-defined]


def bucket_of(ids: Sequence[str], schema: Mapping[str, pl.DataType], k: int) -> pl.Expr:
    """The hash bucket (``0..k-1``) of a row; a sample always lands in the same bucket."""
    return (id_hash(ids, schema) % k).fill_null(0).cast(pl.UInt32)


MAX_BUCKETS = 4096
#: range buckets of at most this many cuts are keyed by comparisons (streaming; see Partitioning.key)
MAX_COMPARED_CUTS = 32


def buckets_for(rows: int, partition_rows: int) -> int:
    """How many buckets keep each one under ``partition_rows`` rows (at most :data:`MAX_BUCKETS`)."""
    return min(MAX_BUCKETS, max(1, math.ceil(rows / max(1, partition_rows))))


@dataclass(frozen=True)
class Partitioning:
    """How samples are split into ``k`` buckets: one bucket, ranges of the first id column, or id hashes."""

    k: int
    ids: tuple[str, ...]
    boundaries: pl.Series | None = None  # range mode: bucket b holds boundaries[b-1] <= id < boundaries[b]

    @property
    def mode(self) -> str:
        """``single``, ``range`` or ``hash``: reported by reconciliation (and asserted by tests)."""
        return "single" if self.k == 1 else ("range" if self.boundaries is not None else "hash")

    def key(self, schema: Mapping[str, pl.DataType]) -> pl.Expr:
        """The bucket index of a row (null ids: bucket 0).

        Range buckets count the cuts at or below the id: one comparison with a scalar per cut streams, while
        a search in a literal Series of the cuts made polars hold the whole input of a spill in memory (peak
        RSS 1.1 GiB for a 10M-row spill, 0.63 GiB with comparisons). Beyond :data:`MAX_COMPARED_CUTS` cuts
        the comparisons per row cost too much and the search is kept (it does not stream).
        """
        if self.boundaries is not None:
            col = pl.col(self.ids[0])
            if self.boundaries.len() <= MAX_COMPARED_CUTS:
                found = pl.sum_horizontal([col >= edge for edge in self.boundaries])
            else:
                found = pl.lit(self.boundaries).search_sorted(col, side="right")
            return found.fill_null(0).cast(pl.UInt32)
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
    or produced by an earlier reconciliation), buckets are ranges cut between files: each bucket then reads
    only its own files and its output stays clustered. Otherwise buckets are id hashes and inputs are spilled.
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


def cut_plan(where: Layout, ids: Sequence[str], partition_rows: int) -> Partitioning | None:
    """Range buckets of about ``partition_rows`` of ``where``'s rows, cut at the starts of its ranges even
    where other ranges straddle a cut (those are then read by the buckets on both sides of it).

    Why: :func:`plan` cuts only between clusters of overlapping ranges. A table holding two generations of
    its samples (right after a reconciliation: the old rows in the writer's row groups, the new ones in bulk
    files of another size) can chain all of its ranges into one cluster and leave no cut at all. Each cut is
    the range start, among those that leave at least a share (``rows / k``) and at most twice
    ``partition_rows`` of the ranges starting in its bucket, that the fewest rows straddle; callers bound
    the rows read twice (:meth:`Layout.read_rows`). None without ranges, without a cut, or when the ranges
    starting in a bucket hold more than twice ``partition_rows`` rows (one range too big to cut).
    """
    k = buckets_for(where.rows, partition_rows)
    if k == 1 or where.ranges is None or where.ranges.height < 2:
        return None
    target = max(1, where.rows // k)
    by_lo, by_hi = where.ranges.sort("lo"), where.ranges.sort("hi")
    starts = by_lo.get_column("lo").unique(maintain_order=True)

    def rows_below(column: str, frame: pl.DataFrame) -> list[int]:
        """Per start ``c``: rows of the ranges whose ``column`` is below ``c``."""
        total = [0, *frame.get_column("n").cum_sum().to_list()]
        return [total[i] for i in frame.get_column(column).search_sorted(starts, side="left").to_list()]

    begun = rows_below("lo", by_lo)  # rows of the ranges starting before each start
    straddled = [b - e for b, e in zip(begun, rows_below("hi", by_hi), strict=True)]
    cuts: list[Any] = []
    sizes: list[int] = []  # rows of the ranges starting in each bucket
    last, i = 0, 1
    while i < len(begun):
        if begun[i] - last < target:
            i += 1
            continue
        window = [j for j in range(i, len(begun)) if begun[j] - last <= 2 * partition_rows] or [i]
        best = min(window, key=lambda j: (straddled[j], j))
        cuts.append(starts[best])
        sizes.append(begun[best] - last)
        last, i = begun[best], best + 1
    sizes.append(where.rows - last)
    if not cuts or max(sizes) > 2 * partition_rows:
        return None
    return Partitioning(len(cuts) + 1, tuple(ids), pl.Series("boundaries", cuts, dtype=starts.dtype))


#: sampled ids per bucket when cutting id ranges from a sample (about 3% error on a bucket's size)
SAMPLE_PER_BUCKET = 1000


def sampled_ranges(
    lf: pl.LazyFrame, ids: Sequence[str], rows: int, partition_rows: int
) -> Partitioning | None:
    """Range buckets for rows whose files are not in id order, cut at quantiles of a sample of their ids.

    The inputs are spilled either way (by range instead of by hash, at the same cost), but each bucket's
    output then covers one id range: the files a reconciliation writes are in id order, so the next one
    reads them directly (no spill, no check for repeated samples). The sample keeps the rows whose id hash
    is a multiple of a step (streaming, independent of the row order, ``SAMPLE_PER_BUCKET`` ids per bucket);
    it also estimates each bucket's rows. None (use hash buckets) for several id columns, an id type
    without order, more than ``MAX_COMPARED_CUTS + 1`` buckets (the spill's key would not stream), or when
    one bucket would hold more than 1.5 ``partition_rows`` (e.g. a few ids holding most rows).
    """
    k = buckets_for(rows, partition_rows)
    schema = lf.collect_schema()
    if not 1 < k <= MAX_COMPARED_CUTS + 1 or len(ids) != 1 or schema.get(ids[0]) not in RANGE_TYPES:
        return None  # (beyond MAX_COMPARED_CUTS cuts the spill's key would not stream)
    step = max(1, rows // (k * SAMPLE_PER_BUCKET))
    sample = lf.select(ids[0]).filter(id_hash(ids, schema) % step == 0).collect().get_column(ids[0])
    known = sample.drop_nulls().sort()
    if known.len() < k:
        return None
    cuts = known.gather([j * known.len() // k for j in range(1, k)]).unique(maintain_order=True)
    part = Partitioning(cuts.len() + 1, tuple(ids), cuts.alias("boundaries"))
    per_bucket = sample.to_frame().select(part.key(schema).alias(BUCKET)).get_column(BUCKET).value_counts()
    biggest = int(per_bucket.get_column("count").max() or 0) * step  # type: ignore[arg-type]
    return part if biggest <= 1.5 * partition_rows else None


def spill_root() -> str:
    """Where spill folders go: ``METAXY_SPILL_DIR`` (e.g. a large local disk), else the temporary folder."""
    return os.environ.get(SPILL_DIR_ENV) or tempfile.gettempdir()


def spill_prefix(pid: int | None = None) -> str:
    """The start of the name of every spill folder or file of process ``pid`` (default: this one) of this
    host identity, which :func:`remove_stale_spills` judges by."""
    return f"metaxy-buckets-{current_pid() if pid is None else pid}@{hostname()}.{host_tag()}-"


def remove_stale_spills(root: str) -> list[str]:
    """Delete spill folders and files (S3 upload spools) left by processes of this host that died without
    cleaning up (SIGKILL, OOM kill): a crashed reconciliation must not leave gigabytes behind in the temporary
    folder on every attempt.

    Only names with this host identity are judged by their pid (another container sharing the folder and the
    hostname has its own pids)."""
    removed = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        pid = name.removeprefix("metaxy-buckets-").split("@", 1)[0]
        if name.startswith("metaxy-buckets-") and pid.isdigit() and name.startswith(spill_prefix(int(pid))):
            if int(pid) != current_pid() and not pid_alive(int(pid)):
                path = os.path.join(root, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.remove(path)
                removed.append(name)
    return removed


class Buckets:
    """Inputs split into the buckets of a :class:`Partitioning`; a context manager (spills are removed).

    An input is read directly, one bucket at a time, when that is cheap: always with a single bucket, and in
    range mode when its files are clustered on the id column (each bucket's filter skips the other files).
    An input the Delta log proves small (at most ``hold_rows`` rows, e.g. the samples a resumed run already
    carried; always an empty one) is read once and split in memory. Otherwise it is sunk once, streaming,
    into per-bucket Parquet files in a local temporary folder.
    """

    def __init__(self, partitioning: Partitioning, *, directory: str | None = None) -> None:
        self.partitioning = partitioning
        self._root = directory
        self._dir: str | None = None
        self._direct: dict[str, pl.LazyFrame] = {}
        self._held: dict[str, dict[int, pl.DataFrame]] = {}
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
        self,
        name: str,
        lf: pl.LazyFrame,
        where: Layout | None = None,
        *,
        max_amplification: float = 1.5,
        hold_rows: int = 0,
    ) -> None:
        """Register an input holding the id columns; ``where`` describes its files (for direct reads).

        ``where.rows`` bounds the input's rows (the files that may hold them): at most ``hold_rows`` and the
        input is held in memory, split by bucket, instead of spilled (a spill costs a write and a read of
        every row; an empty input would still be scanned and sunk).
        """
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
        if where is not None and where.rows <= hold_rows:
            held = lf.with_columns(part.key(schema).alias(BUCKET)).collect()
            self._held[name] = {
                int(key[0]): frame
                for key, frame in held.partition_by(BUCKET, as_dict=True, include_key=False).items()
            }
            return
        if self._dir is None:
            root = self._root or spill_root()
            os.makedirs(root, exist_ok=True)
            remove_stale_spills(root)
            self._dir = tempfile.mkdtemp(
                prefix=spill_prefix(), dir=root
            )  # pid and host: see remove_stale_spills
        lf.with_columns(part.key(schema).alias(BUCKET)).sink_parquet(
            pl.PartitionBy(os.path.join(self._dir, name), key=BUCKET, include_key=False),
            # hash strings hardly compress: lz4 cost ~40% more spill CPU for little
            compression="uncompressed",
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
        if name in self._held:
            held = self._held[name].get(b)
            return pl.LazyFrame(schema=self._schemas[name]) if held is None else held.lazy()
        assert self._dir is not None
        folder = os.path.join(self._dir, name, f"{BUCKET}={b}")
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder)) if os.path.isdir(folder) else []
        if not files:
            return pl.LazyFrame(schema=self._schemas[name])
        return pl.scan_parquet(files, schema=self._schemas[name])

    def release(self, b: int) -> None:
        """Forget bucket ``b`` of every input (its spill files are deleted): for callers that read each
        bucket once, so the disk holds only what is left to read and the deletions overlap the work."""
        for held in self._held.values():
            held.pop(b, None)
        if self._dir is not None:
            for name in self.spilled:
                shutil.rmtree(os.path.join(self._dir, name, f"{BUCKET}={b}"), ignore_errors=True)


class SharedBuckets:
    """Inputs bucketed on first use and shared by every frame that reads them (the frames of one increment).

    Spilling (when needed) happens once, however many times the frames are collected; the files are removed
    when this object is garbage-collected (or at exit). Callers pin the inputs to table versions, so reuse is
    consistent.
    """

    def __init__(
        self, partitioning: Partitioning, inputs: Sequence[tuple[str, pl.LazyFrame, Layout | None]]
    ) -> None:
        self._partitioning = partitioning
        self._inputs = list(inputs)
        self._buckets: Buckets | None = None

    def buckets(self) -> Buckets:
        """The bucketed inputs, spilling them the first time."""
        if self._buckets is None:
            buckets = Buckets(self._partitioning)
            weakref.finalize(self, buckets.__exit__, None, None, None)
            for name, lf, where in self._inputs:
                buckets.add(name, lf, where)
            self._buckets = buckets
        return self._buckets
