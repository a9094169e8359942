"""The rollback job: undo a selected migration from Dagster, with ``dry_run`` as run configuration.

Each rolled-back (or planned) migration is recorded as an observation on its asset, so the asset's history in
the UI shows the rollback next to the materialization it undid; every feature table whose rows it hid gets a
materialization (rows hidden and restored): its latest view changed. Single-migration rollbacks are refused
while a later migration is applied (the message lists them); set ``cascade: true`` to undo newest-first down
to the selected migration, as ``metaxy migrations rollback ID`` does.
"""

# No `from __future__ import annotations`: Dagster reads the op's Config annotation at definition time.

from collections.abc import Mapping

from dagster import AssetKey, AssetObservation, Config, GraphDefinition, JobDefinition, OpExecutionContext, op
from pydantic import Field

from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import MigrationChain
from metaxy_core.migrations.rollback import rollback, rollback_migration
from metaxy_dagster import events
from metaxy_dagster._runtime import open_run
from metaxy_dagster.jobs import RUN_KIND_TAG
from metaxy_dagster.resources import RUN_RESOURCE_KEY, STORE_RESOURCE_KEY
from metaxy_dagster.translator import MetaxyMigrationTranslator

ROLLBACK_JOB_NAME = "metaxy_migrations_rollback"


class RollbackConfig(Config):
    migration_id: str = Field(
        description="The migration to roll back (its id, e.g. 20250301_090000_refactor)."
    )
    cascade: bool = Field(
        default=False,
        description="Also roll back every later applied migration, newest first (otherwise refused while "
        "one is).",
    )


def build_rollback_job(
    *,
    chain: MigrationChain,
    translator: MetaxyMigrationTranslator | None = None,
    name: str = ROLLBACK_JOB_NAME,
    store_resource_key: str = STORE_RESOURCE_KEY,
    run_resource_key: str = RUN_RESOURCE_KEY,
    pool: str | None = None,
    feature_asset_keys: Mapping[str, AssetKey] | None = None,
) -> JobDefinition:
    """Op job rolling back ``ops.metaxy_rollback.config.migration_id`` (see
    :mod:`metaxy_core.migrations.rollback`)."""
    translator = translator or MetaxyMigrationTranslator()
    keys = {m.migration_id: translator.get_asset_key(m) for m in chain}
    known_features = dict(feature_asset_keys or {})

    def feature_key(feature: str) -> AssetKey:
        return known_features.get(feature) or translator.get_feature_asset_key(FeatureKey(feature))

    # op names are unique per repository: a second code location's rollback job (another `name`) gets its own
    suffix = name[len(ROLLBACK_JOB_NAME) :] if name.startswith(ROLLBACK_JOB_NAME) else f"_{name}"

    @op(
        name=f"metaxy_rollback{suffix}",
        required_resource_keys={store_resource_key, run_resource_key},
        pool=pool,
    )
    def metaxy_rollback(context: OpExecutionContext, config: RollbackConfig) -> None:
        dry_run = bool(getattr(context.resources, run_resource_key).dry_run)
        run = open_run(getattr(context.resources, store_resource_key))
        with run.errors():
            executor = run.executor(run_id=context.run_id)
            current_chain = run.load_chain()
            if config.cascade:
                results = rollback(executor, current_chain, config.migration_id, dry_run=dry_run)
            else:
                results = [rollback_migration(executor, current_chain, config.migration_id, dry_run=dry_run)]
        for result in results:
            context.log.info(events.describe_rollback(result, run.secrets))
            key = keys.get(result.migration_id)
            if key is not None:
                context.log_event(AssetObservation(asset_key=key, metadata=events.rollback_metadata(result)))
            for event in events.feature_rollback_events(
                result.migration_id,
                [(f.feature_key, f.hidden, f.restored) for f in result.features],
                feature_key,
                dry_run=result.dry_run,
                run_id=context.run_id,
            ):
                context.log_event(event)

    return GraphDefinition(
        name=name,
        description="Roll back a metaxy migration: hide the rows it wrote (nothing is deleted) and mark it "
        "pending. Set resources.metaxy_run.config.dry_run: true to see rows hidden/restored per feature "
        "first.",
        node_defs=[metaxy_rollback],
    ).to_job(tags={RUN_KIND_TAG: "rollback"})
