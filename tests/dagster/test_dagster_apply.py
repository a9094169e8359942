"""Applying migrations from Dagster: chain order, store changes, no-ops, parents, resume from failure."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from metaxy_dg_testkit import CLIP, EMB, RECONCILE, Project, make_project

from metaxy_core.migrations import MigrationExecutor, load_chain
from metaxy_core.migrations.lock import StoreLock
from metaxy_dagster import (
    APPLY_JOB_NAME,
    PLAN_JOB_NAME,
    MetaxyMigrationChangedError,
    MetaxyParentNotAppliedError,
    MetaxyStoreLockedError,
    build_migration_definitions,
    run_config_for,
)

HERE = Path(__file__).resolve().parent
M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"
KEY1, KEY2 = dg.AssetKey(["metaxy", "migrations", M1]), dg.AssetKey(["metaxy", "migrations", M2])


EMB_KEY, CLIP_KEY = dg.AssetKey(EMB.split("/")), dg.AssetKey(CLIP.split("/"))


def migration_events(result: dg.ExecuteInProcessResult) -> list:
    """Materializations of migration assets (feature assets get their own, see feature_events)."""
    return [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[:2] == ["metaxy", "migrations"]
    ]


def feature_events(result: dg.ExecuteInProcessResult) -> list:
    return [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[:2] != ["metaxy", "migrations"]
    ]


def started_steps(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return [r.event_log_entry.step_key for r in records]


def apply(project: Project, instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    defs = build_migration_definitions(config_path=project.config_path)
    with project.active():
        return defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance, **kwargs)


def test_apply_materializes_in_chain_order_and_moves_the_store(project: Project, instance) -> None:
    assert project.rows_at(EMB, 3) == 0
    result = apply(project, instance)
    assert result.success
    assert [e.asset_key for e in migration_events(result)] == [KEY1, KEY2]
    steps = started_steps(instance, result.run_id)
    assert f"{M1}.1_reconcile" in steps  # short step keys: <migration id>.<n>_<operation>
    first = [i for i, s in enumerate(steps) if M1 in s.split(".")[0]]
    second = [i for i, s in enumerate(steps) if M2 in s.split(".")[0]]
    assert max(first) < min(second)  # m1's ops and check before any step of m2
    # every feature table a migration wrote got a materialization: rows, new feature version, migration id
    written = {
        (e.asset_key, md["metaxy/migration_id"].value): (
            md["metaxy/rows_written"].value,
            md["metaxy/feature_version"].value,
            md["dagster/row_count"].value,
            md["metaxy/run_id"].value,
        )
        for e in feature_events(result)
        for md in [e.materialization.metadata]
    }
    g2, g3 = project.graph(2), project.graph(3)
    assert written == {
        (EMB_KEY, M1): (5, g2.feature_version(EMB), 5, result.run_id),
        (CLIP_KEY, M1): (5, g2.feature_version(CLIP), 5, result.run_id),
        (EMB_KEY, M2): (5, g3.feature_version(EMB), 5, result.run_id),
        (CLIP_KEY, M2): (5, g3.feature_version(CLIP), 5, result.run_id),
    }
    assert project.rows_at(EMB, 3) == 5 and project.rows_at(CLIP, 3) == 5
    states = MigrationExecutor(project.store(), graph=project.code_graph).states()
    assert states[M1].status == states[M2].status == "completed"
    assert states[M2].run_id == result.run_id  # the Dagster run id is the executor's run id
    meta = migration_events(result)[1].materialization.metadata
    assert meta["metaxy/status"].value == "completed"
    assert meta["metaxy/rows"].value == 10
    assert meta["metaxy/rows_by_feature"].value == {EMB: 5, CLIP: 5}
    assert meta["metaxy/dry_run"].value is False
    assert len(meta["metaxy/steps"].value.records) == 2
    assert all(c.passed for c in result.get_asset_check_evaluations())
    run = instance.get_run_by_id(result.run_id)
    assert run.tags["metaxy/migrations"] == "apply"


def test_already_applied_migrations_are_no_ops(project: Project, instance) -> None:
    assert apply(project, instance).success
    before = project.table_versions()
    again = apply(project, instance)
    assert again.success
    events = again.get_asset_materialization_events()
    assert [e.asset_key for e in events] == [KEY1, KEY2]  # no feature table is "materialized" again
    assert {e.materialization.metadata["metaxy/status"].value for e in events} == {"already_applied"}
    assert project.table_versions() == before  # nothing written: not even the log or the lock


def test_applied_parent_does_not_block_its_child(project: Project, instance) -> None:
    chain = load_chain(project.migrations_dir)
    with project.active():
        cli = MigrationExecutor(project.store(), graph=project.code_graph)
        cli.apply(chain, M1)  # e.g. from the CLI
    cli_run = cli.run_id
    result = apply(project, instance)
    assert result.success
    statuses = [e.materialization.metadata["metaxy/status"].value for e in migration_events(result)]
    assert statuses == ["already_applied", "completed"]
    # M1's feature tables were written by the CLI: this run reports them once (Dagster had not seen them)
    writers = {
        (
            e.materialization.metadata["metaxy/migration_id"].value,
            e.materialization.metadata["metaxy/run_id"].value,
        )
        for e in feature_events(result)
    }
    assert writers == {(M1, cli_run), (M2, result.run_id)}
    again = apply(project, instance)
    assert feature_events(again) == []  # shown now: not reported again
    assert project.rows_at(EMB, 3) == 5


def test_child_alone_refuses_to_run_before_its_parent(project: Project, instance) -> None:
    result = apply(project, instance, asset_selection=[KEY2], raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.user_failure_data is not None
    assert f"migration {M2} follows {M1}, which is not started" in failure.user_failure_data.description
    assert failure.error.cls_name == MetaxyParentNotAppliedError.__name__
    assert project.rows_at(EMB, 3) == 0


def test_file_edited_after_load_is_refused(project: Project, instance) -> None:
    defs = build_migration_definitions(config_path=project.config_path)
    path = project.migrations_dir / f"{M1}.yaml"
    path.write_text(path.read_text().replace("Carry embeddings", "Carry the embeddings"))
    with project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.error.cls_name == MetaxyMigrationChangedError.__name__
    assert "changed since the Dagster code location was loaded" in failure.user_failure_data.description


def test_reexecution_from_failure_resumes_at_the_failed_operation(tmp_path: Path) -> None:
    project = make_project(tmp_path, migrations=((1, 2),))
    marker = tmp_path / "flaky-marker"
    ops = [RECONCILE, {"type": "metaxy_dg_testkit.FlakyOperation", "marker": str(marker)}]
    project.write_migration(M1, parent="initial", from_version=1, to_version=2, ops=ops)
    (project.migrations_dir / f"{M2}.yaml").unlink(missing_ok=True)
    recon = dg.build_reconstructable_job(
        reconstructor_module_name="metaxy_dg_testkit",
        reconstructor_function_name="apply_job",
        reconstructable_args=(str(project.config_path),),
        reconstructor_working_directory=str(HERE),
    )
    in_process = {"execution": {"config": {"in_process": {}}}}
    with dg.instance_for_test() as instance, project.active():
        with dg.execute_job(recon, instance=instance, run_config=in_process, raise_on_error=False) as first:
            assert not first.success
            failed = [e.step_key for e in first.get_step_failure_events()]
            assert failed == [f"{M1}.2_flaky"]
            assert started_steps(instance, first.run_id) == [f"{M1}.1_reconcile", f"{M1}.2_flaky"]
            # the first operation's writes are on the feature assets already
            assert {e.asset_key for e in first.get_asset_materialization_events()} == {EMB_KEY, CLIP_KEY}
            description = first.get_step_failure_events()[0].step_failure_data.user_failure_data.description
            assert (
                "flaky operation failing once" in description
                and "re-execute the run from failure" in description
            )
        state = MigrationExecutor(project.store(), graph=project.code_graph).state(M1)
        assert state.status == "failed" and state.step_done(0, EMB)
        assert project.rows_at(EMB, 2) == 5  # the first operation's work is kept

        options = dg.ReexecutionOptions.from_failure(run_id=first.run_id, instance=instance)
        with dg.execute_job(
            recon, instance=instance, run_config=in_process, reexecution_options=options
        ) as second:
            assert second.success
            assert started_steps(instance, second.run_id) == [
                f"{M1}.2_flaky",
                f"metaxy__migrations__{M1}_metaxy_migration_verified",
            ]
            # the resumed run records the migration, not again the rows the first run wrote
            assert [e.asset_key for e in second.get_asset_materialization_events()] == [KEY1]
    state = MigrationExecutor(project.store(), graph=project.code_graph).state(M1)
    assert state.status == "completed"
    assert project.rows_at(EMB, 2) == 5


def test_a_run_holding_the_store_lock_blocks_another(project: Project, instance) -> None:
    lock = StoreLock(project.store(), "another-run")
    lock.acquire()
    try:
        result = apply(project, instance, raise_on_error=False)
    finally:
        lock.release()
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.error.cls_name == MetaxyStoreLockedError.__name__
    assert "the store is locked by run another-run" in failure.user_failure_data.description
    assert project.rows_at(EMB, 2) == 0


CUSTOM = """\
from datetime import datetime, timezone

from metaxy_core.migrations import CustomMigration


class Stamp(CustomMigration):
    \"\"\"Record that the embeddings were audited.\"\"\"

    migration_id: str = "20250103_000000_custom"
    created_at: datetime = datetime(2025, 1, 3, tzinfo=timezone.utc)
    parent: str = "20250102_000000_emb_v2_to_v3"

    def execute(self, store, project, *, dry_run=False):
        return {"audited": 3}
"""


def test_custom_python_and_empty_migrations(project: Project, instance) -> None:
    (project.migrations_dir / "20250103_000000_custom.py").write_text(CUSTOM)
    v3 = project.graph(3).snapshot_version
    (project.migrations_dir / "20250104_000000_nothing.yaml").write_text(
        "migration_id: '20250104_000000_nothing'\ncreated_at: '2025-01-04T00:00:00+00:00'\n"
        f"parent: '20250103_000000_custom'\nfrom_snapshot_version: '{v3}'\n"
        f"to_snapshot_version: '{v3}'\nops: []\n"
    )
    defs = build_migration_definitions(config_path=project.config_path)
    custom = next(a for a in defs.assets if a.key.path[-1] == "20250103_000000_custom")
    assert [n.name for n in custom.node_def.nodes] == ["1_execute"]
    assert [n.definition.name for n in custom.node_def.nodes] == ["20250103_000000_custom__1_execute"]
    assert custom.specs_by_key[custom.key].description.startswith("Record that the embeddings were audited.")
    with project.active():
        plan = defs.resolve_job_def(PLAN_JOB_NAME).execute_in_process(instance=instance)
        assert plan.success
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance)
    assert result.success
    metadata = {e.asset_key.path[-1]: e.materialization.metadata for e in migration_events(result)}
    assert metadata["20250103_000000_custom"]["metaxy/rows"].value == 3
    assert metadata["20250104_000000_nothing"]["metaxy/status"].value == "completed"
    states = MigrationExecutor(project.store(), graph=project.code_graph).states()
    assert states["20250104_000000_nothing"].status == "completed"


def test_edited_after_a_partial_apply_needs_force(tmp_path: Path, instance) -> None:
    project = make_project(tmp_path, migrations=((1, 2),))
    marker = tmp_path / "flaky-marker"
    ops = [RECONCILE, {"type": "metaxy_dg_testkit.FlakyOperation", "marker": str(marker)}]
    path = project.write_migration(M1, parent="initial", from_version=1, to_version=2, ops=ops)
    with project.active(), pytest.raises(Exception, match="flaky operation failing once"):
        MigrationExecutor(project.store(), graph=project.code_graph).apply(load_chain(project.migrations_dir))
    path.write_text(path.read_text().replace("Carry embeddings", "Carry the embeddings"))
    refused = apply(project, instance, raise_on_error=False)
    assert not refused.success
    failure = refused.get_step_failure_events()[0].step_failure_data
    assert failure.error.cls_name == MetaxyMigrationChangedError.__name__
    assert "was edited after it was partly applied" in failure.user_failure_data.description
    assert "resources.metaxy_run.config.force: true" in failure.user_failure_data.description
    forced = apply(project, instance, run_config=run_config_for(dry_run=False, force=True))
    assert forced.success
    assert MigrationExecutor(project.store(), graph=project.code_graph).state(M1).status == "completed"


def test_ops_claim_the_migrations_pool(project: Project) -> None:
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as limited:
        result = apply(project, limited)
        assert result.success
        assert "metaxy_migrations" in limited.event_log_storage.get_concurrency_keys()
