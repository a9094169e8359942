"""The executor: dry runs, status, resuming after a failure, checksums and parent order."""

from __future__ import annotations

import mxtest_support as s
import polars as pl
import pytest

from metaxy_core.migrations import MigrationExecutor, MigrationFailed, load_chain, progress
from metaxy_core.migrations.executor import MigrationEditedError, ParentNotAppliedError
from metaxy_core.store.provenance import FEATURE_VERSION

M1, M2 = "20250501_000000_emb", "20250502_000000_caption"


@pytest.fixture
def two_step(store, mig_dir):
    """v1 -> v2 (emb bumped) -> v3 (caption bumped, plus a raw backfill): two chained migrations."""
    g1 = s.make_graph(emb="1", caption="1")
    g2 = s.make_graph(emb="2", caption="1")
    g3 = s.make_graph(emb="2", caption="2")
    s.seed(store, g1, n_raw=30, n_emb=25, n_caption=20)
    for g in (g2, g3):
        store.push_snapshot(g, project=s.PROJECT)
    s.write_migration(mig_dir, M1, from_=g1.snapshot_version, to=g2.snapshot_version)
    s.write_migration(
        mig_dir,
        M2,
        parent=M1,
        from_=g2.snapshot_version,
        to=g3.snapshot_version,
        ops=[
            {"type": "mxtest_ops.BackfillRaw", "feature_key": s.RAW, "start": 900, "count": 4},
            {"type": s.RECONCILE},
        ],
    )
    return g1, g2, g3


# ----------------------------------------------------------------------------------------- dry run
def test_dry_run_changes_no_delta_table_and_returns_rows_per_operation_and_feature(store, mig_dir, two_step):
    _, _, g3 = two_step
    chain = load_chain(mig_dir)
    MigrationExecutor(store, graph=g3).apply(chain, target=M1)
    before = s.delta_versions(store.root_uri)
    assert {
        "_metaxy_system/snapshots",
        "_metaxy_system/migration_events",
        "_metaxy_system/lock",
        "video__raw",
        "video__emb",
        "video__caption",
    } <= set(before)

    executor = MigrationExecutor(store, graph=g3)
    [plan] = executor.apply(chain, dry_run=True)
    assert plan.migration_id == M2 and plan.status == "planned" and plan.dry_run
    assert [(st.op_index, st.op_id, st.feature_key, st.status, st.rows) for st in plan.steps] == [
        (0, "backfill_raw", s.RAW, "planned", 4),
        (1, "reconcile", s.CAPTION, "planned", 20),
    ]
    assert s.delta_versions(store.root_uri) == before  # every table, system tables included
    assert executor.state(M2).status == progress.NOT_STARTED
    assert [m.migration_id for m in executor.pending(chain)] == [M2]

    [result] = executor.apply(chain)  # the real run does what the plan said
    assert [(st.feature_key, st.rows) for st in result.steps] == [
        (st.feature_key, st.rows) for st in plan.steps
    ]


def test_dry_run_on_a_fresh_store_creates_no_system_table(store, mig_dir, two_step):
    _, _, g3 = two_step
    before = s.delta_versions(store.root_uri)
    assert not any(name.startswith("_metaxy_system/migration") or name.endswith("lock") for name in before)
    plans = MigrationExecutor(store, graph=g3).apply(load_chain(mig_dir), dry_run=True)
    assert [p.migration_id for p in plans] == [M1, M2]
    assert plans[0].rows_by_feature() == {s.EMB: 25}
    assert s.delta_versions(store.root_uri) == before


def test_dry_run_of_a_partly_applied_migration_writes_nothing(store, mig_dir, two_step):
    _, _, g3 = two_step
    chain = load_chain(mig_dir)
    executor = MigrationExecutor(store, graph=g3)
    executor.apply(chain, target=M1)
    executor.run_operation(chain.get(M2), 0)
    assert executor.state(M2).status == progress.IN_PROGRESS
    before = s.delta_versions(store.root_uri)
    [plan] = executor.apply(chain, dry_run=True)
    assert plan.status == "planned" and plan.rows_by_feature() == {s.RAW: 4, s.CAPTION: 20}
    assert s.delta_versions(store.root_uri) == before
    assert executor.state(M2).status == progress.IN_PROGRESS


# ------------------------------------------------------------------------------------------ status
def test_status_moves_from_not_started_to_in_progress_to_completed_with_step_detail(store, mig_dir, two_step):
    _, _, g3 = two_step
    chain = load_chain(mig_dir)
    executor = MigrationExecutor(store, graph=g3, run_id="run-status")
    assert executor.state(M1).status == progress.NOT_STARTED and executor.states() == {}
    executor.apply(chain, target=M1)
    m2 = chain.get(M2)

    executor.run_operation(m2, 0)  # the first of two operations: in progress
    state = executor.state(M2)
    assert (
        state.status == progress.IN_PROGRESS
        and state.run_id == "run-status"
        and state.checksum == m2.checksum
    )
    assert list(state.steps) == [(0, s.RAW)]
    step = state.steps[(0, s.RAW)]
    assert (step.op_id, step.status, step.rows, step.write_id) == (
        "backfill_raw",
        "completed",
        4,
        f"{M2}/0/video__raw",
    )
    assert step.writes == {s.RAW: 4} and step.run_id == "run-status" and step.duration_s > 0

    executor.run_operation(m2, 1)  # the last one records completion
    state = executor.state(M2)
    assert state.status == progress.COMPLETED and state.finished_at is not None
    assert sorted(state.steps) == [(0, s.RAW), (1, s.CAPTION)] and state.rows == 24
    assert set(executor.states()) == {M1, M2}
    assert executor.pending(chain) == []


def test_a_rolled_back_event_makes_a_migration_pending_again(store, mig_dir, two_step):
    _, _, g3 = two_step
    chain = load_chain(mig_dir)
    executor = MigrationExecutor(store, graph=g3)
    executor.apply(chain)
    assert executor.pending(chain) == []
    progress.record(store, project=s.PROJECT, migration_id=M2, status=progress.ROLLED_BACK, run_id="manual")
    state = executor.state(M2)
    assert state.status == progress.NOT_STARTED and state.steps == {} and state.epoch == 1
    assert [m.migration_id for m in executor.pending(chain)] == [M2]
    assert executor.state(M1).status == progress.COMPLETED
    history = progress.read_events(store, s.PROJECT).filter(pl.col("migration_id") == M2)
    assert "completed" in history["status"].to_list()  # old events stay readable


def test_status_is_scoped_by_project(store, mig_dir, two_step):
    _, _, g3 = two_step
    MigrationExecutor(store, graph=g3).apply(load_chain(mig_dir), target=M1)
    other = MigrationExecutor(store, graph=g3, project="other")
    assert other.state(M1).status == progress.NOT_STARTED


# ------------------------------------------------------------------------------------------ resume
@pytest.fixture
def flaky(store, mig_dir, tmp_path):
    g1, g2 = s.make_graph(emb="1", caption="1"), s.make_graph(emb="2", caption="2")
    s.seed(store, g1, n_raw=30, n_emb=25, n_caption=20)
    store.push_snapshot(g2, project=s.PROJECT)
    log, marker = tmp_path / "calls.log", tmp_path / "failed-once"
    s.write_migration(
        mig_dir,
        M1,
        from_=g1.snapshot_version,
        to=g2.snapshot_version,
        ops=[{"type": "mxtest_ops.FlakyReconciliation", "log_file": str(log), "marker": str(marker)}],
    )
    return g2, log


def test_failure_mid_migration_is_recorded_and_a_rerun_resumes_without_redoing_steps(store, mig_dir, flaky):
    g2, log = flaky
    chain = load_chain(mig_dir)
    first = MigrationExecutor(store, graph=g2, run_id="first")
    with pytest.raises(MigrationFailed) as info:
        first.apply(chain)
    assert str(info.value) == (  # the file, the operation and feature, the method that raised, the fix
        f"{mig_dir / M1}.yaml: migration {M1}, operation reconcile on video/emb failed: "
        "FlakyReconciliation.run() raised RuntimeError: injected failure on video/emb. "
        "Completed steps are kept; fix the cause and re-run `metaxy migrations apply` to resume here."
    )
    assert info.value.result.status == "failed" and info.value.result.steps[0].feature_key == s.EMB
    state = first.state(M1)
    assert state.status == progress.FAILED and "injected failure on video/emb" in state.error
    assert state.steps[(0, s.CAPTION)].status == "completed" and state.steps[(0, s.CAPTION)].rows == 20
    assert state.steps[(0, s.EMB)].status == "failed"
    assert "RuntimeError: injected failure" in state.steps[(0, s.EMB)].error
    assert log.read_text().split() == [s.CAPTION, s.EMB]

    second = MigrationExecutor(store, graph=g2, run_id="second")
    [result] = second.apply(load_chain(mig_dir))
    assert result.status == "completed"
    assert [(st.feature_key, st.status) for st in result.steps] == [
        (s.CAPTION, "already_done"),
        (s.EMB, "completed"),
    ]
    assert log.read_text().split() == [s.CAPTION, s.EMB, s.EMB]  # caption was not run again
    assert second.state(M1).status == progress.COMPLETED
    for feature, n in ((s.CAPTION, 20), (s.EMB, 25)):
        latest = s.latest(store, g2, feature)
        assert latest.height == n and latest.select(s.IDS).n_unique() == n
        at_new_version = s.stored_rows(store, g2, feature).filter(
            pl.col(FEATURE_VERSION) == g2.feature_version(feature)
        )
        assert at_new_version.height == n  # not even the history holds duplicates
        assert store.resolve_update(feature, graph=g2).collect().changed.height == 0


def test_a_migration_waits_for_its_parent(store, mig_dir, two_step):
    _, _, g3 = two_step
    chain = load_chain(mig_dir)
    executor = MigrationExecutor(store, graph=g3)
    with pytest.raises(ParentNotAppliedError, match=f"migration {M2} follows {M1}, which is not applied yet"):
        executor.apply_migration(chain.get(M2), chain=chain)
    assert executor.state(M2).status == progress.NOT_STARTED
    results = executor.apply(chain, target=M2)  # applying up to it runs the parent first
    assert [r.migration_id for r in results] == [M1, M2]
    assert executor.apply_migration(chain.get(M1)).status == "already_applied"


# ---------------------------------------------------------------------------------------- checksum
def test_migration_edited_after_a_partial_apply_is_refused_unless_forced(store, mig_dir, two_step):
    _, _, g3 = two_step
    chain = load_chain(mig_dir)
    executor = MigrationExecutor(store, graph=g3)
    executor.apply(chain, target=M1)
    executor.run_operation(chain.get(M2), 0)
    recorded = executor.state(M2).checksum
    path = mig_dir / f"{M2}.yaml"
    path.write_text(path.read_text().replace("count: 4", "count: 5"))
    edited = load_chain(mig_dir)
    assert edited.get(M2).checksum != recorded

    with pytest.raises(MigrationEditedError) as info:
        MigrationExecutor(store, graph=g3).apply(edited)
    assert str(info.value) == (
        f"{path} was edited after it was partly applied (recorded checksum {recorded}, file now "
        f"{edited.get(M2).checksum}); revert the edit and put new work in a new migration, "
        "or pass --force to "
        "continue with the edited file"
    )
    assert executor.state(M2).status == progress.IN_PROGRESS

    [result] = MigrationExecutor(store, graph=g3, force=True).apply(edited)
    assert result.status == "completed"
    assert [(st.feature_key, st.status) for st in result.steps] == [
        (s.RAW, "already_done"),
        (s.CAPTION, "completed"),
    ]
    state = executor.state(M2)
    assert state.status == progress.COMPLETED and state.checksum == edited.get(M2).checksum
