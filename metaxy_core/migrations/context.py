"""What an operation sees while it runs: the store, both graphs, the affected features and the step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey

if TYPE_CHECKING:
    from metaxy_core.migrations.models import Migration
    from metaxy_core.store.delta import DeltaMetadataStore


@dataclass
class OperationContext:
    """Passed to :meth:`BaseOperation.run`; built by the executor for every (operation, feature) step."""

    store: DeltaMetadataStore
    project: str
    migration: Migration
    op_index: int
    to_graph: FeatureGraph
    from_graph: FeatureGraph | None = None
    affected: list[FeatureKey] = field(default_factory=list)
    run_id: str = ""
    dry_run: bool = False
    batch_rows: int = 1_000_000
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("metaxy.migrations"))

    @property
    def from_snapshot_version(self) -> str | None:
        return getattr(self.migration, "from_snapshot_version", None)

    @property
    def to_snapshot_version(self) -> str:
        return getattr(self.migration, "to_snapshot_version", None) or self.to_graph.snapshot_version
