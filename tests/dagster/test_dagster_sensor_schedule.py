"""The snapshot sensor (typed cursor, run keys, skip reasons) and the schedule's run configuration."""

from __future__ import annotations

import datetime as dt
import logging

import dagster as dg
import pytest
from metaxy_dg_testkit import Project, make_project

from metaxy_core.migrations import MigrationExecutor, load_chain
from metaxy_dagster import (
    APPLY_JOB_NAME,
    PLAN_JOB_NAME,
    MetaxyStoreResource,
    SnapshotCursor,
    build_migration_definitions,
    build_migration_schedule,
    run_config_for,
)

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"
M3 = "20250103_000000_emb_v3_to_v4"
KEY1, KEY2 = dg.AssetKey(["metaxy", "migrations", M1]), dg.AssetKey(["metaxy", "migrations", M2])
KEY3 = dg.AssetKey(["metaxy", "migrations", M3])


def tick(project: Project, instance, cursor: str | None, *, dry_run: bool = False) -> dg.SensorExecutionData:
    defs = build_migration_definitions(config_path=project.config_path, sensor_dry_run=dry_run)
    sensor = defs.resolve_sensor_def("metaxy_snapshot_sensor")
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources={"metaxy_store": MetaxyStoreResource(config_path=str(project.config_path))},
    )
    return sensor.evaluate_tick(context)


def apply_all(project: Project) -> None:
    with project.active():
        MigrationExecutor(project.store(), graph=project.code_graph).apply(load_chain(project.migrations_dir))


def test_first_tick_requests_the_pending_migrations(project: Project, instance) -> None:
    data = tick(project, instance, None)
    (request,) = data.run_requests
    snapshot = project.graph(3).snapshot_version
    assert request.run_key == f"{snapshot}:{M2}"
    assert request.asset_selection == [KEY1, KEY2]
    assert request.run_config == run_config_for(dry_run=False)
    assert request.tags["metaxy/snapshot_version"] == snapshot
    cursor = SnapshotCursor.parse(data.cursor)
    assert cursor == SnapshotCursor(snapshot_version=snapshot, chain_head=M2)


def test_unchanged_tick_skips_and_says_why(project: Project, instance) -> None:
    first = tick(project, instance, None)
    second = tick(project, instance, first.cursor)
    assert not second.run_requests
    assert second.skip_message.startswith("unchanged: the store's latest snapshot is still")
    assert second.cursor == first.cursor


def test_changed_snapshot_requests_only_the_new_pending_migration(tmp_path, instance) -> None:
    project = make_project(tmp_path, code_version=4)
    apply_all_to = project.graph(4)  # code is at v4; v1..v3 pushed, data at v1
    with project.active():
        MigrationExecutor(project.store(), graph=apply_all_to).apply(load_chain(project.migrations_dir))
    before = tick(project, instance, None)
    assert before.skip_message.startswith("nothing pending")
    project.push(4)
    project.write_migration(M3, parent=M2, from_version=3, to_version=4)
    data = tick(project, instance, before.cursor)
    (request,) = data.run_requests
    assert request.asset_selection == [KEY3]
    assert request.run_key == f"{project.graph(4).snapshot_version}:{M3}"
    # the request runs as it is
    defs = build_migration_definitions(config_path=project.config_path)
    with project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(
            instance=instance,
            run_config=request.run_config,
            asset_selection=request.asset_selection,
            tags=request.tags,
        )
    assert result.success
    assert [
        e.asset_key for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "metaxy"
    ] == [KEY3]
    assert [(c.asset_key, c.passed) for c in result.get_asset_check_evaluations()] == [(KEY3, True)]
    assert project.rows_at("video/embeddings", 4) == 5


def test_nothing_pending(project: Project, instance) -> None:
    apply_all(project)
    data = tick(project, instance, None)
    assert not data.run_requests
    assert data.skip_message.startswith("nothing pending: all 2 migration(s) are applied")
    assert SnapshotCursor.parse(data.cursor).snapshot_version == project.graph(3).snapshot_version


def test_new_snapshot_without_a_migration_says_generate_one(project: Project, instance) -> None:
    apply_all(project)
    handled = tick(project, instance, None).cursor
    project.push(4)
    data = tick(project, instance, handled)
    assert not data.run_requests
    snapshot = project.graph(4).snapshot_version
    assert f"latest snapshot {snapshot} has no migration leading to it yet" in data.skip_message
    assert "run `metaxy migrations generate`" in data.skip_message


def test_no_snapshot_pushed_yet(tmp_path, instance) -> None:
    project = make_project(tmp_path, pushed=(), data_version=None)
    data = tick(project, instance, None)
    assert not data.run_requests
    assert "no snapshot has been pushed" in data.skip_message and "`metaxy push`" in data.skip_message


def test_bad_cursor_is_logged_and_reset(project: Project, instance, caplog: pytest.LogCaptureFixture) -> None:
    data = tick(project, instance, "{not json")
    assert len(data.run_requests) == 1  # handled like a first tick
    assert SnapshotCursor.parse(data.cursor) is not None
    log = logging.getLogger("mxdg.cursor")
    with caplog.at_level(logging.WARNING, logger="mxdg.cursor"):
        for bad in ("{not json", '{"snapshot_version": 3}', '{"unexpected": "x"}'):
            assert SnapshotCursor.parse(bad, log) is None
    assert caplog.text.count("ignoring unreadable sensor cursor") == 3


def test_dry_run_sensor_requests_the_plan_job(project: Project, instance) -> None:
    data = tick(project, instance, None, dry_run=True)
    (request,) = data.run_requests
    assert request.run_key.startswith("plan:")
    assert request.asset_selection is None
    assert request.run_config == {}  # the plan job always plans: it takes no dry_run
    assert request.tags["metaxy/migrations"] == "plan"


def test_sensor_targets(project: Project) -> None:
    assert (
        build_migration_definitions(config_path=project.config_path)
        .resolve_sensor_def("metaxy_snapshot_sensor")
        .job_name
        == APPLY_JOB_NAME
    )
    assert (
        build_migration_definitions(config_path=project.config_path, sensor_dry_run=True)
        .resolve_sensor_def("metaxy_snapshot_sensor")
        .job_name
        == PLAN_JOB_NAME
    )
    without = build_migration_definitions(config_path=project.config_path, include_sensor=False)
    assert [s.name for s in without.sensors] == ["metaxy_history_sensor"]
    defs = build_migration_definitions(
        config_path=project.config_path, include_sensor=False, include_history_sensor=False
    )
    assert not defs.sensors


@pytest.mark.parametrize("dry_run", [False, True])
def test_schedule_run_config(project: Project, instance, dry_run: bool) -> None:
    defs = build_migration_definitions(config_path=project.config_path)
    job = defs.resolve_job_def(APPLY_JOB_NAME)
    schedule = build_migration_schedule(cron_schedule="0 3 * * *", job=job, dry_run=dry_run)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=dt.datetime(2025, 1, 2, 3, tzinfo=dt.UTC)
    )
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.run_config == {
        "resources": {"metaxy_run": {"config": {"dry_run": dry_run, "force": False}}}
    }
    assert request.tags["metaxy/migrations"] == ("plan" if dry_run else "apply")
    assert schedule.cron_schedule == "0 3 * * *"
    dg.validate_run_config(job, request.run_config)


def test_definitions_schedule_targets_the_plan_job_for_dry_runs(project: Project, instance) -> None:
    defs = build_migration_definitions(
        config_path=project.config_path, schedule_cron="*/30 * * * *", schedule_dry_run=True
    )
    (schedule,) = defs.schedules
    assert schedule.job_name == PLAN_JOB_NAME
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(instance=instance)).run_requests
    assert request.run_config == {}
    dg.validate_run_config(defs.resolve_job_def(PLAN_JOB_NAME), request.run_config)
