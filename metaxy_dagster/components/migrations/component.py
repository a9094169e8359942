"""``MetaxyMigrationsComponent``: the migration and feature definitions from a ``defs.yaml``.

``dg scaffold defs metaxy_dagster.MetaxyMigrationsComponent migrations`` writes a working ``defs.yaml`` (the
project's ``metaxy.toml`` found by walking up). Example::

    type: metaxy_dagster.MetaxyMigrationsComponent
    attributes:
      config_path: ../../../../metaxy.toml      # relative to this folder; default: found by walking up
      store_root: s3://ml-metadata/prod          # optional overrides of the config file
      storage_options:
        AWS_SECRET_ACCESS_KEY: "${METAXY_S3_SECRET}"   # expanded when the store is built, never displayed
      schedule_cron: "0 3 * * *"

Two instances in one code location (two metaxy projects) need a ``name`` each: it suffixes the store
resource key, the jobs, the sensors and the schedule, so their definitions merge without a collision.

Paths are relative to the folder of the ``defs.yaml``. Give secrets as ``"${VAR}"`` references: Dagster's own
``{{ env.VAR }}`` templates are expanded when the code location loads, which would put the value into the
resource configuration shown in the UI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from dagster import (
    Component,
    ComponentLoadContext,
    Definitions,
    Model,
    Resolvable,
    Scaffolder,
    ScaffoldRequest,
    in_process_executor,
    multiprocess_executor,
    scaffold_component,
    scaffold_with,
)
from pydantic import BaseModel, Field

from metaxy_core.config import MetaxyConfig, find_config_file
from metaxy_core.errors import MetaxyError
from metaxy_dagster.definitions import build_migration_definitions
from metaxy_dagster.errors import MetaxyDefinitionsError
from metaxy_dagster.ops import DEFAULT_POOL
from metaxy_dagster.resources import MetaxyStoreResource
from metaxy_dagster.translator import (
    DEFAULT_FEATURE_GROUP_NAME,
    DEFAULT_GROUP_NAME,
    DEFAULT_KEY_PREFIX,
    MetaxyMigrationTranslator,
    MetaxyMigrationTranslatorSettings,
)

_EXECUTORS = {"in_process": in_process_executor, "multiprocess": multiprocess_executor}


class MetaxyMigrationsScaffoldParams(BaseModel):
    """``dg scaffold defs metaxy_dagster.MetaxyMigrationsComponent <folder> [--config-path ...]``."""

    config_path: str | None = Field(
        default=None,
        description="The project's metaxy.toml (default: the nearest one, walking up from the new folder).",
    )
    schedule_cron: str | None = Field(default=None, description="Cron schedule of the apply job.")


class MetaxyMigrationsScaffolder(Scaffolder[MetaxyMigrationsScaffoldParams]):
    """Writes a ``defs.yaml`` that loads as is: ``config_path`` relative to its folder."""

    @classmethod
    def get_scaffold_params(cls) -> type[MetaxyMigrationsScaffoldParams]:
        return MetaxyMigrationsScaffoldParams

    def scaffold(self, request: ScaffoldRequest[MetaxyMigrationsScaffoldParams]) -> None:
        params = request.params or MetaxyMigrationsScaffoldParams()
        target = Path(request.target_path).resolve()
        config = Path(params.config_path).resolve() if params.config_path else find_config_file(target)
        attributes: dict[str, object] = {}
        if config is not None:
            attributes["config_path"] = Path(os.path.relpath(config, target)).as_posix()
        if params.schedule_cron:
            attributes["schedule_cron"] = params.schedule_cron
        scaffold_component(request, attributes)


@scaffold_with(MetaxyMigrationsScaffolder)
class MetaxyMigrationsComponent(Component, Resolvable, Model):
    """Every migration of a metaxy project as a Dagster asset, every feature table as an asset, with the
    apply/plan jobs, checks, a schedule and the sensors (the same definitions as
    :func:`~metaxy_dagster.build_migration_definitions`)."""

    name: str | None = Field(
        default=None,
        description="Namespace of this instance's resource key, jobs, sensors and schedule (needed when a "
        "code location holds two instances, e.g. two metaxy projects).",
    )

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
    include_feature_assets: bool = Field(default=True, description="One asset per feature table.")
    feature_assets_elsewhere: dict[str, str] = Field(
        default_factory=dict,
        description="Features whose asset another component or module of the code location defines, as "
        'feature key -> asset key ("video/embeddings": "pipeline/embeddings"): no asset is made for them and '
        "the migrations' events go to that asset.",
    )
    feature_group_name: str = Field(
        default=DEFAULT_FEATURE_GROUP_NAME, description="Asset group of the feature tables."
    )
    enable_asset_checks: bool = Field(
        default=True, description="One blocking verification check per migration."
    )
    schedule_cron: str | None = Field(default=None, description="Cron schedule of the apply (or plan) job.")
    schedule_dry_run: bool = Field(default=False, description="The schedule plans instead of applying.")
    include_sensor: bool = Field(default=True, description="Add the snapshot sensor.")
    sensor_dry_run: bool = Field(default=False, description="The sensor requests plans instead of applies.")
    include_history_sensor: bool = Field(
        default=True,
        description="Add the sensor mirroring the store's migration log into Dagster (runs by default).",
    )
    pool: str | None = Field(default=DEFAULT_POOL, description="Concurrency pool of the migration ops.")
    executor: Literal["multiprocess", "in_process"] | None = Field(
        default=None,
        description="Executor of the jobs: Dagster's default (multiprocess) or in_process (small projects).",
    )

    # ------------------------------------------------------------------ hooks
    def get_translator(self) -> MetaxyMigrationTranslator:
        """Override to customise keys, groups, tags and metadata."""
        return MetaxyMigrationTranslator(
            MetaxyMigrationTranslatorSettings(
                key_prefix=tuple(self.key_prefix),
                group_name=self.group_name,
                enable_asset_checks=self.enable_asset_checks,
                feature_group_name=self.feature_group_name,
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
        return self.build_definitions(self.load_config(base))

    @classmethod
    def from_defs_yaml(cls, path: Path | str) -> MetaxyMigrationsComponent:
        """The instance a ``defs.yaml`` declares (its ``attributes``), e.g. to build its definitions for a
        configuration of your own (:meth:`build_definitions`) in a script or a test."""
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        return cls.resolve_from_yaml(yaml.safe_dump(document.get("attributes") or {}))

    def build_definitions(self, config: MetaxyConfig) -> Definitions:
        """This instance's definitions for ``config`` (what :meth:`build_defs` builds for its folder)."""
        return build_migration_definitions(
            config=config,
            translator=self.get_translator(),
            store=self.build_store_resource(config),
            include_feature_assets=self.include_feature_assets,
            feature_assets_elsewhere=self.feature_assets_elsewhere,
            name=self.name,
            schedule_cron=self.schedule_cron,
            schedule_dry_run=self.schedule_dry_run,
            include_sensor=self.include_sensor,
            sensor_dry_run=self.sensor_dry_run,
            include_history_sensor=self.include_history_sensor,
            pool=self.pool,
            executor_def=_EXECUTORS[self.executor] if self.executor else None,
        )
