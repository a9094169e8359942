"""The order of rows in a table: Delta commit order, never a clock.

Every row the store writes, in feature tables and system tables alike, carries ``metaxy_commit_order``:

* ``2·V`` for a row committed at Delta version ``V`` of its table. The writer opens the table at ``V-1``,
  stamps its rows and commits with delta-rs' ``max_commit_retries=0``: the commit lands at exactly ``V`` or
  is refused, and is then stamped again against the table as it now is (the store's commit function).
* ``2·R+1`` for a row *derived* from a read of the table at version ``R`` (reconciliation's carried rows): it
  ranks after every row it was derived from and before anything committed after that read, so a row a pipeline
  writes while a reconciliation runs always wins, whenever the reconciliation's own commit lands.
* null for rows written by earlier versions of this project: they rank before every stamped row and among
  themselves by ``metaxy_created_at``, the rule they were written under, so old tables read exactly as before.

The newest row of a sample is the one with the greatest (commit order, ``metaxy_created_at``): the timestamp
only breaks ties between rows of equal order (legacy rows; two derived writes from one read, which the
migration lock rules out). Compaction rewrites files but keeps the column, so the order survives maintenance.
Timestamps are information only: a host whose clock is off changes nothing here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from metaxy_core.store.provenance import COMMIT_ORDER, CREATED_AT

#: name of the temporary ranking column of :func:`latest_per_sample`
_RANK = "__metaxy_rank"


def written(version: int) -> int:
    """The commit order of a row committed at Delta ``version``."""
    return 2 * version


def derived(read_version: int) -> int:
    """The commit order of a row derived from a read of the table at ``read_version``."""
    return 2 * read_version + 1


def committed_version(order: int) -> int:
    """The Delta version a row stamped ``written(v)`` was committed at."""
    return order // 2


def rank(schema: Mapping[str, pl.DataType]) -> pl.Expr:
    """One sortable value per row: (commit order, created_at) folded into an Int128, nulls ranking first.

    Reading the table's commit order when the column exists; a table without it (written by an earlier
    version of this project) ranks by ``metaxy_created_at`` alone, as it always did.
    """
    created = pl.col(CREATED_AT).dt.epoch("us").fill_null(0) + pl.lit(1 << 62, dtype=pl.Int64)
    if COMMIT_ORDER not in schema:
        return created
    order = (pl.col(COMMIT_ORDER).fill_null(-1) + 1).cast(pl.Int128)
    return order * pl.lit(1 << 64, dtype=pl.Int128) + created.cast(pl.Int128)


def latest_per_sample(lf: pl.LazyFrame, ids: Sequence[str]) -> pl.LazyFrame:
    """Keep the newest row (by commit order) of every sample, lazily.

    A semi-join against the per-sample greatest rank streams (group-by + join) instead of sorting the whole
    table. A table without the commit-order column keeps the old rule (greatest ``metaxy_created_at``).
    """
    ids = list(ids)
    schema = lf.collect_schema()
    if COMMIT_ORDER not in schema:
        newest = lf.group_by(ids).agg(pl.col(CREATED_AT).max())
        return lf.join(newest, on=[*ids, CREATED_AT], how="semi", nulls_equal=True)
    ranked = lf.with_columns(rank(schema).alias(_RANK))
    newest = ranked.group_by(ids).agg(pl.col(_RANK).max())
    return ranked.join(newest, on=[*ids, _RANK], how="semi", nulls_equal=True).drop(_RANK)


def sort_newest_last(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Rows in commit order (legacy rows first, by time), oldest first; equal ranks keep their order."""
    return lf.sort(rank(lf.collect_schema()), maintain_order=True)


def in_commit_order(df: pl.DataFrame, time_column: str) -> pl.DataFrame:
    """A system table's events in the order they were committed (oldest first).

    Rows of one commit keep their order; events written before the commit-order column existed come first,
    ordered by ``time_column`` (the rule they were written under).
    """
    if df.height == 0:
        return df
    if COMMIT_ORDER not in df.columns:
        return df.sort(time_column, nulls_last=False, maintain_order=True)
    return df.sort([COMMIT_ORDER, time_column], nulls_last=False, maintain_order=True)
