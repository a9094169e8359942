"""Checks of a ``resolve_update`` result against the unbucketed one, for tests of the bucketed paths.

Example:
    >>> expected = single_query(store, "t/emb", graph, ["uid"])   # one query over the whole tables
    >>> store.partition_rows = 100                                 # now bucketed
    >>> assert_same_increment(store.resolve_update("t/emb", graph=graph).collect(), expected, ["uid"])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import polars as pl

from metaxy_core.graph import FeatureGraph
from metaxy_core.store import DeltaMetadataStore
from metaxy_core.store.comparison import FRAMES


def single_query(
    store: DeltaMetadataStore, key: str, graph: FeatureGraph, ids: Sequence[str]
) -> tuple[pl.DataFrame, ...]:
    """``key``'s increment computed by one query over the whole tables (``store.partition_rows`` is raised
    for good), each frame sorted by ``ids``: what every bucketed plan must equal."""
    store.partition_rows = 10**9
    inc = store.resolve_update(key, graph=graph)
    assert "metaxy resolve_update" not in inc.added.explain(), "expected the single query, got buckets"
    got = inc.collect()
    return tuple(getattr(got, name).sort(list(ids)) for name in FRAMES)


def assert_same_increment(got: object, expected: tuple[pl.DataFrame, ...], ids: Sequence[str]) -> None:
    """``got`` (a collected increment) holds ``expected``'s rows, whatever their order, with its schema."""
    for name, want in zip(FRAMES, expected, strict=True):
        frame = getattr(got, name).sort(list(ids))
        assert frame.equals(want), name
        assert frame.schema == want.schema, name


def range_buckets(plan: str) -> int:
    """How many range buckets a bucketed increment's plan (``explain()``) announces (0: not range buckets)."""
    found = re.search(r"(\d+) range buckets", plan)
    return int(found.group(1)) if found else 0
