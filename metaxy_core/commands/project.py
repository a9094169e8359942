"""The project every command works on: its configuration, and the feature graph, store and chain it loads."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from metaxy_core.config import MetaxyConfig
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

    def executor(self, **kwargs: Any) -> MigrationExecutor:
        return MigrationExecutor(self.store, project=self.config.project, graph=self.graph, **kwargs)

    def states(self) -> dict[str, MigrationState]:
        """Where every migration stands, from one read of the store's migration log."""
        return progress.read_states(self.store, self.config.project)


def open_project(config_path: str | Path | None = None) -> Project:
    return Project(MetaxyConfig.load(config_path))
