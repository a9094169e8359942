"""The rollback job: undo a migration from Dagster, recorded as an observation on its asset."""

from __future__ import annotations

import dagster as dg
import pytest
from metaxy_dg_testkit import CLIP, EMB, Project

from metaxy_core.migrations import MigrationExecutor
from metaxy_dagster import (
    APPLY_JOB_NAME,
    ROLLBACK_JOB_NAME,
    MetaxyRunError,
    build_migration_definitions,
    run_config_for,
)

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"


def _run(project: Project, instance, job: str, **config) -> dg.ExecuteInProcessResult:
    defs = build_migration_definitions(config_path=project.config_path)
    with project.active():
        return defs.resolve_job_def(job).execute_in_process(instance=instance, **config)


def _rollback_config(migration_id: str, *, dry_run: bool, cascade: bool = False) -> dict:
    config = run_config_for(dry_run=dry_run)
    config["ops"] = {"metaxy_rollback": {"config": {"migration_id": migration_id, "cascade": cascade}}}
    return config


def _statuses(project: Project) -> dict[str, str]:
    states = MigrationExecutor(project.store(), graph=project.code_graph).states()
    return {m: states[m].status if m in states else "not_started" for m in (M1, M2)}


def test_rollback_job_dry_run_plans_and_writes_nothing(project: Project, instance) -> None:
    assert _run(project, instance, APPLY_JOB_NAME).success
    versions = project.table_versions()
    result = _run(project, instance, ROLLBACK_JOB_NAME, run_config=_rollback_config(M2, dry_run=True))
    assert result.success
    assert project.table_versions() == versions
    observations = {
        e.asset_observation_data.asset_observation.asset_key: e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    }
    observation = observations.pop(dg.AssetKey(["metaxy", "migrations", M2]))
    assert observation.metadata["metaxy/rollback"].value == "planned"
    assert observation.metadata["metaxy/rows_hidden_by_feature"].value == {EMB: 5, CLIP: 5}
    # each feature table the rollback would change gets the plan as an observation, never a materialization
    assert set(observations) == {dg.AssetKey(EMB.split("/")), dg.AssetKey(CLIP.split("/"))}
    for plan in observations.values():
        assert plan.metadata["metaxy/rollback"].value == "planned"
        assert plan.metadata["metaxy/rows_hidden"].value == 5
    assert not result.asset_materializations_for_node("metaxy_rollback")
    assert _statuses(project) == {M1: "completed", M2: "completed"}


def test_rollback_job_undoes_the_head_and_the_asset_history_records_it(project: Project, instance) -> None:
    assert _run(project, instance, APPLY_JOB_NAME).success
    assert project.rows_at(EMB, 3) == 5
    result = _run(project, instance, ROLLBACK_JOB_NAME, run_config=_rollback_config(M2, dry_run=False))
    assert result.success
    assert project.rows_at(EMB, 3) == 0 and project.rows_at(EMB, 2) == 5
    assert _statuses(project) == {M1: "completed", M2: "not_started"}
    records = instance.fetch_observations(dg.AssetKey(["metaxy", "migrations", M2]), limit=50).records
    ours = [r for r in records if r.run_id == result.run_id]  # the instance is shared by the session's tests
    assert [r.asset_observation.metadata["metaxy/rollback"].value for r in ours] == ["rolled_back"]
    # the feature tables whose latest view changed are materialized: rows hidden, the old rows restored
    for feature in (EMB, CLIP):
        [record] = [
            r
            for r in instance.fetch_materializations(dg.AssetKey(feature.split("/")), limit=50).records
            if r.run_id == result.run_id
        ]
        meta = {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}
        assert meta["metaxy/migration_id"] == M2 and meta["metaxy/rollback"] == "rolled_back"
        assert meta["metaxy/rows_hidden"] == 5 and meta["metaxy/rows_restored"] == 5
    # Applying again brings the migration back.
    assert _run(project, instance, APPLY_JOB_NAME).success
    assert project.rows_at(EMB, 3) == 5 and _statuses(project) == {M1: "completed", M2: "completed"}


def test_rollback_job_refuses_a_migration_with_an_applied_child_unless_cascading(
    project: Project, instance
) -> None:
    assert _run(project, instance, APPLY_JOB_NAME).success
    versions = project.table_versions()
    with pytest.raises(MetaxyRunError, match=rf"later migration\(s\) {M2} were applied on top of it"):
        _run(project, instance, ROLLBACK_JOB_NAME, run_config=_rollback_config(M1, dry_run=False))
    assert project.table_versions() == versions
    result = _run(
        project, instance, ROLLBACK_JOB_NAME, run_config=_rollback_config(M1, dry_run=False, cascade=True)
    )
    assert result.success
    assert _statuses(project) == {M1: "not_started", M2: "not_started"}
    assert project.rows_at(EMB, 1) == 5 and project.rows_at(EMB, 3) == 0


def test_rollback_job_reports_a_broken_config_file_as_a_metaxy_failure(project: Project, instance) -> None:
    defs = build_migration_definitions(config_path=project.config_path)
    with project.active():
        project.config_path.write_text("project = \n")  # broken after the code location loaded
        with pytest.raises(MetaxyRunError, match=rf"{project.config_path}: not valid TOML"):
            defs.resolve_job_def(ROLLBACK_JOB_NAME).execute_in_process(
                instance=instance, run_config=_rollback_config(M2, dry_run=True)
            )
