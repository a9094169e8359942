"""``migrations stamp`` and ``migrations baseline``: mark migrations applied without running them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metaxy_core.commands.project import Project
from metaxy_core.migrations.stamp import StampResult, baseline, stamp


@dataclass
class StampReport:
    """What ``stamp`` or ``baseline`` recorded, in chain order."""

    results: list[StampResult]
    baseline: bool = False

    def as_dict(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.results]


def migrations_stamp(project: Project, migration_id: str) -> StampReport:
    """Mark MIGRATION_ID applied without running it (recorded as a stamp; `rollback` undoes it).

    For work done another way (by hand, or by a pipeline that recomputed the features). The migrations it
    follows must be applied already.
    """
    return StampReport([stamp(project.executor(), project.chain, migration_id)])


def migrations_baseline(project: Project, migration_id: str | None = None) -> StampReport:
    """Adopt a store that has data and no migration log: stamp the chain up to MIGRATION_ID (default: head).

    Refused when the store's log already has events for the project (use ``stamp`` then).
    """
    return StampReport(baseline(project.executor(), project.chain, migration_id), baseline=True)
