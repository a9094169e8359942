"""Bucketed reconciliation and resolve_update of large tables give exactly the single-query results.

Tables here are small; tiny bucket sizes force many buckets so that range buckets (files clustered on the id
column), hash buckets with a spill (unclustered files, composite ids), repeated samples, custom data versions,
samples without upstream rows and the native Parquet append are all exercised on real Delta tables.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, QueryBuilder

from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.migrations.reconcile import CarryOverResult, carry_over
from metaxy_core.store.buckets import plan
from metaxy_core.store.layout import Layout, newest_rows
from metaxy_core.store.provenance import (
    CREATED_AT,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    WRITE_ID,
)
from metaxy_core.testing.numbered import (
    numbered_emb_rows,
    numbered_graph,
    numbered_ids,
    numbered_store,
)

RAW, EMB = "p/raw", "p/emb"


def graph(ids: list[str], *, refined: bool) -> FeatureGraph:
    return numbered_graph(RAW, EMB, ids=ids, refined=refined)


def emb_rows(ids: list[str], numbers: list[int], tag: str = "x") -> pl.DataFrame:
    return numbered_emb_rows(numbers, tag, ids, score=True)


def build(
    root: Path, ids: list[str], *, clustered: bool, n: int = 600, chunks: int = 6
) -> DeltaMetadataStore:
    """``n`` samples written in ``chunks`` commits: consecutive ids per commit, or interleaved ones."""
    old = graph(ids, refined=False)
    store = DeltaMetadataStore(root, project="p")
    numbered_store(store, RAW, EMB, old, clustered=clustered, n=n, chunks=chunks, ids=ids, score=True)
    # a sample written again later (the newest row must win) and one with a custom data version
    again = emb_rows(ids, [10, 11], tag="again")
    store.write_metadata(EMB, again, graph=old)
    custom = (
        store.read_metadata(EMB, graph=old)
        .filter(pl.col("label") == "x-20")
        .collect()
        .with_columns(
            pl.struct(pl.lit("c1").alias("embedding"), pl.lit("c2").alias("sync")).alias(
                DATA_VERSION_BY_FIELD
            ),
            pl.lit("custom").alias(DATA_VERSION),
            pl.lit("custom-label").alias("label"),
        )
        .drop(FEATURE_VERSION, CREATED_AT, WRITE_ID)
    )
    store.write_metadata(EMB, custom, graph=old)
    return store


def carried(
    store: DeltaMetadataStore, ids: list[str], partition_rows: int
) -> tuple[pl.DataFrame, CarryOverResult]:
    old, new = graph(ids, refined=False), graph(ids, refined=True)
    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id="w",
        snapshot_version=new.snapshot_version,
        partition_rows=partition_rows,
    )
    latest = store.read_metadata(EMB, graph=new).collect().drop(CREATED_AT).sort(ids)
    return latest, result


@pytest.mark.parametrize(
    ("ids", "clustered", "mode", "spilled"),
    [
        (["uid"], True, "range", False),  # ranges cut between files: each bucket reads its own
        (["uid"], False, "range", True),  # ranges cut from a sample of the ids, inputs spilled by range
        (["video", "frame"], True, "hash", True),  # composite ids: hashes
    ],
)
def test_bucketed_carry_over_equals_one_bucket(tmp_path, ids, clustered, mode, spilled):
    one, result_one = carried(build(tmp_path / "one", ids, clustered=clustered), ids, partition_rows=10**9)
    many, result_many = carried(build(tmp_path / "many", ids, clustered=clustered), ids, partition_rows=70)
    assert result_one.buckets == 1 and result_many.buckets > 3
    assert result_many.mode == mode
    assert bool(result_many.spilled) == spilled
    assert result_one.rows == result_many.rows == one.height == 588  # 600 samples, 12 never computed
    assert one.equals(many)
    assert one[ids].n_unique() == one.height
    assert one.filter(pl.col("label") == "custom-label")[DATA_VERSION].to_list() == ["custom"]
    assert one.filter(pl.col("label").str.starts_with("again")).height == 2
    new = graph(ids, refined=True)
    assert DeltaMetadataStore(tmp_path / "many", project="p").resolve_update(EMB, graph=new).counts() == {
        "added": 12,
        "changed": 0,
        "removed": 0,
    }


def test_carry_over_resumes_without_duplicates(tmp_path):
    ids = ["uid"]
    store = build(tmp_path / "s", ids, clustered=False)
    old, new = graph(ids, refined=False), graph(ids, refined=True)
    commits: list[int] = []

    def crash_after_two(rows: int) -> None:
        commits.append(rows)
        if len(commits) == 2:
            raise KeyboardInterrupt("simulated crash between buckets")

    args = {
        "old_graph": old,
        "new_graph": new,
        "write_id": "w",
        "snapshot_version": "s",
        "partition_rows": 70,
    }
    with pytest.raises(KeyboardInterrupt):
        carry_over(store, new.spec(EMB), on_commit=crash_after_two, **args)
    version = new.feature_version(EMB)
    carried = store.read_metadata(EMB, graph=new, include_history=True).filter(
        pl.col(FEATURE_VERSION) == version
    )
    partial = carried.collect().height
    assert 0 < sum(commits[:2]) <= partial < 588  # a write already under way when it crashed may also land
    again = carry_over(store, new.spec(EMB), **args)
    assert again.rows == 588 - partial
    assert carry_over(store, new.spec(EMB), **args).rows == 0
    history = store.read_metadata(EMB, graph=new, include_history=True).collect()
    at_new = history.filter(pl.col(FEATURE_VERSION) == new.feature_version(EMB))
    assert at_new.height == 588 and at_new["uid"].n_unique() == 588


def test_dry_run_counts_and_writes_nothing(tmp_path):
    ids = ["uid"]
    store = build(tmp_path / "s", ids, clustered=False)
    old, new = graph(ids, refined=False), graph(ids, refined=True)
    version = store.table_version(EMB)
    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id=None,
        snapshot_version="s",
        dry_run=True,
        partition_rows=50,
    )
    assert result.rows == 588 and result.missing == 0 and store.table_version(EMB) == version


@pytest.mark.parametrize("ids", [["uid"], ["video", "frame"]])
@pytest.mark.parametrize("clustered", [True, False])
def test_bucketed_resolve_update_equals_single_query(tmp_path, ids, clustered):
    store = build(tmp_path / "s", ids, clustered=clustered)
    new = graph(ids, refined=True)
    plain = store.resolve_update(EMB, graph=new).collect()
    store.partition_rows = 100
    inc = store.resolve_update(EMB, graph=new)
    assert "metaxy resolve_update" in inc.added.explain()
    bucketed = inc.collect()
    for name in ("added", "changed", "removed"):
        a, b = getattr(plain, name).sort(ids), getattr(bucketed, name).sort(ids)
        assert a.equals(b), name
    assert (plain.added.height, plain.changed.height) == (12, 588)
    # projections, filters and head are pushed into the buckets
    assert inc.changed.select(ids).filter(pl.col(ids[0]) < "0002").collect().height == len(
        [r for r in plain.changed[ids[0]].to_list() if r < "0002"]
    )
    assert inc.changed.head(5).collect().height == 5
    # samples= restricts (and is bucketed too)
    wanted = numbered_ids(list(range(0, 600, 3)), ids).select(ids)
    a = store.resolve_update(EMB, graph=new, samples=wanted).collect()
    store.partition_rows = 10**9
    b = store.resolve_update(EMB, graph=new, samples=wanted).collect()
    for name in ("added", "changed", "removed"):
        assert getattr(a, name).sort(ids).equals(getattr(b, name).sort(ids)), name


def test_native_append_is_a_regular_delta_commit(tmp_path):
    ids = ["uid"]
    store = build(tmp_path / "s", ids, clustered=True)
    _, new = graph(ids, refined=False), graph(ids, refined=True)
    carried(store, ids, partition_rows=200)
    uri = store.table_uri(EMB)
    table = DeltaTable(uri)
    history = table.history()
    assert any(h.get("operation") in ("WRITE", "CREATE TABLE") for h in history)
    # delta-rs (DataFusion) reads the polars-written files, with the log's statistics
    count = (
        QueryBuilder()
        .register("t", table)
        .execute(f"select count(*) as n from t where metaxy_feature_version = '{new.feature_version(EMB)}'")
    )
    assert pl.DataFrame(count.read_all())["n"][0] == 588
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    assert actions["num_records"].null_count() == 0
    # compaction keeps every row
    before = pl.scan_delta(uri).select(pl.len()).collect().item()
    table.optimize.compact()
    assert pl.scan_delta(uri).select(pl.len()).collect().item() == before


def test_layout_and_newest_rows():
    frame = pl.DataFrame(
        {
            "uid": ["a", "b", "b", "c", "c"],
            CREATED_AT: [1, 1, 2, 5, 5],
            "v": [1, 2, 3, 4, 5],
        }
    ).with_columns(pl.col(CREATED_AT).cast(pl.Datetime("us", "UTC")))
    out = newest_rows(frame, ["uid"]).sort("uid")
    assert out["uid"].to_list() == ["a", "b", "c"] and out["v"].to_list()[:2] == [1, 3]
    no_overlap = Layout(
        4, pl.DataFrame({"lo": ["a", "m"], "hi": ["f", "z"], "n": [2, 2]}), single_writes=True
    )
    overlap = Layout(4, pl.DataFrame({"lo": ["a", "e"], "hi": ["f", "z"], "n": [2, 2]}), single_writes=True)
    assert not no_overlap.may_repeat and overlap.may_repeat and Layout(4, None).may_repeat
    compacted = Layout(4, pl.DataFrame({"lo": ["a"], "hi": ["z"], "n": [4]}), single_writes=False)
    assert compacted.may_repeat  # a compacted file may hold several writes of one sample
    part = plan(Layout(4, pl.DataFrame({"lo": ["a", "m"], "hi": ["f", "z"], "n": [2, 2]})), ["uid"], 2)
    assert part.mode == "range" and part.boundaries.to_list() == ["m"]
    assert no_overlap.read_rows(part.boundaries) == 4 and overlap.read_rows(part.boundaries) == 6


@pytest.mark.parametrize("clustered", [True, False])
def test_collecting_a_bucketed_increment_compares_each_bucket_once(tmp_path, monkeypatch, clustered):
    """``collect()`` runs one comparison per bucket for all three frames (not one per frame and bucket), with
    the same rows as collecting each frame on its own, including added and removed samples."""
    from metaxy_core.store import increment

    ids = ["uid"]
    store = build(tmp_path / "s", ids, clustered=clustered)
    old, new = graph(ids, refined=False), graph(ids, refined=True)
    # samples stored without upstream rows: removed
    store.write_metadata(
        EMB,
        numbered_emb_rows([900, 901, 902], "x", ids, score=True, provenance=True),
        graph=old,
    )
    store.partition_rows = 100
    inc = store.resolve_update(EMB, graph=new)
    separately = [getattr(inc, name).collect().sort(ids) for name in ("added", "changed", "removed")]
    calls: list[int] = []
    original = increment.compare_collected
    monkeypatch.setattr(increment, "compare_collected", lambda *a, **k: calls.append(1) or original(*a, **k))
    together = store.resolve_update(EMB, graph=new).collect()
    assert isinstance(inc, increment.OnePassIncrement) and len(calls) >= 2
    for name, alone in zip(("added", "changed", "removed"), separately, strict=True):
        assert getattr(together, name).sort(ids).equals(alone), name
    assert (together.added.height, together.changed.height, together.removed.height) == (12, 588, 3)
    # a single query (small input) collects its three frames in one pass too, with the same rows
    store.partition_rows = 10**9
    single = store.resolve_update(EMB, graph=new)
    assert isinstance(single, increment.OnePassIncrement)
    one_pass = single.collect()
    for name in ("added", "changed", "removed"):
        alone = getattr(single, name).collect().sort(ids)
        assert getattr(one_pass, name).sort(ids).equals(alone) and alone.equals(
            getattr(together, name).sort(ids)
        )


def test_newest_rows_returns_a_frame_without_repeated_samples_as_it_is():
    """One row per sample is proven by distinct id hashes (no grouping, no copy); composite ids with nulls
    and ids that differ only in one column are distinct samples, and a real repeat is still resolved."""
    unique = pl.DataFrame(
        {"video": ["a", "a", None, None, "b"], "frame": [1, 2, 1, None, None], CREATED_AT: [1, 1, 1, 1, 1]}
    ).with_columns(pl.col(CREATED_AT).cast(pl.Datetime("us", "UTC")))
    assert newest_rows(unique, ["video", "frame"]) is unique
    repeated = pl.concat([unique, unique.tail(1).with_columns(pl.col(CREATED_AT).dt.offset_by("1s"))])
    newest = newest_rows(repeated, ["video", "frame"])
    assert newest.height == 5 and newest.filter(pl.col("video") == "b")[CREATED_AT].dt.second().item() == 1
    single = pl.DataFrame({"uid": ["x", "y", "x"], CREATED_AT: [1, 2, 3]}).with_columns(
        pl.col(CREATED_AT).cast(pl.Datetime("us", "UTC"))
    )
    assert newest_rows(single, ["uid"]).sort("uid")["uid"].to_list() == ["x", "y"]
