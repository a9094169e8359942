"""The factory: a project's migrations as Dagster definitions.

Loading reads files only (the configuration and the migration files; never the store), so a code location
loads quickly (200 migrations well under a second) and without credentials. A broken chain or a bad file fails
the load with :class:`MetaxyDefinitionsError`, whose message is exactly the one ``metaxy`` prints on the
command line (the engine error is kept as ``__cause__``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dagster import DefaultScheduleStatus, DefaultSensorStatus, Definitions, ExecutorDefinition

from metaxy_core.config import MetaxyConfig
from metaxy_core.errors import MetaxyError
from metaxy_core.migrations import MigrationChain
from metaxy_dagster.assets import build_migration_assets
from metaxy_dagster.checks import build_migration_checks
from metaxy_dagster.errors import MetaxyDefinitionsError
from metaxy_dagster.jobs import APPLY_JOB_NAME, PLAN_JOB_NAME, build_apply_job, build_plan_job
from metaxy_dagster.ops import DEFAULT_POOL
from metaxy_dagster.resources import (
    RUN_RESOURCE_KEY,
    STORE_RESOURCE_KEY,
    MetaxyRunResource,
    MetaxyStoreResource,
)
from metaxy_dagster.rollback import build_rollback_job
from metaxy_dagster.schedules import build_migration_schedule
from metaxy_dagster.sensors import DEFAULT_SENSOR_NAME, build_snapshot_sensor
from metaxy_dagster.translator import MetaxyMigrationTranslator


def load_migration_chain(config: MetaxyConfig) -> MigrationChain:
    """The project's chain, from files only.

    Raises:
        MetaxyDefinitionsError: with the engine's message (file, problem, fix).
    """
    try:
        return config.load_chain()
    except MetaxyError as exc:
        raise MetaxyDefinitionsError(str(exc), error=exc) from exc


def build_migration_definitions(
    *,
    config: MetaxyConfig | None = None,
    config_path: str | Path | None = None,
    translator: MetaxyMigrationTranslator | None = None,
    store: MetaxyStoreResource | None = None,
    schedule_cron: str | None = None,
    schedule_dry_run: bool = False,
    schedule_timezone: str | None = None,
    schedule_default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
    include_sensor: bool = True,
    sensor_dry_run: bool = False,
    sensor_minimum_interval_seconds: int = 60,
    sensor_default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    pool: str | None = DEFAULT_POOL,
    executor_def: ExecutorDefinition | None = None,
    op_tags: Mapping[str, str] | None = None,
) -> Definitions:
    """Assets, checks, jobs, schedule, sensor and resources for a metaxy project's migrations.

    Args:
        config: the project's configuration; default ``MetaxyConfig.load(config_path)`` (found by walking up
            from the working directory when no path is given).
        config_path: path of ``metaxy.toml`` / ``pyproject.toml`` (ignored when ``config`` is given).
        translator: customises keys, groups, tags and metadata.
        store: the store resource; default ``MetaxyStoreResource.from_config(config)``. Pass one with
            ``EnvVar`` storage options to keep credentials out of files.
        schedule_cron: add a schedule of the apply job (or of the plan job with ``schedule_dry_run``).
        include_sensor: add the snapshot sensor (apply job; plan job with ``sensor_dry_run``).
        pool: concurrency pool of every migration op (``None``: none).
        executor_def: executor of both jobs (default: Dagster's multiprocess executor, which spawns).

    Returns:
        ``Definitions`` with one asset and one blocking check per migration, the jobs
        ``metaxy_migrations_apply``, ``metaxy_migrations_plan`` and ``metaxy_migrations_rollback``, the
        optional schedule and sensor, and the resources ``metaxy_store`` and ``metaxy_run``. A project without
        migrations gets the resources only.

    Raises:
        MetaxyDefinitionsError: the configuration, a migration file or the chain is invalid (same message as
            the CLI).

    Example:
        >>> # definitions.py of a code location
        >>> defs = build_migration_definitions(config_path="metaxy.toml", schedule_cron="0 3 * * *")
    """
    if config is None:
        try:
            config = MetaxyConfig.load(config_path)
        except MetaxyError as exc:
            raise MetaxyDefinitionsError(str(exc), error=exc) from exc
    chain = load_migration_chain(config)
    translator = translator or MetaxyMigrationTranslator()
    resources = {
        STORE_RESOURCE_KEY: store or MetaxyStoreResource.from_config(config),
        RUN_RESOURCE_KEY: MetaxyRunResource(),
    }
    if not len(chain):
        return Definitions(resources=resources)
    assets = build_migration_assets(chain=chain, translator=translator, pool=pool, op_tags=op_tags)
    checks = build_migration_checks(chain=chain, translator=translator)
    rollback_job = build_rollback_job(chain=chain, translator=translator, pool=pool)
    apply_job = build_apply_job(assets=assets, name=APPLY_JOB_NAME, executor_def=executor_def)
    plan_job = build_plan_job(assets=assets, name=PLAN_JOB_NAME, executor_def=executor_def)
    schedules = []
    if schedule_cron:
        schedules.append(
            build_migration_schedule(
                cron_schedule=schedule_cron,
                job=plan_job if schedule_dry_run else apply_job,
                dry_run=schedule_dry_run,
                execution_timezone=schedule_timezone,
                default_status=schedule_default_status,
            )
        )
    sensors = []
    if include_sensor:
        sensors.append(
            build_snapshot_sensor(
                job=plan_job if sensor_dry_run else apply_job,
                chain=chain,
                translator=translator,
                name=DEFAULT_SENSOR_NAME,
                dry_run=sensor_dry_run,
                minimum_interval_seconds=sensor_minimum_interval_seconds,
                default_status=sensor_default_status,
            )
        )
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[apply_job, plan_job, rollback_job],
        schedules=schedules,
        sensors=sensors,
        resources=resources,
    )
