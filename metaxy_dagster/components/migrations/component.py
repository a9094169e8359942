"""``MetaxyMigrationsComponent``: the migration definitions from a ``defs.yaml``.

Example ``defs.yaml``::

    type: metaxy_dagster.MetaxyMigrationsComponent
    attributes:
      config_path: ../../../../metaxy.toml      # relative to this folder; default: found by walking up
      store_root: s3://ml-metadata/prod          # optional overrides of the config file
      storage_options:
        AWS_SECRET_ACCESS_KEY: "${METAXY_S3_SECRET}"   # expanded when the store is built, never displayed
      schedule_cron: "0 3 * * *"

Paths are relative to the folder of the ``defs.yaml``. Give secrets as ``"${VAR}"`` references: Dagster's own
``{{ env.VAR }}`` templates are expanded when the code location loads, which would put the value into the
resource configuration shown in the UI.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Component, ComponentLoadContext, Definitions, Model, Resolvable
from pydantic import Field

from metaxy_core.config import MetaxyConfig
from metaxy_core.errors import MetaxyError
from metaxy_dagster.definitions import build_migration_definitions
from metaxy_dagster.errors import MetaxyDefinitionsError
from metaxy_dagster.ops import DEFAULT_POOL
from metaxy_dagster.resources import MetaxyStoreResource
from metaxy_dagster.translator import (
    DEFAULT_GROUP_NAME,
    DEFAULT_KEY_PREFIX,
    MetaxyMigrationTranslator,
    MetaxyMigrationTranslatorSettings,
)


class MetaxyMigrationsComponent(Component, Resolvable, Model):
    """Every migration of a metaxy project as a Dagster asset, with the apply/plan jobs, checks, a schedule
    and the snapshot sensor (the same definitions as :func:`~metaxy_dagster.build_migration_definitions`)."""

    config_path: str | None = Field(
        default=None,
        description="metaxy.toml / pyproject.toml, relative to this folder (default: found by walking up).",
    )
    migrations_dir: str | None = Field(
        default=None, description="Overrides `migrations_dir` (relative to this folder)."
    )
    store_root: str | None = Field(
        default=None,
        description="Overrides the store root: folder (relative to this folder) or s3://bucket/prefix.",
    )
    project: str | None = Field(default=None, description="Overrides the project name.")
    storage_options: dict[str, str] | None = Field(
        default=None,
        description="delta-rs storage options merged over the config file's; secrets as '${VAR}'.",
    )
    key_prefix: list[str] = Field(
        default_factory=lambda: list(DEFAULT_KEY_PREFIX), description="Asset key prefix."
    )
    group_name: str = Field(default=DEFAULT_GROUP_NAME, description="Asset group of the migrations.")
    enable_asset_checks: bool = Field(
        default=True, description="One blocking verification check per migration."
    )
    schedule_cron: str | None = Field(default=None, description="Cron schedule of the apply (or plan) job.")
    schedule_dry_run: bool = Field(default=False, description="The schedule plans instead of applying.")
    include_sensor: bool = Field(default=True, description="Add the snapshot sensor.")
    sensor_dry_run: bool = Field(default=False, description="The sensor requests plans instead of applies.")
    pool: str | None = Field(default=DEFAULT_POOL, description="Concurrency pool of the migration ops.")

    # ------------------------------------------------------------------ hooks
    def get_translator(self) -> MetaxyMigrationTranslator:
        """Override to customise keys, groups, tags and metadata."""
        return MetaxyMigrationTranslator(
            MetaxyMigrationTranslatorSettings(
                key_prefix=tuple(self.key_prefix),
                group_name=self.group_name,
                enable_asset_checks=self.enable_asset_checks,
            )
        )

    def load_config(self, base: Path) -> MetaxyConfig:
        """The project configuration with this component's overrides (paths relative to ``base``)."""
        store_root = self.store_root
        if store_root is not None and "://" not in store_root and not Path(store_root).is_absolute():
            store_root = str((base / store_root).resolve())
        try:
            config = MetaxyConfig.load(base / self.config_path if self.config_path else None, start_dir=base)
            return config.with_overrides(
                project=self.project,
                migrations_dir=(
                    str((base / self.migrations_dir).resolve()) if self.migrations_dir is not None else None
                ),
                store_root=store_root,
                storage_options=self.storage_options,
                source=f"{type(self).__name__} in {base}",
            )
        except MetaxyError as exc:
            raise MetaxyDefinitionsError(str(exc), error=exc) from exc

    def build_store_resource(self, config: MetaxyConfig) -> MetaxyStoreResource:
        # The resource re-reads the config file in each process: this component's options travel with it.
        return MetaxyStoreResource.from_config(config, storage_options=self.storage_options)

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        base = Path(context.path)
        base = base if base.is_dir() else base.parent
        config = self.load_config(base)
        return build_migration_definitions(
            config=config,
            translator=self.get_translator(),
            store=self.build_store_resource(config),
            schedule_cron=self.schedule_cron,
            schedule_dry_run=self.schedule_dry_run,
            include_sensor=self.include_sensor,
            sensor_dry_run=self.sensor_dry_run,
            pool=self.pool,
        )
