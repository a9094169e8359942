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
    """Observations of migration assets (a plan also observes the feature assets: feature_observations)."""
    return [o for o in all_observations(result) if o.asset_key.path[:2] == ["metaxy", "migrations"]]


def feature_observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [o for o in all_observations(result) if o.asset_key.path[:2] != ["metaxy", "migrations"]]


def all_observations(result: dg.ExecuteInProcessResult) -> list[dg.AssetObservation]:
    return [e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()]


def test_plan_job_writes_nothing_and_plans_the_whole_chain(project: Project, instance) -> None:
    before = project.table_versions()
    assert any(name.startswith("_metaxy_system/") for name in before)
    result = run(project, instance, PLAN_JOB_NAME)  # the plan job only plans: it takes no dry_run
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
    # the feature assets are observed with the rows each migration would write there, never materialized
    planned = {
        (o.asset_key.to_user_string(), o.metadata["metaxy/migration_id"].value)
        for o in feature_observations(result)
    }
    assert planned == {(EMB, M1), (CLIP, M1), (EMB, M2), (CLIP, M2)}
    rows = {
        (o.asset_key.path[-1], o.metadata["metaxy/migration_id"].value): o.metadata[
            "metaxy/rows_planned"
        ].value
        for o in feature_observations(result)
    }
    assert (
        rows[("embeddings", M1)] == 5 and rows[("embeddings", M2)] == 0
    )  # M2 reads what M1 has not written yet


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


def test_apply_job_with_dry_run_plans_every_selected_migration_in_chain_order(
    project: Project, instance
) -> None:
    before = project.table_versions()
    result = run(project, instance, APPLY_JOB_NAME, run_config=run_config_for(dry_run=True))
    assert result.success
    assert project.table_versions() == before
    assert result.get_asset_materialization_events() == []
    # M2's steps are skipped by Dagster (M1 is not materialized), yet M2 is planned: by M1's last op
    assert [o.asset_key for o in observations(result)] == [KEY1, KEY2]
    skipped = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"}
    assert f"{M2}.1_reconcile" in skipped
    plans = {o.asset_key: o.metadata for o in observations(result)}
    assert plans[KEY2]["metaxy/status"].value == "planned"
    assert plans[KEY2]["metaxy/rows_by_feature"].value == {EMB: 0, CLIP: 0}  # nothing at v2 before M1 runs
    assert result.get_asset_check_evaluations() == []
    # the same as the plan job plans
    plan = run(project, instance, PLAN_JOB_NAME)
    expected = {o.asset_key: o.metadata["metaxy/rows_by_feature"].value for o in observations(plan)}
    assert {k: m["metaxy/rows_by_feature"].value for k, m in plans.items()} == expected


def test_apply_job_dry_run_of_a_selection_plans_each_selected_migration_once(tmp_path, instance) -> None:
    project = make_project(tmp_path, code_version=4, pushed=(1, 2, 3, 4), migrations=((1, 2), (2, 3), (3, 4)))
    m3 = "20250103_000000_emb_v3_to_v4"
    key3 = dg.AssetKey(["metaxy", "migrations", m3])
    # a selection with a gap: M1 and M3 are roots (no selected parent) and both run; M2 is not selected
    result = run(
        project,
        instance,
        APPLY_JOB_NAME,
        run_config=run_config_for(dry_run=True),
        asset_selection=[KEY1, key3],
    )
    assert result.success
    assert sorted(o.asset_key.path[-1] for o in observations(result)) == [M1, m3]
    # the whole chain selected: M1 runs, M2 and M3 are planned by M1's last op, in chain order
    result = run(project, instance, APPLY_JOB_NAME, run_config=run_config_for(dry_run=True))
    assert [o.asset_key.path[-1] for o in observations(result)] == [M1, M2, m3]
    assert result.get_asset_materialization_events() == []


def test_plan_job_refuses_dry_run_false_at_config_validation(project: Project, instance) -> None:
    before = project.table_versions()
    defs = build_migration_definitions(config_path=project.config_path)
    job = defs.resolve_job_def(PLAN_JOB_NAME)
    with pytest.raises(dg.DagsterInvalidConfigError, match="unexpected config entr.*dry_run"):
        dg.validate_run_config(job, run_config_for(dry_run=False))
    with project.active(), pytest.raises(dg.DagsterInvalidConfigError):
        job.execute_in_process(instance=instance, run_config=run_config_for(dry_run=False))
    assert project.table_versions() == before  # refused before any run existed
    assert MetaxyPlanOnlyError.__doc__  # still raised by an op that is somehow run outside an asset job


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


def test_dry_run_is_run_config_of_the_apply_job_and_the_plan_job_needs_none(project: Project) -> None:
    defs = build_migration_definitions(config_path=project.config_path)
    apply_job = defs.resolve_job_def(APPLY_JOB_NAME)
    for dry_run in (True, False):
        dg.validate_run_config(apply_job, run_config_for(dry_run=dry_run))
    dg.validate_run_config(apply_job, {"resources": {"metaxy_run": {"config": {"dry_run": True}}}})
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(
            apply_job, {"resources": {"metaxy_run": {"config": {"dry_run": "yes please"}}}}
        )
    dg.validate_run_config(defs.resolve_job_def(PLAN_JOB_NAME), {})
