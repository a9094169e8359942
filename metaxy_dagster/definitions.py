"""The factory: a project's migrations and feature tables as Dagster definitions.

Loading reads files only (the configuration, the migration files and the snapshot files beside them; never
the store), so a code location loads quickly (200 migrations and 200 features well under a second) and
without credentials. A broken chain or a bad file fails the load with :class:`MetaxyDefinitionsError`, whose
message is exactly the one ``metaxy`` prints on the command line (the engine error is kept as ``__cause__``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    EnvVar,
    ExecutorDefinition,
)

from metaxy_core.config import MetaxyConfig
from metaxy_core.errors import MetaxyError, redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import MigrationChain
from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_dagster._runtime import definition_errors
from metaxy_dagster.assets import build_migration_assets
from metaxy_dagster.checks import build_migration_checks
from metaxy_dagster.errors import MetaxyDefinitionsError
from metaxy_dagster.fanout import unit_stages
from metaxy_dagster.features import (
    UserAsset,
    build_feature_assets,
    claimed_features,
    elsewhere_features,
    feature_asset_keys,
)
from metaxy_dagster.history import DEFAULT_HISTORY_SENSOR_NAME, build_history_sensor
from metaxy_dagster.jobs import APPLY_JOB_NAME, PLAN_JOB_NAME, build_apply_job, build_plan_job
from metaxy_dagster.ops import DEFAULT_POOL, sanitize_name
from metaxy_dagster.resources import RUN_RESOURCE, RUN_RESOURCE_KEY, STORE_RESOURCE_KEY, MetaxyStoreResource
from metaxy_dagster.rollback import ROLLBACK_JOB_NAME, build_rollback_job
from metaxy_dagster.schedules import build_migration_schedule
from metaxy_dagster.sensors import DEFAULT_SENSOR_NAME, build_snapshot_sensor
from metaxy_dagster.translator import MetaxyMigrationTranslator


def load_migration_chain(config: MetaxyConfig, graph: FeatureGraph | None = None) -> MigrationChain:
    """The project's chain, from files only (``graph``: the code's, default: loaded from the entrypoints).

    Raises:
        MetaxyDefinitionsError: with the engine's message (file, problem, fix).
    """
    try:
        return config.load_chain(graph)
    except MetaxyError as exc:
        raise MetaxyDefinitionsError(str(exc), error=exc) from exc


def build_migration_definitions(
    *,
    config: MetaxyConfig | None = None,
    config_path: str | Path | None = None,
    translator: MetaxyMigrationTranslator | None = None,
    store: MetaxyStoreResource | None = None,
    assets: Sequence[UserAsset] = (),
    include_feature_assets: bool = True,
    feature_assets_elsewhere: Mapping[str, str] | None = None,
    name: str | None = None,
    schedule_cron: str | None = None,
    schedule_dry_run: bool = False,
    schedule_timezone: str | None = None,
    schedule_default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
    include_sensor: bool = True,
    sensor_dry_run: bool = False,
    sensor_minimum_interval_seconds: int = 60,
    sensor_default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    include_history_sensor: bool = True,
    history_sensor_minimum_interval_seconds: int = 30,
    history_sensor_default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    pool: str | None = DEFAULT_POOL,
    executor_def: ExecutorDefinition | None = None,
    op_tags: Mapping[str, str] | None = None,
    fan_out: bool | None = None,
) -> Definitions:
    """Assets, checks, jobs, schedule, sensors and resources for a metaxy project's migrations and features.

    Args:
        config: the project's configuration; default ``MetaxyConfig.load(config_path)`` (found by walking up
            from the working directory when no path is given).
        config_path: path of ``metaxy.toml`` / ``pyproject.toml`` (ignored when ``config`` is given).
        translator: customises keys, groups, tags, metadata and automation conditions.
        store: the store resource; default ``MetaxyStoreResource.from_config(config)``. Pass one with
            ``EnvVar`` storage options to keep credentials out of files.
        assets: your own assets, returned with the definitions; one carrying ``metaxy/feature`` metadata
            (``"video/raw"``) stands for that feature: no feature asset is made for it, it gets the feature's
            lineage and receives the events of the migrations that write the feature.
        include_feature_assets: one asset per feature of the code's graph (``False``: migrations only).
        feature_assets_elsewhere: feature -> the key of the asset that stands for it in another part of the
            code location (``{"video/embeddings": "pipeline/embeddings"}``: a ``dg`` component or module these
            definitions cannot see): no asset is made for the feature, the migrations' events go to that key
            and the asset should declare its lineage itself.
        name: a namespace for a second metaxy project in one code location: resource key
            ``metaxy_store_<name>``, jobs ``metaxy_migrations_apply_<name>``..., sensors and schedule likewise
            (the run resource ``metaxy_run`` is shared). Default: the plain names.
        schedule_cron: add a schedule of the apply job (or of the plan job with ``schedule_dry_run``).
        include_sensor: add the snapshot sensor (apply job; plan job with ``sensor_dry_run``).
        include_history_sensor: add the sensor that mirrors the store's migration log into Dagster (runless
            events for migrations applied, stamped or rolled back elsewhere); it starts running by default.
        pool: concurrency pool of every migration op (``None``: none).
        executor_def: executor of the jobs (default: Dagster's multiprocess executor, which spawns).
        fan_out: run reconciliations as units of work fanned out over the executor's processes (dynamic
            outputs; see docs/scale.md); default: when the project's ``workers`` setting is above 1.

    Returns:
        ``Definitions`` with one asset and one blocking check per migration, one asset per feature, the jobs
        ``metaxy_migrations_apply``, ``metaxy_migrations_plan`` and ``metaxy_migrations_rollback``, the
        optional schedule and sensors, and the resources ``metaxy_store`` and ``metaxy_run``. A project
        without migrations gets its feature assets and the resources only.

    Raises:
        MetaxyDefinitionsError: the configuration, a migration file, a snapshot file or the chain is invalid
            (same message as the CLI).

    Example:
        >>> # definitions.py of a code location
        >>> defs = build_migration_definitions(config_path="metaxy.toml", schedule_cron="0 3 * * *")
    """
    if config is None:
        try:
            config = MetaxyConfig.load(config_path)
        except MetaxyError as exc:
            raise MetaxyDefinitionsError(str(exc), error=exc) from exc
    graph = _code_graph(config)
    chain = load_migration_chain(config, graph)
    translator = translator or MetaxyMigrationTranslator()
    suffix = f"_{sanitize_name(name)}" if name else ""
    store_key = STORE_RESOURCE_KEY + suffix
    store = store or MetaxyStoreResource.from_config(config)
    resources = {store_key: store, RUN_RESOURCE_KEY: RUN_RESOURCE}
    # Keys first (the ops record events on feature assets), migrations next (a broken build_operations()
    # names its file before any lineage is drawn), then the feature assets with their lineage.
    elsewhere = elsewhere_features(graph, feature_assets_elsewhere or {})
    feature_keys = feature_asset_keys(graph, translator, {**elsewhere, **claimed_features(graph, assets)})
    migration_assets = build_migration_assets(
        chain=chain,
        translator=translator,
        pool=pool,
        store_resource_key=store_key,
        op_tags=op_tags,
        feature_asset_keys=feature_keys,
        node_prefix=f"{sanitize_name(name)}__" if name else "",
        fan_out_stages=unit_stages(graph) if (config.workers > 1 if fan_out is None else fan_out) else 0,
    )
    migration_keys = {m.migration_id: translator.get_asset_key(m) for m in chain}
    writers: dict[FeatureKey, list[AssetKey]] = {}
    if include_feature_assets or assets:
        for migration in chain:
            with definition_errors(migration):
                for feature in translator.get_feature_keys(migration, graph):
                    writers.setdefault(feature, []).append(migration_keys[migration.migration_id])
    features = build_feature_assets(
        graph=graph,
        translator=translator,
        writers=writers,
        table_uri=_table_uris(config, store, graph),
        user_assets=assets,
        include_features=include_feature_assets,
        elsewhere=elsewhere,
    )
    feature_assets = [*features.specs, *features.user_assets]
    if not len(chain):
        return Definitions(assets=feature_assets, resources=resources)
    checks = build_migration_checks(chain=chain, translator=translator, store_resource_key=store_key)
    rollback_job = build_rollback_job(
        chain=chain,
        translator=translator,
        pool=pool,
        store_resource_key=store_key,
        name=ROLLBACK_JOB_NAME + suffix,
        feature_asset_keys=features.keys,
    )
    apply_job = build_apply_job(
        assets=migration_assets, name=APPLY_JOB_NAME + suffix, executor_def=executor_def
    )
    plan_job = build_plan_job(
        assets=migration_assets,
        name=PLAN_JOB_NAME + suffix,
        executor_def=executor_def,
        resource_defs={store_key: store},  # the job binds its own run resource, so it must bind all of them
    )
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
                name=DEFAULT_SENSOR_NAME + suffix,
                dry_run=sensor_dry_run,
                store_resource_key=store_key,
                minimum_interval_seconds=sensor_minimum_interval_seconds,
                default_status=sensor_default_status,
            )
        )
    if include_history_sensor:
        sensors.append(
            build_history_sensor(
                chain=chain,
                keys=migration_keys,
                feature_keys=features.keys,
                name=DEFAULT_HISTORY_SENSOR_NAME + suffix,
                store_resource_key=store_key,
                minimum_interval_seconds=history_sensor_minimum_interval_seconds,
                default_status=history_sensor_default_status,
                count_rows=translator.settings.enable_row_counts,
            )
        )
    return Definitions(
        assets=[*migration_assets, *feature_assets],
        asset_checks=checks,
        jobs=[apply_job, plan_job, rollback_job],
        schedules=schedules,
        sensors=sensors,
        resources=resources,
    )


def _code_graph(config: MetaxyConfig) -> FeatureGraph:
    """The code's feature graph: the active one when features are registered (a definitions module usually
    imports them), else the entrypoints imported into it (as ``MetaxyConfig.load_chain`` does)."""
    graph = FeatureGraph.get_active()
    if len(graph):
        return graph
    try:
        return config.load_features()
    except MetaxyError as exc:
        raise MetaxyDefinitionsError(str(exc), error=exc) from exc


def _table_uris(
    config: MetaxyConfig, store: MetaxyStoreResource, graph: FeatureGraph
) -> dict[FeatureKey, str]:
    """Where each feature's Delta table is, from the configuration alone (no I/O, no credentials)."""
    root = store.root_uri if store.root_uri and not isinstance(store.root_uri, EnvVar) else config.store_root
    if (
        "://" in root
    ):  # never a user or password written into the URL: `s3://key:secret@bucket` -> `s3://bucket`
        parts = urlsplit(root)
        root = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    locations = DeltaMetadataStore(root, project=config.project)
    return {key: redact(locations.table_uri(key)) for key in graph.keys}
