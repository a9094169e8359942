"""What an operation sees while it runs: the store, both graphs, the affected features and the step.

Long steps report progress (rows done / total, rate, ETA) while they run, through the context's one callback:
``meter = ctx.progress(feature, total=n)`` then ``meter.advance(k)`` after each batch. Code that gets no
context (a :class:`~metaxy_core.migrations.ops.MetadataBackfill`'s ``execute``, a ``CustomMigration``'s)
uses :func:`step_progress`, which reports to the step running in the same thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.reporting import ProgressCallback, ProgressMeter

if TYPE_CHECKING:
    from metaxy_core.migrations.models import Migration
    from metaxy_core.store.delta import DeltaMetadataStore

#: (label, callback) of the step running in this thread: where :func:`step_progress` meters report
_RUNNING_STEP: ContextVar[tuple[str, ProgressCallback | None]] = ContextVar(
    "metaxy_running_step", default=("", None)
)


@contextmanager
def running_step(label: str, callback: ProgressCallback | None) -> Iterator[None]:
    """Mark the step that runs inside the block (the executor wraps every step in it)."""
    token = _RUNNING_STEP.set((label, callback))
    try:
        yield
    finally:
        _RUNNING_STEP.reset(token)


def step_progress(*, total: int | None = None, unit: str = "rows") -> ProgressMeter:
    """A progress meter of the step running in this thread (it reports nowhere outside a step).

    Example (a backfill reporting its files):
        >>> meter = step_progress(total=len(keys), unit="files")
        >>> for key in keys:
        ...     store.write_metadata(feature, rows_of(key))
        ...     meter.advance(1)
    """
    label, callback = _RUNNING_STEP.get()
    return ProgressMeter(label or "step", callback, total=total, unit=unit)


def step_label(migration_id: str, op_id: str, feature: str) -> str:
    """How progress names a step: ``<migration>: <operation> on <feature>``."""
    return f"{migration_id}: {op_id} on {feature}"


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
    #: where long steps report progress (the CLI's live line, Dagster's log); None: nowhere
    on_progress: ProgressCallback | None = None

    @property
    def from_snapshot_version(self) -> str | None:
        return getattr(self.migration, "from_snapshot_version", None)

    @property
    def to_snapshot_version(self) -> str:
        return getattr(self.migration, "to_snapshot_version", None) or self.to_graph.snapshot_version

    def progress(
        self, feature: FeatureKey | str, *, total: int | None = None, unit: str = "rows"
    ) -> ProgressMeter:
        """A meter for one feature's step: ``update``/``advance`` after each batch, ``finish`` at the end."""
        label, _ = _RUNNING_STEP.get()
        label = label or f"{self.migration.migration_id}: operation {self.op_index + 1} on {feature}"
        return ProgressMeter(label, self.on_progress, total=total, unit=unit)
