"""Dagster resources: where the metadata store is (:class:`MetaxyStoreResource`) and how a run behaves
(:class:`MetaxyRunResource`, whose ``dry_run`` is the run configuration users set).

Secrets never travel as plain values: give storage options as :class:`dagster.EnvVar` (Dagster resolves them
in the process that runs the op and shows only the variable's name) or as metaxy's ``"${VAR}"`` references
(expanded by :meth:`metaxy_core.MetaxyConfig.resolved_storage_options` when the store is built). On S3,
credentials not given explicitly come from boto3's standard chain.
"""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from metaxy_core.config import MetaxyConfig
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations import MigrationChain
from metaxy_core.store.delta import DeltaMetadataStore

STORE_RESOURCE_KEY = "metaxy_store"
RUN_RESOURCE_KEY = "metaxy_run"


class MetaxyStoreResource(ConfigurableResource):
    """The project's metaxy configuration and Delta Lake store, rebuilt in every process that uses it.

    Every field is optional: with ``config_path`` the project's ``metaxy.toml`` (or ``pyproject.toml``) is
    read and the other fields override it; without it the fields alone describe the store.

    Example:
        >>> MetaxyStoreResource(
        ...     root_uri="s3://ml-metadata/prod",
        ...     project="video",
        ...     storage_options={"AWS_SECRET_ACCESS_KEY": EnvVar("METAXY_S3_SECRET"),
        ...                      "AWS_ACCESS_KEY_ID": EnvVar("METAXY_S3_KEY_ID")},
        ... )
    """

    config_path: str | None = Field(
        default=None,
        description="Path of metaxy.toml (or a pyproject.toml with [tool.metaxy]); relative paths in it are "
        "relative to its folder, which is also put on sys.path for entrypoints and operation types.",
    )
    root_uri: str | None = Field(
        default=None,
        description="Store root: a local folder or s3://bucket/prefix. Overrides [store].root of the config "
        "file.",
    )
    project: str | None = Field(
        default=None, description="Project name; overrides `project` of the config file."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict,
        description="delta-rs storage options merged over the config file's (AWS_ENDPOINT_URL, AWS_REGION, "
        "...). Give secrets as EnvVar('NAME') or '${NAME}', never as plain values.",
    )
    migrations_dir: str | None = Field(
        default=None, description="Folder of migration files; overrides `migrations_dir` of the config file."
    )
    entrypoints: list[str] | None = Field(
        default=None, description="Modules imported to register features; overrides `entrypoints`."
    )
    lock_ttl_seconds: float | None = Field(
        default=None,
        description="Lease duration of the store's migration lock; overrides `lock_ttl_seconds`.",
    )

    def __repr_args__(self) -> Any:  # storage option values may be credentials: show the keys only
        for name, value in super().__repr_args__():
            if name == "storage_options" and isinstance(value, dict):
                yield name, {k: "***" for k in value}
            else:
                yield name, value

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_config(
        cls, config: MetaxyConfig, *, storage_options: dict[str, str] | None = None
    ) -> MetaxyStoreResource:
        """A resource describing ``config``.

        With a config file, storage options are re-read from it (and ``METAXY_*``) in each process, so their
        values never enter Dagster's resource configuration; without one they are copied as written (use
        ``"${VAR}"`` references for secrets). ``storage_options`` are added to the resource's own (options an
        override gave on top of the file).
        """
        own = {} if config.config_file else dict(config.store.storage_options)
        return cls(
            config_path=str(config.config_file) if config.config_file else None,
            root_uri=config.store_root,
            project=config.project,
            storage_options={**own, **(storage_options or {})},
            migrations_dir=str(config.migrations_path),
            entrypoints=list(config.entrypoints),
            lock_ttl_seconds=config.lock_ttl_seconds,
        )

    # ------------------------------------------------------------------ accessors
    def get_config(self) -> MetaxyConfig:
        """The effective :class:`~metaxy_core.MetaxyConfig` (file, then ``METAXY_*``, then these fields).

        Raises:
            metaxy_core.errors.ConfigError: the file is missing or invalid (the message names it).
        """
        config = MetaxyConfig.load(self.config_path) if self.config_path else MetaxyConfig()
        config = config.with_overrides(
            project=self.project,
            entrypoints=list(self.entrypoints) if self.entrypoints is not None else None,
            migrations_dir=self.migrations_dir,
            store_root=self.root_uri,
            storage_options=self.storage_options,
            lock_ttl_seconds=self.lock_ttl_seconds,
            source=f"{type(self).__name__}",
        )
        config.add_import_path()
        return config

    def get_store(self) -> DeltaMetadataStore:
        """The configured :class:`~metaxy_core.DeltaMetadataStore` (no I/O until it is used)."""
        return self.get_config().get_store()

    def load_graph(self) -> FeatureGraph:
        """Import the entrypoints and return the active feature graph (the code's graph)."""
        return self.get_config().load_features()

    def load_chain(self) -> MigrationChain:
        """Read the migration files (never the store)."""
        return self.get_config().load_chain()


class MetaxyRunResource(ConfigurableResource):
    """Per-run switches of the migration jobs; set them as run configuration.

    Example run config (launchpad, ``RunRequest(run_config=...)``, schedules, ``dagster job execute -c``)::

        resources:
          metaxy_run:
            config:
              dry_run: true
    """

    dry_run: bool = Field(
        default=False,
        description="Plan only: write nothing, record nothing as applied; the plan (features, rows per "
        "operation and feature, roots to recompute) is attached to the migration assets as observations.",
    )
    force: bool = Field(
        default=False,
        description="Continue a migration whose file was edited after it was partly applied "
        "(like `metaxy migrations apply --force`).",
    )
    bucket_rows: int | None = Field(
        default=None,
        description="Samples per bucket (one unit of work) of reconciliations fanned out over workers; it "
        "bounds each worker's memory (about 1 GiB at 1,000,000). Default: the project's `bucket_rows`.",
    )


class MetaxyPlanRunResource(ConfigurableResource):
    """The run switches of the plan job, which only plans: it has no ``dry_run`` to set.

    Launching the plan job with ``resources.metaxy_run.config.dry_run: false`` is refused by Dagster's config
    validation (an unexpected entry), before any run starts; launch the apply job to apply.
    """

    @property
    def dry_run(self) -> bool:
        return True

    @property
    def force(self) -> bool:
        return False


#: the run resource every apply job of a code location shares (one object: two metaxy code locations' or
#: Component instances' definitions merge without a resource-key conflict)
RUN_RESOURCE = MetaxyRunResource()
