"""Dry runs: write nothing, record no materialization, attach the plan to the assets as observations."""

from __future__ import annotations

import dagster as dg
import pytest
from metaxy_dg_testkit import CLIP, EMB, Project, make_project

from metaxy_core.migrations import MigrationExecutor
from metaxy_dagster import (
    APPLY_JOB_NAME,
    PLAN_JOB_NAME,
    MetaxyPlanOnlyError,
    build_migration_definitions,
    run_config_for,
)

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"
KEY1, KEY2 = dg.AssetKey(["metaxy", "migrations", M1]), dg.AssetKey(["metaxy", "migrations", M2])


def run(project: Project, instance, job: str, **kwargs) -> dg.ExecuteInProcessResult:
    defs = build_migration_definitions(config_path=project.config_path)
    with project.active():
        return defs.resolve_job_def(job).execute_in_process(instance=instance, **kwargs)


def observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()]


def test_plan_job_writes_nothing_and_plans_the_whole_chain(project: Project, instance) -> None:
    before = project.table_versions()
    assert any(name.startswith("_metaxy_system/") for name in before)
    result = run(project, instance, PLAN_JOB_NAME)  # dry_run: true is the plan job's default run config
    assert result.success
    assert project.table_versions() == before  # every Delta table, system tables included, is untouched
    assert result.get_asset_materialization_events() == []
    assert not [e for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
    plans = {o.asset_key: o.metadata for o in observations(result)}
    assert set(plans) == {KEY1, KEY2}
    first = plans[KEY1]
    assert first["metaxy/dry_run"].value is True
    assert first["metaxy/status"].value == "planned"
    assert first["metaxy/features"].value == [EMB, CLIP]
    # Clip scores can only be carried over once the embeddings are (same operation): the plan estimates them
    # from the embeddings it will carry over, as the apply does, and says so.
    assert first["metaxy/rows_by_feature"].value == {EMB: 5, CLIP: 5}
    assert "estimated: video/embeddings carried over earlier in this migration" in first["metaxy/notes"].value
    assert first["metaxy/operation"].value == "1/1 reconcile"
    assert {r.data["status"] for r in first["metaxy/steps"].value.records} == {"planned"}
    assert MigrationExecutor(project.store(), graph=project.code_graph).states() == {}
    assert instance.get_run_by_id(result.run_id).tags["metaxy/migrations"] == "plan"
    # the observation is on the asset, for the UI's asset page
    records = instance.fetch_observations(KEY1, limit=10).records
    assert any(r.run_id == result.run_id for r in records)
    materialized = instance.fetch_materializations(KEY1, limit=1000).records
    assert not [r for r in materialized if r.run_id == result.run_id]


def test_plan_reports_roots_that_need_a_recompute(tmp_path, instance) -> None:
    project = make_project(tmp_path, migrations=((1, 2),))
    # a root feature changes: raw's frames field gets a new code version in the target graph
    from metaxy_core import Feature, FeatureGraph, FeatureSpec, FieldSpec

    changed = FeatureGraph()
    with changed.use():

        class Raw(
            Feature,
            spec=FeatureSpec(
                key="video/raw",
                id_columns=["sample_uid"],
                fields=[FieldSpec(key="frames", code_version="9"), FieldSpec(key="audio", code_version="1")],
            ),
        ):
            pass

    project.graphs[9] = changed
    store = project.store()
    store.push_snapshot(changed)
    project.write_migration(M1, parent="initial", from_version=1, to_version=9)
    result = run(project, instance, PLAN_JOB_NAME)
    assert result.success
    (plan,) = [o.metadata for o in observations(result)]
    assert plan["metaxy/recompute_required"].value == ["video/raw"]


def test_apply_job_with_dry_run_records_observation_not_materialization(project: Project, instance) -> None:
    before = project.table_versions()
    result = run(project, instance, APPLY_JOB_NAME, run_config=run_config_for(dry_run=True))
    assert result.success
    assert project.table_versions() == before
    assert result.get_asset_materialization_events() == []
    assert [o.asset_key for o in observations(result)] == [KEY1]
    # Dagster skips the steps after an asset that was not materialized (the plan job plans whole chains)
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert f"metaxy__migrations__{M2}.{M2}__1_reconcile" in skipped
    assert result.get_asset_check_evaluations() == []


def test_plan_job_refuses_to_apply(project: Project, instance) -> None:
    before = project.table_versions()
    result = run(
        project, instance, PLAN_JOB_NAME, run_config=run_config_for(dry_run=False), raise_on_error=False
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert failure.error.cls_name == MetaxyPlanOnlyError.__name__
    assert "only plans migrations" in failure.user_failure_data.description
    assert project.table_versions() == before


def test_plan_after_apply_reports_already_applied(project: Project, instance) -> None:
    assert run(project, instance, APPLY_JOB_NAME).success
    before = project.table_versions()
    assert {"_metaxy_system/migration_events", "_metaxy_system/lock", "_metaxy_system/snapshots"} <= set(
        before
    )
    result = run(project, instance, PLAN_JOB_NAME)
    assert result.success
    assert project.table_versions() == before
    assert {o.metadata["metaxy/status"].value for o in observations(result)} == {"already_applied"}


@pytest.mark.parametrize("job", [APPLY_JOB_NAME, PLAN_JOB_NAME])
def test_dry_run_is_valid_run_config_of_both_jobs(project: Project, job: str) -> None:
    defs = build_migration_definitions(config_path=project.config_path)
    job_def = defs.resolve_job_def(job)
    for dry_run in (True, False):
        dg.validate_run_config(job_def, run_config_for(dry_run=dry_run))
    dg.validate_run_config(job_def, {"resources": {"metaxy_run": {"config": {"dry_run": True}}}})
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job_def, {"resources": {"metaxy_run": {"config": {"dry_run": "yes please"}}}})
