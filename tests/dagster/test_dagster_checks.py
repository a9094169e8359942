"""Blocking "verified" checks: pass after a correct apply, fail on a tampered store, stop the children."""

from __future__ import annotations

import dagster as dg
import polars as pl
from metaxy_dg_testkit import EMB, RAW, Project

from metaxy_core.migrations import load_chain
from metaxy_dagster import APPLY_JOB_NAME, build_migration_definitions, verify_migration

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"
KEY1, KEY2 = dg.AssetKey(["metaxy", "migrations", M1]), dg.AssetKey(["metaxy", "migrations", M2])


def apply(project: Project, instance, **kwargs) -> dg.ExecuteInProcessResult:
    defs = build_migration_definitions(config_path=project.config_path)
    with project.active():
        return defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False, **kwargs
        )


def tamper(project: Project, old_version: int, sample: str = "s9") -> None:
    """A new sample whose embeddings were written by old code after the migration ran."""
    store = project.store()
    raw = pl.DataFrame(
        {
            "sample_uid": [sample],
            "path": ["s3://videos/late.mp4"],
            "metaxy_provenance_by_field": [{"frames": "f-late", "audio": "a-late"}],
        }
    )
    store.write_metadata(RAW, raw, graph=project.graph(project.code_version))
    store.write_metadata(
        EMB, pl.DataFrame({"sample_uid": [sample], "dim": [512]}), graph=project.graph(old_version)
    )


def checks(result: dg.ExecuteInProcessResult) -> dict[dg.AssetKey, dg.AssetCheckEvaluation]:
    return {e.asset_key: e for e in result.get_asset_check_evaluations()}


def test_checks_pass_after_apply(project: Project, instance) -> None:
    result = apply(project, instance)
    assert result.success
    evaluations = checks(result)
    assert set(evaluations) == {KEY1, KEY2}
    for evaluation in evaluations.values():
        assert evaluation.passed
        assert evaluation.metadata["metaxy/left_at_old_version"].value == {}
        assert evaluation.metadata["metaxy/checked_features"].value == [EMB, "video/clip_scores"]


def test_check_fails_on_a_tampered_store(project: Project, instance) -> None:
    assert apply(project, instance).success
    tamper(project, old_version=2)
    result = apply(project, instance)  # both migrations are no-ops; the checks run again
    assert not result.success
    evaluations = checks(result)
    assert evaluations[KEY1].passed
    assert not evaluations[KEY2].passed
    assert evaluations[KEY2].metadata["metaxy/left_at_old_version"].value == {EMB: 1}
    assert "still only at the old feature version" in evaluations[KEY2].description
    assert evaluations[KEY2].severity == dg.AssetCheckSeverity.ERROR


def test_failed_blocking_check_stops_the_children(project: Project, instance) -> None:
    assert apply(project, instance, asset_selection=[KEY1]).success
    tamper(project, old_version=1)
    result = apply(project, instance)
    assert not result.success
    assert not checks(result)[KEY1].passed
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [KEY1]  # the no-op of m1 only
    started = [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]
    assert not [s for s in started if M2 in s]
    assert project.rows_at(EMB, 3) == 0  # m2 never ran


def test_verify_migration_not_applied(project: Project) -> None:
    chain = load_chain(project.migrations_dir)
    with project.active():
        verification = verify_migration(project.store(), chain.get(M1), graph=project.code_graph)
    assert not verification.passed
    assert verification.status == "not_started"
    assert f"migration {M1} is not started" in verification.description
    assert f"`metaxy migrations apply {M1}`" in verification.description
