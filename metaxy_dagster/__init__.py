"""metaxy_dagster: every metaxy migration a Dagster asset, its operations ops, dry runs as run configuration;
every feature table an asset too, and the store's migration log the truth Dagster's asset state follows.

Modelled on dagster-dbt: :class:`MetaxyMigrationTranslator` is the single override point, the ``build_*``
factories are keyword-only and :class:`MetaxyMigrationsComponent` builds the same definitions from YAML.

Example (``definitions.py`` of a code location)::

    from metaxy_dagster import build_migration_definitions

    defs = build_migration_definitions(config_path="metaxy.toml", schedule_cron="0 3 * * *")
"""

from metaxy_core.startup import collection_paused

# loading Dagster and the plugin: no garbage-collector passes (see collection_paused)
with collection_paused():
    from metaxy_core.migrations.verify import MigrationVerification as MigrationVerification
    from metaxy_core.migrations.verify import verify_migration as verify_migration
    from metaxy_dagster.assets import build_migration_assets as build_migration_assets
    from metaxy_dagster.checks import build_migration_checks as build_migration_checks
    from metaxy_dagster.components import MetaxyMigrationsComponent as MetaxyMigrationsComponent
    from metaxy_dagster.definitions import build_migration_definitions as build_migration_definitions
    from metaxy_dagster.definitions import load_migration_chain as load_migration_chain
    from metaxy_dagster.errors import MetaxyDagsterError as MetaxyDagsterError
    from metaxy_dagster.errors import MetaxyDefinitionsError as MetaxyDefinitionsError
    from metaxy_dagster.errors import MetaxyMigrationChangedError as MetaxyMigrationChangedError
    from metaxy_dagster.errors import MetaxyMigrationFailedError as MetaxyMigrationFailedError
    from metaxy_dagster.errors import MetaxyParentNotAppliedError as MetaxyParentNotAppliedError
    from metaxy_dagster.errors import MetaxyPlanOnlyError as MetaxyPlanOnlyError
    from metaxy_dagster.errors import MetaxyRunError as MetaxyRunError
    from metaxy_dagster.errors import MetaxyStoreLockedError as MetaxyStoreLockedError
    from metaxy_dagster.features import FeatureAssets as FeatureAssets
    from metaxy_dagster.features import build_feature_assets as build_feature_assets
    from metaxy_dagster.history import DEFAULT_HISTORY_SENSOR_NAME as DEFAULT_HISTORY_SENSOR_NAME
    from metaxy_dagster.history import HistoryCursor as HistoryCursor
    from metaxy_dagster.history import build_history_sensor as build_history_sensor
    from metaxy_dagster.history import evaluate_history_tick as evaluate_history_tick
    from metaxy_dagster.jobs import APPLY_JOB_NAME as APPLY_JOB_NAME
    from metaxy_dagster.jobs import PLAN_JOB_NAME as PLAN_JOB_NAME
    from metaxy_dagster.jobs import build_apply_job as build_apply_job
    from metaxy_dagster.jobs import build_plan_job as build_plan_job
    from metaxy_dagster.jobs import run_config_for as run_config_for
    from metaxy_dagster.ops import DEFAULT_POOL as DEFAULT_POOL
    from metaxy_dagster.resources import RUN_RESOURCE_KEY as RUN_RESOURCE_KEY
    from metaxy_dagster.resources import STORE_RESOURCE_KEY as STORE_RESOURCE_KEY
    from metaxy_dagster.resources import MetaxyPlanRunResource as MetaxyPlanRunResource
    from metaxy_dagster.resources import MetaxyRunResource as MetaxyRunResource
    from metaxy_dagster.resources import MetaxyStoreResource as MetaxyStoreResource
    from metaxy_dagster.rollback import ROLLBACK_JOB_NAME as ROLLBACK_JOB_NAME
    from metaxy_dagster.rollback import RollbackConfig as RollbackConfig
    from metaxy_dagster.rollback import build_rollback_job as build_rollback_job
    from metaxy_dagster.schedules import build_migration_schedule as build_migration_schedule
    from metaxy_dagster.sensors import SnapshotCursor as SnapshotCursor
    from metaxy_dagster.sensors import build_snapshot_sensor as build_snapshot_sensor
    from metaxy_dagster.sensors import evaluate_snapshot_tick as evaluate_snapshot_tick
    from metaxy_dagster.translator import FEATURE_METADATA_KEY as FEATURE_METADATA_KEY
    from metaxy_dagster.translator import MetaxyMigrationTranslator as MetaxyMigrationTranslator
    from metaxy_dagster.translator import (
        MetaxyMigrationTranslatorSettings as MetaxyMigrationTranslatorSettings,
    )

__all__ = [
    "APPLY_JOB_NAME",
    "DEFAULT_HISTORY_SENSOR_NAME",
    "DEFAULT_POOL",
    "FEATURE_METADATA_KEY",
    "PLAN_JOB_NAME",
    "ROLLBACK_JOB_NAME",
    "RUN_RESOURCE_KEY",
    "STORE_RESOURCE_KEY",
    "FeatureAssets",
    "HistoryCursor",
    "MetaxyDagsterError",
    "MetaxyDefinitionsError",
    "MetaxyMigrationChangedError",
    "MetaxyMigrationFailedError",
    "MetaxyMigrationTranslator",
    "MetaxyMigrationTranslatorSettings",
    "MetaxyMigrationsComponent",
    "MetaxyParentNotAppliedError",
    "MetaxyPlanRunResource",
    "MetaxyPlanOnlyError",
    "MetaxyRunError",
    "MetaxyRunResource",
    "MetaxyStoreLockedError",
    "MetaxyStoreResource",
    "MigrationVerification",
    "RollbackConfig",
    "SnapshotCursor",
    "build_apply_job",
    "build_feature_assets",
    "build_history_sensor",
    "build_migration_assets",
    "build_migration_checks",
    "build_migration_definitions",
    "build_migration_schedule",
    "build_plan_job",
    "build_rollback_job",
    "build_snapshot_sensor",
    "evaluate_history_tick",
    "evaluate_snapshot_tick",
    "load_migration_chain",
    "run_config_for",
    "verify_migration",
]
