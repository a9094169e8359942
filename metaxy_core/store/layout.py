"""What a feature table's Delta log proves about its rows, and the newest-row-per-sample selection it spares.

The log's add actions carry per-file row counts and min/max statistics. From them, without reading data:

* how many rows a feature version holds (to size buckets, see :mod:`metaxy_core.store.buckets`);
* where each file's ids lie (so range buckets can skip files);
* whether a sample can have several rows: a write never repeats a sample, so files that each hold one write
  and whose id ranges do not overlap cannot either, and the newest-row selection (a group-by and a join
  over every row) can be skipped.

When the log cannot tell, :func:`may_repeat` counts distinct samples (one pass over the id columns), and
:func:`latest_per_sample` / :func:`newest_rows` do the selection lazily or in memory.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import polars as pl

from metaxy_core.store import _io, _storage, footers, order
from metaxy_core.store.provenance import (
    COMMIT_ORDER,
    COMMIT_ORDER_FACT,
    DEFAULT_DATA_VERSIONS_FACT,
    FEATURE_VERSION,
    ROWS_FACT,
    WRITE_ID,
)

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.graph.keys import FeatureKey
    from metaxy_core.store.delta import DeltaMetadataStore


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
        return sum(self.within(lo, hi).rows for lo, hi in itertools.pairwise(edges))

    def within(self, lo: Any, hi: Any) -> Layout:
        """The ranges a read of ids ``lo <= id < hi`` (None: unbounded) cannot skip, as a layout of its own.

        Its ``may_repeat`` answers for one range bucket: a bucket whose ranges do not overlap holds one row
        per sample even when the table as a whole repeats samples elsewhere. Needs ``ranges``.
        """
        assert self.ranges is not None
        keep = pl.lit(True)
        if lo is not None:
            keep = keep & (pl.col("hi") >= lo)
        if hi is not None:
            keep = keep & (pl.col("lo") < hi)
        ranges = self.ranges.filter(keep)
        return Layout(int(ranges.get_column("n").sum() or 0), ranges, self.single_writes)


#: id types whose order file statistics and range buckets can use
RANGE_TYPES = (pl.String, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
#: string statistics this long may have been truncated by the writer; do not reason with them
_MAX_STAT_CHARS = 31


def may_hold(actions: pl.DataFrame, feature_version: str) -> pl.DataFrame:
    """The add actions (``get_add_actions(flatten=True)``) of the files that may hold rows of
    ``feature_version``: its min/max statistics enclose it, or are missing (every file without them)."""
    lo, hi = f"min.{FEATURE_VERSION}", f"max.{FEATURE_VERSION}"
    if lo not in actions.columns or hi not in actions.columns:
        return actions
    return actions.filter(
        pl.col(lo).is_null()
        | pl.col(hi).is_null()
        | ((pl.col(lo) <= feature_version) & (pl.col(hi) >= feature_version))
    )


def _version_stats(table: DeltaTable) -> pl.DataFrame | None:
    """Each data file's exact ``metaxy_feature_version`` min/max statistics (``lo``/``hi``), or None when
    some file with rows lacks them or they may be truncated (anything unknown: read the rows)."""
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if actions.height == 0:
        return pl.DataFrame(schema={"lo": pl.String, "hi": pl.String})
    lo, hi = f"min.{FEATURE_VERSION}", f"max.{FEATURE_VERSION}"
    if not {lo, hi, "num_records"} <= set(actions.columns):
        return None
    files = actions.filter(pl.col("num_records").is_null() | (pl.col("num_records") > 0)).select(
        pl.col(lo).alias("lo"), pl.col(hi).alias("hi")
    )
    known = files.select(
        (pl.col("lo").is_not_null() & pl.col("hi").is_not_null()).all().alias("all"),
        pl.max_horizontal(pl.col("lo").str.len_chars().max(), pl.col("hi").str.len_chars().max()).alias("n"),
    ).row(0)
    return files if known[0] and (known[1] or 0) < _MAX_STAT_CHARS else None


def no_rows_at(table: DeltaTable, feature_version: str) -> bool:
    """Whether the Delta log's file statistics prove that no row of ``table`` has ``feature_version``.

    Why: right after a feature's version changed (its code or its lineage did), every stored sample is
    changed whatever its provenance, so ``resolve_update`` needs to read only which samples are stored, not
    their provenance and version strings (most of the bytes a stored row costs it). A table without files
    holds no row at all; anything unknown answers False.
    """
    files = _version_stats(table)
    return (
        files is not None
        and not files.select(
            ((pl.col("lo") <= feature_version) & (pl.col("hi") >= feature_version)).any()
        ).item()
    )


def only_rows_at(table: DeltaTable, feature_version: str) -> bool:
    """Whether the Delta log's file statistics prove that every row of ``table`` has ``feature_version``.

    Why: the rows of the current version are then the whole table, and reads skip the version filter (a
    string per row decoded and compared). Anything unknown answers False.
    """
    files = _version_stats(table)
    return (
        files is not None
        and files.height > 0
        and files.select(((pl.col("lo") == feature_version) & (pl.col("hi") == feature_version)).all()).item()
    )


def table_layout(
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
        actions = may_hold(actions, feature_version)
    if actions.select(pl.col("num_records").is_null().any()).item():
        return Layout(1 << 62, None)
    rows = int(actions.select(pl.col("num_records").sum()).item() or 0)
    first = ids[0]
    lo_col, hi_col = f"min.{first}", f"max.{first}"
    if (
        len(ids) != 1
        or schema.get(first) not in RANGE_TYPES
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


#: Parquet footers read at most to refine a layout to row groups (a table of more files keeps file ranges)
MAX_FOOTER_FILES = 256
#: id types whose footer statistics decode without doubt (unsigned types may be stored with their sign bit)
_FOOTER_TYPES = (pl.String, pl.Int8, pl.Int16, pl.Int32, pl.Int64)


def row_group_layout(
    table: DeltaTable,
    where: Layout,
    ids: Sequence[str],
    schema: Mapping[str, pl.DataType],
    feature_version: str | None,
) -> Layout:
    """``where`` (:func:`table_layout` of the same arguments) with one range per Parquet *row group*.

    Why: a bucket's scan skips row groups by their footer statistics, not only files, so a file of a million
    rows written in id order (many row groups, each a narrow id range) can be cut into buckets that each read
    about their own rows. The Delta log describes files only; the footers (:mod:`.footers`) of the files that
    may hold the rows describe their row groups. A file whose footer cannot tell (no statistics, a type this
    reads with doubt, truncated strings) keeps its file range; a remote table, one of more than
    :data:`MAX_FOOTER_FILES` files or ``where`` without ranges is returned as it is. Metadata only: no data
    is read, and answers only decide how work is cut, never which rows a bucket holds (its filter does).
    """
    first = ids[0]
    if (
        where.ranges is None
        or len(ids) != 1
        or schema.get(first) not in _FOOTER_TYPES
        or _storage.is_remote(table.table_uri)
    ):
        return where
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    if feature_version is not None:
        actions = may_hold(actions, feature_version)
    actions = actions.filter(pl.col("num_records") > 0)
    if actions.height > MAX_FOOTER_FILES:
        return where
    root = unquote(table.table_uri.removeprefix("file://")).rstrip("/")  # a file URI: percent-encoded
    string = schema.get(first) == pl.String
    groups: list[tuple[Any, Any, int]] = []
    for path, n, lo_file, hi_file in actions.select(
        "path", "num_records", f"min.{first}", f"max.{first}"
    ).iter_rows():
        found = None if "://" in path else footers.row_groups(f"{root}/{unquote(path)}", first)
        usable = (
            found is not None
            and sum(g.rows for g in found) == n
            and all(
                isinstance(g.lo, str if string else int)
                and isinstance(g.hi, str if string else int)
                and (not string or max(len(g.lo), len(g.hi)) < _MAX_STAT_CHARS)  # type: ignore[arg-type]
                for g in found
                if g.rows
            )
        )
        if usable and found is not None:
            groups.extend((g.lo, g.hi, g.rows) for g in found if g.rows)
        else:
            groups.append((lo_file, hi_file, n))
    dtype = where.ranges.schema["lo"]
    ranges = pl.DataFrame(groups, schema={"lo": dtype, "hi": dtype, "n": pl.Int64}, orient="row")
    return Layout(where.rows, ranges, where.single_writes)


#: commit files read at most to prove a fact about a feature version's rows (else: read the rows)
MAX_FACT_COMMITS = 64


def default_data_versions(
    table: DeltaTable,
    feature_version: str,
    read_commit: Callable[[int], Mapping[str, Any] | None],
    *,
    max_commits: int = MAX_FACT_COMMITS,
) -> bool:
    """Whether the Delta log proves every row of ``feature_version`` has its default data version.

    Writers record the fact in the commit (:func:`metaxy_core.store.provenance.data_version_facts`); each
    file's ``metaxy_commit_order`` statistics (min == max) name the commit(s) its rows came from: ``2·V``
    is the commit at version ``V``; ``2·R+1`` (rows derived from a read at ``R``, bulk commits) the commits
    after ``R`` recording that order, read forward until their recorded row counts account for every row of
    that order in the table's files (a commit that did not record it leaves rows unaccounted for).
    ``read_commit(version)`` returns a commit's ``commitInfo`` (None when its file is gone). Anything
    unknown (missing statistics, files mixing commits, more than ``max_commits`` commit files to read, a
    table written by another tool) answers False: read the rows.
    """
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    lo, hi = f"min.{COMMIT_ORDER}", f"max.{COMMIT_ORDER}"
    if actions.height == 0 or not {lo, hi, "num_records"} <= set(actions.columns):
        return False
    every_file = actions
    files = may_hold(actions, feature_version).filter(pl.col("num_records") > 0)
    if files.height == 0:
        return False
    if not files.select((pl.col(lo).is_not_null() & (pl.col(lo) == pl.col(hi))).all()).item():
        return False
    budget = [max_commits]

    def commit(version: int) -> Mapping[str, Any]:
        budget[0] -= 1
        return (read_commit(version) if budget[0] >= 0 else None) or {}

    latest = table.version()
    for order_value in sorted(files.get_column(lo).unique().to_list()):
        if order_value % 2 == 0:  # the commit at version order/2
            if commit(order_value // 2).get(DEFAULT_DATA_VERSIONS_FACT) != "true":
                return False
            continue
        # rows derived from a read at R: bulk commits after R, until their rows are accounted for
        stored = every_file.filter((pl.col(lo) == order_value) & (pl.col(hi) == order_value))
        left = int(stored.get_column("num_records").sum())
        version = (order_value - 1) // 2 + 1
        while left > 0 and version <= latest and budget[0] > 0:
            info = commit(version)
            if info.get(COMMIT_ORDER_FACT) == str(order_value):
                if info.get(DEFAULT_DATA_VERSIONS_FACT) != "true":
                    return False
                left -= int(info.get(ROWS_FACT, left + 1))
            version += 1
        if left != 0:
            return False
    return True


def commit_info(uri: str, options: Mapping[str, str], version: int) -> dict[str, Any] | None:
    """The ``commitInfo`` of the commit at ``version`` of the table at ``uri`` (None if its file is gone).

    Read with the store's own I/O (boto3 on S3, which releases the GIL while it waits; delta-rs' history
    holds it), one small file per commit.
    """
    path = f"{uri.rstrip('/')}/_delta_log/{version:020d}.json"
    try:
        text = _storage.read_bytes(path, options).decode()
    except FileNotFoundError:  # locally, or a missing S3 object (see _storage.boto_errors)
        return None
    for line in text.splitlines():
        if '"commitInfo"' in line:
            info = json.loads(line).get("commitInfo")
            return info if isinstance(info, dict) else None
    return None


def feature_default_data_versions(
    store: DeltaMetadataStore, feature: FeatureKey, table: DeltaTable, feature_version: str
) -> bool:
    """:func:`default_data_versions` for ``feature``'s ``table`` in ``store`` (the one its rows are read from,
    see :meth:`~metaxy_core.store.delta.DeltaMetadataStore.scan_feature_at`), commits read with the store's
    I/O."""
    uri, options = store.table_uri(feature), store.storage_options
    with _io.guard("read the log of", uri, options):
        return default_data_versions(table, feature_version, lambda v: commit_info(uri, options, v))


def may_repeat(
    lf: pl.LazyFrame,
    ids: Sequence[str],
    where: Layout | None,
    *,
    uri: str,
    options: Mapping[str, str],
    count_up_to: int | None = None,
) -> bool:
    """Whether ``lf`` can hold a sample more than once, i.e. whether the newest-row selection is needed.

    ``where`` (the Delta log's statistics of the rows in ``lf``; None when unknown, e.g. for one bucket of a
    spill) answers for free when the files do not overlap on the id column; otherwise one pass over the id
    columns counts distinct samples (much cheaper than the group-by and join of the selection), if the rows
    are at most ``count_up_to`` (None: always). ``lf`` must be pinned to a table version, so the answer
    holds for it; ``uri`` and ``options`` name the table in errors.
    """
    rows = None
    if where is not None:
        if not where.may_repeat:
            return False
        rows = where.rows
    if count_up_to is not None and (rows is None or rows > count_up_to):
        return True  # too big to count eagerly here: keep the caller's plan lazy and streaming
    key = pl.col(ids[0]) if len(ids) == 1 else pl.struct(list(ids))
    with _io.guard("read", uri, options):
        counts = lf.select(pl.len().alias("rows"), key.n_unique().alias("samples")).collect()
    return int(counts["rows"][0]) != int(counts["samples"][0])


def latest_per_sample(lf: pl.LazyFrame, ids: Sequence[str]) -> pl.LazyFrame:
    """Keep the newest row of every sample, by commit order (see :mod:`metaxy_core.store.order`).

    A semi-join against the per-sample greatest rank streams (group-by + join) instead of sorting the whole
    table.
    """
    return order.latest_per_sample(lf, ids)


def newest_rows(df: pl.DataFrame, ids: Sequence[str]) -> pl.DataFrame:
    """The newest row (by commit order) of every sample of an in-memory frame.

    Write batches never repeat a sample, so most frames hold one row per sample. That is proven first by
    counting distinct 64-bit hashes of the ids (all distinct: no sample repeats; ~4x cheaper than grouping
    the id strings); otherwise a single grouping finds the few repeated samples, and only their rows are
    sorted (ties keep one row).
    """
    if df.height == 0:
        return df
    ids = list(ids)
    key = pl.col(ids[0]) if len(ids) == 1 else pl.struct(ids)
    if df.select(key.hash().n_unique()).item() == df.height:  # equal ids hash equal: no repeated sample
        return df
    repeated = (
        df.lazy().group_by(ids).agg(pl.len().alias("__n")).filter(pl.col("__n") > 1).drop("__n").collect()
    )
    if repeated.height == 0:
        return df
    single = df.lazy().join(repeated.lazy(), on=ids, how="anti", nulls_equal=True)
    newest = (
        df.lazy()
        .join(repeated.lazy(), on=ids, how="semi", nulls_equal=True)
        .sort(order.rank(df.schema))
        .unique(subset=ids, keep="last", maintain_order=False)
    )
    return pl.concat([single, newest]).collect()
