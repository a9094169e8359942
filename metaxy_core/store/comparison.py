"""The comparison at the heart of ``resolve_update``: expected rows against the newest stored row of each
sample, giving the ``added`` / ``changed`` / ``removed`` frames.

:func:`compare` states it lazily (the whole-table query, and each bucket's frames when one frame is
collected alone); :func:`compare_collected` does the same on collected frames with as few joins as the usual
cases allow: rows paired by position when both sides hold the same ids in the same order (:func:`_paired`),
and, when the Delta log proves no stored row is at the current feature version (``stale``), the stored ids
alone instead of their provenance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import polars as pl

from metaxy_core.store.base import Increment
from metaxy_core.store.provenance import FEATURE_VERSION, PROVENANCE, PROVENANCE_BY_FIELD

if TYPE_CHECKING:
    from metaxy_core.graph.graph import FeatureGraph
    from metaxy_core.graph.spec import FeatureSpec

#: the frames of an increment, in the order :func:`compare_collected` returns them
FRAMES = ("added", "changed", "removed")


def compare(
    spec: FeatureSpec,
    graph: FeatureGraph,
    expected: pl.LazyFrame,
    requested_ids: pl.LazyFrame | None,
    stored: pl.LazyFrame | None,
    *,
    stale: bool = False,
) -> Increment:
    """The increment of ``expected`` against ``stored`` (the newest row of each sample, any version).

    ``changed`` also holds samples stored under another feature version, so a code-version bump shows up
    as changes rather than as new samples; ``removed`` is limited to ``requested_ids`` when given.
    ``stale``: the Delta log proves no stored row is at the current feature version
    (:func:`~metaxy_core.store.layout.no_rows_at`), so every stored sample that is expected is changed, and
    only the stored ids are compared.
    """
    ids = list(spec.id_columns)
    if stored is None:
        schema = expected.collect_schema()
        empty = _none_removed(schema, ids, schema[PROVENANCE_BY_FIELD]).lazy()
        return Increment(added=expected, changed=expected.head(0), removed=empty)
    stored_prov = stored.select(ids) if stale else _stored_provenance(stored, ids)
    added = expected.join(stored_prov, on=ids, how="anti", nulls_equal=True)
    matched = expected.join(stored_prov, on=ids, how="inner", nulls_equal=True)
    changed = matched if stale else _changed(spec, graph, matched)
    return Increment(added=added, changed=changed, removed=_removed(ids, stored, expected, requested_ids))


def _stored_provenance(stored: pl.LazyFrame, ids: list[str]) -> pl.LazyFrame:
    return stored.select(
        [*ids, pl.col(PROVENANCE).alias("__stored"), pl.col(FEATURE_VERSION).alias("__stored_version")]
    )


def _changed(spec: FeatureSpec, graph: FeatureGraph, matched: pl.LazyFrame) -> pl.LazyFrame:
    """Of the expected rows matched with a stored row, those whose provenance or feature version differ."""
    return matched.filter(
        (pl.col(PROVENANCE) != pl.col("__stored"))
        | (pl.col("__stored_version") != graph.feature_version(spec.key))
    ).drop("__stored", "__stored_version")


def _removed(
    ids: list[str],
    stored: pl.LazyFrame,
    expected: pl.LazyFrame,
    requested_ids: pl.LazyFrame | None,
    *,
    columns: list[str] | None = None,
) -> pl.LazyFrame:
    removed = stored.select(columns or [*ids, PROVENANCE_BY_FIELD, PROVENANCE])
    if requested_ids is not None:
        removed = removed.join(requested_ids, on=ids, how="semi", nulls_equal=True)
    return removed.join(expected.select(ids), on=ids, how="anti", nulls_equal=True)


def compare_collected(
    spec: FeatureSpec,
    graph: FeatureGraph,
    expected: pl.DataFrame,
    requested_ids: pl.LazyFrame | None,
    stored: pl.DataFrame | None,
    *,
    expected_unique: bool,
    stored_rows: pl.LazyFrame | None = None,
    stale: bool = False,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """:func:`compare`'s three frames, collected, with one join where the usual case allows.

    ``stored`` holds one row per sample, so the inner join matches each expected row at most once: when it
    matches every expected row nothing was added, and, when ``expected`` is known to hold one row per sample
    (``expected_unique``: derived from upstream rows, not from caller samples) and no ids were requested,
    when it matches every stored row nothing was removed. Only the other cases pay for the anti-joins.

    ``stored`` may leave out the provenance struct (two hash strings per row, ~40 % of the stored read) when
    ``stored_rows`` is the lazy frame it was collected from: only ``removed`` returns it, and it is then read
    for the removed samples alone. With ``stale`` (no stored row at the current feature version, as the Delta
    log proves) it may hold the ids alone: every matched sample is changed, whatever its stored provenance.
    """
    if stored is None:
        return tuple(pl.collect_all(frames_of(compare(spec, graph, expected.lazy(), requested_ids, None))))
    ids = list(spec.id_columns)
    struct = stored.schema.get(PROVENANCE_BY_FIELD)
    if struct is None:
        assert stored_rows is not None
        struct = stored_rows.collect_schema()[PROVENANCE_BY_FIELD]
    none_removed = _none_removed(stored.schema, ids, struct)
    paired = _paired(spec, graph, expected, stored, none_removed, stale)
    if paired is not None:
        return paired
    stored_ids = stored.lazy().select(ids)
    if stale:
        matched_df = expected.lazy().join(stored_ids, on=ids, how="inner", nulls_equal=True).collect()
        changed = matched_df.lazy()
    else:
        matched = expected.lazy().join(
            _stored_provenance(stored.lazy(), ids), on=ids, how="inner", nulls_equal=True
        )
        matched_df = matched.collect()
        changed = _changed(spec, graph, matched_df.lazy())
    added = expected.head(0).lazy()
    if matched_df.height != expected.height:
        added = expected.lazy().join(stored_ids, on=ids, how="anti", nulls_equal=True)
    if expected_unique and requested_ids is None and matched_df.height == stored.height:
        removed = none_removed.lazy()
    elif {PROVENANCE_BY_FIELD, PROVENANCE} <= set(stored.columns):
        removed = _removed(ids, stored.lazy(), expected.lazy(), requested_ids)
    else:  # the removed samples' provenance, read for them alone
        assert stored_rows is not None
        gone = _removed(ids, stored_ids, expected.lazy(), requested_ids, columns=ids).collect()
        removed = (
            stored_rows.select([*ids, PROVENANCE_BY_FIELD, PROVENANCE]).join(
                gone.lazy(), on=ids, how="semi", nulls_equal=True
            )
            if gone.height
            else none_removed.lazy()
        )
    return tuple(pl.collect_all([added, changed, removed]))


def _none_removed(schema: Mapping[str, pl.DataType], ids: list[str], struct: pl.DataType) -> pl.DataFrame:
    """``removed`` with no row: the id columns (their types in ``schema``), the provenance struct
    (``struct``) and hash."""
    removed = {c: schema[c] for c in ids}
    removed.update({PROVENANCE_BY_FIELD: struct, PROVENANCE: pl.String})
    return pl.DataFrame(schema=removed)


def stored_side(stored: pl.LazyFrame, ids: list[str], stale: bool) -> pl.LazyFrame:
    """What :func:`compare_collected` reads of the stored rows: the struct only for removed rows (read
    again for them), and with ``stale`` the ids alone."""
    return stored.select(ids if stale else [*ids, PROVENANCE, FEATURE_VERSION])


def _paired(
    spec: FeatureSpec,
    graph: FeatureGraph,
    expected: pl.DataFrame,
    stored: pl.DataFrame,
    none_removed: pl.DataFrame,
    stale: bool,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None:
    """The three frames without a join, when ``stored`` holds the ids of ``expected`` in the same order.

    Tables written in id order and read one id range at a time give both sides the same ids in the same
    order. ``stored`` holds one row per sample, so equal ids row by row mean each expected row's stored row
    is the one beside it: the join is that pairing (one comparison per row instead of hashing both sides and
    gathering every column), nothing was added and nothing removed. None when the ids differ anywhere.
    ``none_removed`` is the empty ``removed``; with ``stale`` every row is changed.
    """
    ids = list(spec.id_columns)
    if expected.height != stored.height or not all(
        expected.get_column(c).equals(stored.get_column(c), check_names=True, null_equal=True) for c in ids
    ):
        return None
    if stale:
        return expected.head(0), expected, none_removed
    beside = stored.select(
        pl.col(PROVENANCE).alias("__stored"), pl.col(FEATURE_VERSION).alias("__stored_version")
    )
    changed = _changed(spec, graph, pl.concat([expected, beside], how="horizontal").lazy()).collect()
    return expected.head(0), changed, none_removed


def frames_of(inc: Increment) -> list[pl.LazyFrame]:
    return [getattr(inc, which).lazy() for which in FRAMES]
