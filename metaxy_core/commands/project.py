"""The project every command works on: its configuration, and the feature graph, store and chain it loads."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from metaxy_core.config import CONFIG_FILE, CONFIG_TEMPLATE, MetaxyConfig, find_config_file, project_name_for
from metaxy_core.errors import ConfigError, format_validation_error
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations import progress
from metaxy_core.migrations.chain import MigrationChain
from metaxy_core.migrations.executor import MigrationExecutor
from metaxy_core.migrations.state import MigrationState
from metaxy_core.store.delta import DeltaMetadataStore


@dataclass
class Project:
    """A loaded project: configuration, the code's feature graph, the store and the migration chain."""

    config: MetaxyConfig

    @cached_property
    def graph(self) -> FeatureGraph:
        return self.config.load_features()

    @cached_property
    def store(self) -> DeltaMetadataStore:
        return self.config.get_store()

    @cached_property
    def chain(self) -> MigrationChain:
        return self.config.load_chain(self.graph)

    def forked_chain(self) -> MigrationChain:
        """The chain even when it has several heads (``heads``, ``generate --merge`` and ``validate``)."""
        return self.config.load_chain(self.graph, allow_forks=True)

    def executor(self, **kwargs: Any) -> MigrationExecutor:
        kwargs.setdefault("batch_rows", self.config.bucket_rows)
        return MigrationExecutor(self.store, project=self.config.project, graph=self.graph, **kwargs)

    def states(self) -> dict[str, MigrationState]:
        """Where every migration stands, from one read of the store's migration log."""
        return progress.read_states(self.store, self.config.project)


def open_project(config_path: str | Path | None = None) -> Project:
    """The project of ``config_path``, or of the nearest ``metaxy.toml``/``[tool.metaxy]`` walking up.

    Raises:
        NoProjectError: no configuration file was found (never a silent default store in ``./.metaxy``).
    """
    return Project(MetaxyConfig.load(config_path, require_file=True))


@dataclass
class InitResult:
    """The configuration file ``metaxy init`` wrote."""

    path: Path
    project: str
    #: a configuration file in a folder above, which the new one now takes precedence over
    shadows: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "project": self.project, "shadows": str(self.shadows or "") or None}


def init_project(directory: str | Path | None = None, *, project: str | None = None) -> InitResult:
    """Write a commented metaxy.toml in the current folder (never over an existing configuration).

    Raises:
        ConfigError: the folder already has a ``metaxy.toml`` or a ``[tool.metaxy]`` table, or ``project`` is
            not a valid name.
    """
    folder = Path(directory or Path.cwd()).resolve()
    target = folder / CONFIG_FILE
    existing = find_config_file(folder)
    if existing is not None and existing.parent == folder:
        table = " ([tool.metaxy])" if existing.name != CONFIG_FILE else ""
        raise ConfigError(
            f"{existing}{table} already configures this folder; edit it instead (metaxy init never "
            "overwrites a configuration)"
        )
    name = project or project_name_for(folder)
    try:  # a bad --project fails before anything is written
        MetaxyConfig.model_validate({"project": name})
    except ValidationError as exc:
        raise ConfigError(f"--project: {format_validation_error(exc, verbatim=True)}") from None
    text = CONFIG_TEMPLATE.format(project=name)
    try:
        with target.open("x") as f:
            f.write(text)
    except FileExistsError:  # created meanwhile
        raise ConfigError(f"{target} already exists; edit it instead") from None
    return InitResult(target, name, existing)


@dataclass
class VersionInfo:
    """The installed metaxy-dagster and the libraries it runs on."""

    version: str
    python: str
    libraries: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"metaxy_dagster": self.version, "python": self.python, **self.libraries}


def version_info() -> VersionInfo:
    """Show the installed version of metaxy-dagster and of the libraries it runs on."""
    import platform
    from importlib import metadata

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    libraries = {name: version(name) for name in ("polars", "deltalake", "pydantic", "dagster")}
    return VersionInfo(version("metaxy-dagster"), platform.python_version(), libraries)
