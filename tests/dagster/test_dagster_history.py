"""The store's migration log is the truth Dagster's asset state converges to, whatever wrote it.

Migrations applied, stamped or rolled back outside Dagster (the CLI's executor, a script) show on their assets
after one tick of the history sensor; Dagster's own runs are never reported twice; feature assets get the
rows each migration wrote. The sensor's events are stored the way the daemon stores them
(``report_runless_asset_event``), so the instance's asset state is checked, not only the sensor's output.
"""

from __future__ import annotations

import dagster as dg
from metaxy_dg_testkit import CLIP, EMB, Project

from metaxy_core.migrations import MigrationExecutor, load_chain, progress
from metaxy_core.migrations.results import EventStatus
from metaxy_core.migrations.rollback import rollback
from metaxy_dagster import (
    APPLY_JOB_NAME,
    DEFAULT_HISTORY_SENSOR_NAME,
    MetaxyStoreResource,
    build_migration_definitions,
)

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"
KEY1, KEY2 = dg.AssetKey(["metaxy", "migrations", M1]), dg.AssetKey(["metaxy", "migrations", M2])
EMB_KEY, CLIP_KEY = dg.AssetKey(EMB.split("/")), dg.AssetKey(CLIP.split("/"))


def tick(project: Project, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorExecutionData:
    """One evaluation of the history sensor; its events are stored as the daemon stores them."""
    defs = build_migration_definitions(config_path=project.config_path)
    sensor = defs.resolve_sensor_def(DEFAULT_HISTORY_SENSOR_NAME)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=defs,
        resources={"metaxy_store": MetaxyStoreResource(config_path=str(project.config_path))},
    )
    with project.active():
        data = sensor.evaluate_tick(context)
    for event in data.asset_events:
        instance.report_runless_asset_event(event)
    return data


def cli_executor(project: Project, run_id: str) -> MigrationExecutor:
    return MigrationExecutor(project.store(), graph=project.code_graph, run_id=run_id)


def latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dict:
    record = instance.fetch_materializations(key, limit=1).records[0]
    return {k: getattr(v, "value", v) for k, v in record.asset_materialization.metadata.items()}


def test_migrations_applied_by_the_cli_show_as_materialized_after_one_tick(project: Project) -> None:
    with dg.instance_for_test() as instance, project.active():
        cli_executor(project, "cli-run-1").apply(load_chain(project.migrations_dir))
        data = tick(project, instance, None)
        assert not data.run_requests  # it only reports, it launches nothing
        for key in (KEY1, KEY2):
            meta = latest(instance, key)
            assert meta["metaxy/applied_by_run"] == meta["metaxy/run_id"] == "cli-run-1"
            assert meta["metaxy/status"] == "completed" and meta["metaxy/stamped"] is False
            assert "metaxy/applied_at" in meta
        # the feature tables: the rows each migration wrote, the feature version it moved them to
        emb = [
            r.asset_materialization.metadata
            for r in instance.fetch_materializations(EMB_KEY, limit=10).records
        ]
        by_migration = {m["metaxy/migration_id"].value: m for m in emb}
        assert set(by_migration) == {M1, M2}
        assert by_migration[M2]["metaxy/rows_written"].value == 5
        assert by_migration[M2]["metaxy/feature_version"].value == project.graph(3).feature_version(EMB)
        assert by_migration[M2]["dagster/row_count"].value == 5
        assert by_migration[M2]["metaxy/run_id"].value == "cli-run-1"
        assert len(instance.fetch_materializations(CLIP_KEY, limit=10).records) == 2
        # the next tick: nothing new in the log, nothing reported
        again = tick(project, instance, data.cursor)
        assert not again.asset_events and "unchanged" in again.skip_message
        # a lost cursor compares again, but Dagster already shows every entry: still nothing reported
        reset = tick(project, instance, None)
        assert not reset.asset_events
        assert len(instance.fetch_materializations(KEY1, limit=10).records) == 1


def test_dagster_runs_are_not_reported_again(project: Project) -> None:
    with dg.instance_for_test() as instance:
        defs = build_migration_definitions(config_path=project.config_path)
        with project.active():
            assert defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance).success
            # re-running the apply job on applied migrations records no feature materialization either
            assert defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance).success
        data = tick(project, instance, None)
        assert not data.asset_events
        assert "already shows every applied" in data.skip_message
        assert len(instance.fetch_materializations(EMB_KEY, limit=10).records) == 2  # one per migration


def test_a_partly_cli_applied_chain_finished_by_dagster_reports_only_the_cli_part(project: Project) -> None:
    with dg.instance_for_test() as instance:
        with project.active():
            cli_executor(project, "cli-run-2").apply(load_chain(project.migrations_dir), M1)
        defs = build_migration_definitions(config_path=project.config_path)
        with project.active():
            run = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance)
        assert run.success
        tick(project, instance, None)
        assert latest(instance, KEY1)["metaxy/applied_by_run"] == "cli-run-2"
        assert latest(instance, KEY2)["metaxy/applied_by_run"] == run.run_id
        writers = {
            r.asset_materialization.metadata["metaxy/run_id"].value
            for r in instance.fetch_materializations(EMB_KEY, limit=10).records
        }
        assert writers == {"cli-run-2", run.run_id}
        assert len(instance.fetch_materializations(EMB_KEY, limit=10).records) == 2


def test_a_cli_rollback_shows_once_on_the_migration_and_on_the_feature_tables_it_changed(
    project: Project,
) -> None:
    with dg.instance_for_test() as instance:
        with project.active():
            executor = cli_executor(project, "cli-apply")
            chain = load_chain(project.migrations_dir)
            executor.apply(chain)
        first = tick(project, instance, None)
        with project.active():
            rollback(cli_executor(project, "cli-rollback"), chain, M2)
        data = tick(project, instance, first.cursor)
        observation, *features = data.asset_events
        assert observation.asset_key == KEY2 and isinstance(observation, dg.AssetObservation)
        assert observation.metadata["metaxy/rollback"].value == "rolled_back"
        assert observation.metadata["metaxy/run_id"].value == "cli-rollback"
        assert "hidden" in observation.metadata["metaxy/note"].value
        # the feature tables whose rows it hid changed: each gets a materialization
        assert {f.asset_key for f in features} == {EMB_KEY, CLIP_KEY}
        for feature in features:
            assert isinstance(feature, dg.AssetMaterialization)
            assert feature.metadata["metaxy/migration_id"].value == M2
            assert feature.metadata["metaxy/rows_hidden"].value == 5
            assert feature.metadata["metaxy/run_id"].value == "cli-rollback"
        assert latest(instance, EMB_KEY)["metaxy/rollback"] == "rolled_back"
        assert not tick(project, instance, None).asset_events  # seen: not reported again


def test_a_stamped_migration_shows_as_applied_without_feature_events(project: Project) -> None:
    with dg.instance_for_test() as instance, project.active():
        migration = load_chain(project.migrations_dir).get(M1)
        progress.record(
            project.store(),
            project="demo",
            migration_id=M1,
            status=EventStatus.STAMPED,
            run_id="stamp-run",
            checksum=migration.checksum,
        )
        data = tick(project, instance, None)
        assert [e.asset_key for e in data.asset_events] == [KEY1]
        assert latest(instance, KEY1)["metaxy/stamped"] is True
        assert latest(instance, KEY1)["metaxy/applied_by_run"] == "stamp-run"


def test_entries_of_a_run_still_in_flight_wait_for_that_run(project: Project) -> None:
    with dg.instance_for_test() as instance:
        defs = build_migration_definitions(config_path=project.config_path)
        job = defs.resolve_job_def(APPLY_JOB_NAME)
        run = instance.create_run_for_job(job_def=job, run_config={})  # its ops have not reported yet
        with project.active():
            cli_executor(project, run.run_id).apply(load_chain(project.migrations_dir), M1)
        waiting = tick(project, instance, None)
        assert not waiting.asset_events and M1 in waiting.skip_message
        assert waiting.cursor is None  # compared again next tick
        instance.report_run_failed(instance.get_run_by_id(run.run_id))  # the run ended without reporting
        done = tick(project, instance, waiting.cursor)
        assert [e.asset_key for e in done.asset_events if e.asset_key.path[0] == "metaxy"] == [KEY1]
