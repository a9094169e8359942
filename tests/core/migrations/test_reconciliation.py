"""DataVersionReconciliation on real Delta stores: what it keeps, what it computes and what it leaves
alone."""

from __future__ import annotations

import mxtest_support as s
import polars as pl
import pytest

from metaxy_core.migrations import MigrationExecutor, load_chain
from metaxy_core.store.provenance import (
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    SNAPSHOT_VERSION,
    SYSTEM_COLUMNS,
    WRITE_ID,
)

MID = "20250401_000000_reconcile"


def apply(store, mig_dir, g1, g2, ops=None):
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version, ops=ops)
    store.push_snapshot(g2, project=s.PROJECT)
    executor = MigrationExecutor(store, graph=g2)
    [result] = executor.apply(load_chain(mig_dir))
    return result, executor


def assert_provenance_is_fresh(store, graph, feature):
    """Stored provenance equals what resolve_update computes from the upstream rows now."""
    spec = graph.spec(feature)
    stored = store.read_metadata(feature, graph=graph).collect()
    expected = store.expected_provenance(spec, graph).collect()
    both = stored.join(expected, on=s.IDS, how="inner", suffix="_expected")
    assert both.height == stored.height  # every stored row has its upstream rows
    assert both[PROVENANCE_BY_FIELD].to_list() == both[f"{PROVENANCE_BY_FIELD}_expected"].to_list()
    assert both[PROVENANCE].to_list() == both[f"{PROVENANCE}_expected"].to_list()
    assert store.resolve_update(feature, graph=graph).collect().changed.height == 0


def test_every_user_column_survives_with_its_values(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    store.write_metadata(s.RAW, s.raw_rows(30), graph=g1)
    todo = store.resolve_update(s.EMB, graph=g1).collect().added.sort(s.IDS)
    rows = s.user_columns(todo).with_columns(
        pl.struct(pl.col("score").alias("x"), pl.col("label").alias("y")).alias("nested"),
        pl.when(pl.col("frame_idx") % 3 == 0)
        .then(None)
        .otherwise(pl.col("frame_idx"))
        .alias("sometimes_null"),
        pl.col("score").cast(pl.Float32).alias("small_float"),
    )
    store.write_metadata(s.EMB, rows, graph=g1)
    store.push_snapshot(g1, project=s.PROJECT)
    old = s.latest(store, g1, s.EMB)

    result, _ = apply(store, mig_dir, g1, g2)
    assert result.rows_by_feature() == {s.EMB: 30}
    new = s.latest(store, g2, s.EMB)
    assert set(new.columns) == set(old.columns)
    user = [c for c in old.columns if c not in SYSTEM_COLUMNS]
    assert {"score", "label", "tags", "nested", "sometimes_null", "small_float"} <= set(user)
    assert new.select(user).equals(old.select(user))
    assert new.schema == old.select(new.columns).schema  # dtypes unchanged (f32, list, struct, nullable int)
    assert (new[FEATURE_VERSION] == g2.feature_version(s.EMB)).all()
    assert (new[SNAPSHOT_VERSION] == g2.snapshot_version).all()
    assert (new[PROVENANCE] != old[PROVENANCE]).all()


def test_joins_on_the_features_composite_id_columns_and_provenance_is_fresh(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=60, n_emb=60)
    apply(store, mig_dir, g1, g2)
    new = s.latest(store, g2, s.EMB)
    assert new.height == 60 and new.select(s.IDS).n_unique() == 60
    assert new["video_id"].n_unique() == 6 and new["frame_idx"].n_unique() == 10  # neither id alone is unique
    # the user columns still belong to the right (video_id, frame_idx)
    assert new.select(s.IDS, *s.USER_COLUMNS).equals(
        s.user_columns(new.select(s.IDS)).select(s.IDS, *s.USER_COLUMNS)
    )
    assert_provenance_is_fresh(store, g2, s.EMB)
    # default data versions follow the new provenance
    assert new[DATA_VERSION].to_list() == new[PROVENANCE].to_list()
    assert new[DATA_VERSION_BY_FIELD].to_list() == new[PROVENANCE_BY_FIELD].to_list()


def test_samples_that_never_had_a_downstream_row_are_not_written(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=40, n_emb=25)
    computed = s.latest(store, g1, s.EMB).select(s.IDS)
    result, _ = apply(store, mig_dir, g1, g2)
    assert result.rows_by_feature() == {s.EMB: 25}
    assert s.latest(store, g2, s.EMB).select(s.IDS).equals(computed)
    assert s.stored_rows(store, g2, s.EMB).height == 50  # 25 old + 25 reconciled, nothing else
    increment = store.resolve_update(s.EMB, graph=g2).collect()
    assert (increment.added.height, increment.changed.height) == (15, 0)  # still to compute, as before


def test_samples_already_recomputed_at_the_new_version_are_left_alone(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=30, n_emb=30)
    early = store.resolve_update(s.EMB, graph=g2).collect().changed.sort(s.IDS).head(4)
    store.write_metadata(
        s.EMB, s.user_columns(early).with_columns(pl.lit("recomputed").alias("label")), graph=g2
    )
    result, _ = apply(store, mig_dir, g1, g2)
    assert result.rows_by_feature() == {s.EMB: 26}
    new = s.latest(store, g2, s.EMB)
    assert new.height == 30 and new.filter(pl.col("label") == "recomputed").height == 4
    assert_provenance_is_fresh(store, g2, s.EMB)


def test_custom_data_versions_are_kept_while_provenance_is_recomputed(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    store.write_metadata(s.RAW, s.raw_rows(10), graph=g1)
    todo = store.resolve_update(s.EMB, graph=g1).collect().added
    content = pl.struct(pl.lit("sha-e").alias("embedding"), pl.lit("sha-s").alias("sync")).alias(
        DATA_VERSION_BY_FIELD
    )
    store.write_metadata(s.EMB, s.user_columns(todo).with_columns(content), graph=g1)
    store.push_snapshot(g1, project=s.PROJECT)
    old = s.latest(store, g1, s.EMB)
    apply(store, mig_dir, g1, g2)
    new = s.latest(store, g2, s.EMB)
    assert new[DATA_VERSION_BY_FIELD].to_list() == [{"embedding": "sha-e", "sync": "sha-s"}] * 10
    assert new[DATA_VERSION].to_list() == old[DATA_VERSION].to_list()
    assert_provenance_is_fresh(store, g2, s.EMB)


def test_two_levels_of_downstream_features_are_reconciled_upstream_first(store, mig_dir):
    g1, g2 = s.make_graph(emb="1", summary="1"), s.make_graph(emb="2", summary="1")
    s.seed(store, g1, n_raw=20, n_emb=20)
    s.write_downstream(store, g1, s.SUMMARY, 12)
    store.push_snapshot(g1, project=s.PROJECT)
    result, _ = apply(store, mig_dir, g1, g2)
    assert [(st.feature_key, st.rows) for st in result.steps] == [(s.EMB, 20), (s.SUMMARY, 12)]
    for feature in (s.EMB, s.SUMMARY):
        assert_provenance_is_fresh(store, g2, feature)
    assert store.resolve_update(s.SUMMARY, graph=g2).counts() == {"added": 8, "changed": 0, "removed": 0}


def test_changed_root_is_reported_for_recompute_without_failing_unrelated_features(store, mig_dir):
    g1 = s.make_graph(emb="1", audio_src="1")
    g2 = s.make_graph(emb="2", audio_src="2")
    s.seed(store, g1, n_raw=20, n_emb=20, n_audio=10)
    result, executor = apply(store, mig_dir, g1, g2)
    assert result.status == "completed"
    steps = {st.feature_key: st for st in result.steps}
    assert list(steps) == [s.AUDIO_SRC, s.AUDIO_FEAT, s.EMB]
    assert steps[s.AUDIO_SRC].status == "recompute_required" and steps[s.AUDIO_SRC].rows == 0
    assert "root feature audio/source changed" in steps[s.AUDIO_SRC].note
    assert "recompute this feature" in steps[s.AUDIO_SRC].note
    assert result.recompute_required == [s.AUDIO_SRC]
    # its downstream has nothing to join with yet: nothing carried over, and the note says so
    assert steps[s.AUDIO_FEAT].status == "completed" and steps[s.AUDIO_FEAT].rows == 0
    assert "10 sample(s) of audio/feat have no upstream rows at the new version" in steps[s.AUDIO_FEAT].note
    # the unrelated feature was reconciled
    assert steps[s.EMB].status == "completed" and steps[s.EMB].rows == 20
    assert_provenance_is_fresh(store, g2, s.EMB)
    state = executor.state(MID)
    assert state.status == "completed"
    assert state.steps[(0, s.AUDIO_SRC)].status == "recompute_required" and state.steps[(0, s.AUDIO_SRC)].done


def test_a_second_operation_on_the_same_feature_runs(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=20, n_emb=20)
    ops = [
        {"type": s.RECONCILE},
        {"type": "mxtest_ops.Relabel", "id": "relabel", "feature_key": s.EMB, "new_label": "relabelled"},
        {"type": s.RECONCILE, "id": "reconcile_again"},
    ]
    result, executor = apply(store, mig_dir, g1, g2, ops)
    assert [(st.op_index, st.op_id, st.feature_key, st.status, st.rows) for st in result.steps] == [
        (0, "reconcile", s.EMB, "completed", 20),
        (1, "relabel", s.EMB, "completed", 20),
        (2, "reconcile_again", s.EMB, "completed", 0),
    ]
    state = executor.state(MID)
    assert sorted(state.steps) == [(0, s.EMB), (1, s.EMB), (2, s.EMB)]
    assert state.steps[(1, s.EMB)].write_id == f"{MID}/1/video__emb"
    new = s.latest(store, g2, s.EMB)
    assert new["label"].unique().to_list() == ["relabelled"]
    assert (new[WRITE_ID] == f"{MID}/1/video__emb").all()
    assert_provenance_is_fresh(store, g2, s.EMB)


def test_backfill_and_reconciliation_compose_in_one_migration(store, mig_dir):
    g1, g2 = s.make_graph(emb="1", caption="1"), s.make_graph(emb="2", caption="1")
    s.seed(store, g1, n_raw=20, n_emb=20, n_caption=20)
    ops = [
        {"type": "mxtest_ops.BackfillRaw", "feature_key": ["video", "raw"], "start": 500, "count": 6},
        {"type": s.RECONCILE},
    ]
    result, executor = apply(store, mig_dir, g1, g2, ops)
    assert [(st.op_id, st.feature_key, st.rows) for st in result.steps] == [
        ("backfill_raw", s.RAW, 6),
        ("reconcile", s.EMB, 20),
    ]
    assert executor.state(MID).steps[(0, s.RAW)].writes == {s.RAW: 6}
    assert s.latest(store, g2, s.RAW).height == 26
    assert s.latest(store, g2, s.EMB).height == 20  # backfilled samples are not invented downstream
    assert_provenance_is_fresh(store, g2, s.EMB)
    assert store.resolve_update(s.EMB, graph=g2).counts() == {"added": 6, "changed": 0, "removed": 0}
    assert store.resolve_update(s.CAPTION, graph=g2).counts() == {"added": 6, "changed": 0, "removed": 0}


@pytest.mark.parametrize("batch_rows", [7, 1000])
def test_small_batches_write_the_same_rows_as_one_batch(store, mig_dir, batch_rows):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=50, n_emb=50)
    version = store.table_version(s.EMB)
    s.write_migration(mig_dir, MID, from_=g1.snapshot_version, to=g2.snapshot_version)
    store.push_snapshot(g2, project=s.PROJECT)
    [result] = MigrationExecutor(store, graph=g2, batch_rows=batch_rows).apply(load_chain(mig_dir))
    assert result.rows_total == 50
    commits = store.table_version(s.EMB) - version
    assert commits == (8 if batch_rows == 7 else 1)  # one Delta commit per batch
    assert s.latest(store, g2, s.EMB).height == 50
    assert_provenance_is_fresh(store, g2, s.EMB)
