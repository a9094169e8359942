"""Where each migration stands: the fold of the migration log, and the pending and applied queries.

:func:`fold` turns one migration's events (see :mod:`metaxy_core.migrations.progress`) into a
:class:`MigrationState`. :func:`pending` and :func:`applied` are the only definitions of "still to apply"
and "applied, at least partly": the executor, the CLI, rollback, and Dagster's sensor, ops and checks all
ask them. Pure functions over rows already read; no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from metaxy_core.errors import MetaxyError
from metaxy_core.migrations.results import EventStatus, MigrationStatus, StepStatus

if TYPE_CHECKING:
    from metaxy_core.migrations.models import Migration

#: the operation index of migration-level events (``started``, ``completed``, ``failed``, ``rolling_back``,
#: ``rolled_back``, ``stamped``)
MIGRATION_LEVEL = -1


class RollbackUnfinishedError(MetaxyError):
    """A migration's rollback started and did not finish: it must be finished before anything else runs."""


@dataclass(frozen=True)
class StepState:
    """The last recorded event of one (operation, feature) step."""

    op_index: int
    op_id: str
    op_type: str
    feature_key: str
    status: StepStatus
    rows: int
    duration_s: float
    note: str
    error: str
    run_id: str
    write_id: str
    writes: dict[str, int]
    at: datetime

    @property
    def done(self) -> bool:
        return self.status.done


@dataclass
class MigrationState:
    """Where one migration stands according to the log."""

    migration_id: str
    status: MigrationStatus = MigrationStatus.NOT_STARTED
    #: number of rollbacks so far; part of write ids so a re-apply never reuses a retracted one
    epoch: int = 0
    checksum: str | None = None
    run_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str = ""
    #: marked applied by ``metaxy migrations stamp``/``baseline`` without running (no rows written by it)
    stamped: bool = False
    #: the run that started the unfinished rollback (status ``rolling_back``)
    rollback_run_id: str | None = None
    steps: dict[tuple[int, str], StepState] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == MigrationStatus.COMPLETED

    @property
    def started(self) -> bool:
        """Anything was recorded since the last rollback (it may have written rows)."""
        return self.status != MigrationStatus.NOT_STARTED

    def step_done(self, op_index: int, feature_key: str) -> bool:
        step = self.steps.get((op_index, feature_key))
        return step is not None and step.done

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.steps.values() if s.done)

    @property
    def written(self) -> dict[str, list[str]]:
        """Feature key -> write ids of completed steps that wrote rows (what a rollback must hide)."""
        out: dict[str, list[str]] = {}
        for s in self.steps.values():
            for feature, rows in s.writes.items():
                if rows:
                    out.setdefault(feature, []).append(s.write_id)
        return out


def state_of(states: Mapping[str, MigrationState], migration_id: str) -> MigrationState:
    """The state of ``migration_id`` (not started when the log has nothing about it)."""
    return states.get(migration_id) or MigrationState(migration_id)


def refuse_unfinished_rollback(state: MigrationState) -> None:
    """Refuse to run anything of a migration whose rollback started and did not finish.

    Raises:
        RollbackUnfinishedError: naming the migration and ``metaxy migrations rollback``, which finishes it.
    """
    if state.status == MigrationStatus.ROLLING_BACK:
        raise RollbackUnfinishedError(
            f"migration {state.migration_id} is being rolled back (rollback started by run "
            f"{state.rollback_run_id or '?'} and not finished: it is running, or it was interrupted, and "
            "some of its rows may be hidden while others are not); run `metaxy migrations rollback "
            f"{state.migration_id}` to finish it, then apply again"
        )


def pending(migrations: Iterable[Migration], states: Mapping[str, MigrationState]) -> list[Migration]:
    """The migrations, in the given (chain) order, that are not completed: what an apply would run."""
    return [m for m in migrations if not state_of(states, m.migration_id).completed]


def applied(migrations: Iterable[Migration], states: Mapping[str, MigrationState]) -> list[Migration]:
    """The migrations, in the given (chain) order, that were applied at least partly since their last
    rollback: completed, in progress or failed (what a rollback has to undo)."""
    return [m for m in migrations if state_of(states, m.migration_id).started]


def fold(migration_id: str, rows: list[dict[str, Any]]) -> MigrationState:
    """One migration's events, in commit order, folded into its state; a ``rolled_back`` event starts over.

    A ``rolling_back`` event (a rollback began) makes the status ``rolling_back`` until the ``rolled_back``
    event that ends it: events after it do not change the status, so an interrupted rollback always shows.
    """
    cuts = [
        i
        for i, r in enumerate(rows)
        if r["op_index"] == MIGRATION_LEVEL and r["status"] == EventStatus.ROLLED_BACK
    ]
    if cuts:
        rows = rows[cuts[-1] + 1 :]
    state = MigrationState(migration_id, epoch=len(cuts))
    for row in rows:  # a migration has a handful of events, not rows of data
        if row["op_index"] == MIGRATION_LEVEL:
            if row["status"] == EventStatus.ROLLING_BACK:
                state.status = MigrationStatus.ROLLING_BACK
                state.rollback_run_id = row["run_id"]
            elif state.status == MigrationStatus.ROLLING_BACK:
                continue  # only its ``rolled_back`` ends an unfinished rollback
            elif row["status"] == EventStatus.STARTED:
                state.status = MigrationStatus.IN_PROGRESS
                state.checksum = row["checksum"]
                state.run_id = row["run_id"]
                state.started_at = state.started_at or row["at"]
            elif row["status"] == EventStatus.COMPLETED:
                state.status = MigrationStatus.COMPLETED
                state.finished_at = row["at"]
            elif row["status"] == EventStatus.FAILED:
                state.status = MigrationStatus.FAILED
                state.error = row["error"] or ""
            elif row["status"] == EventStatus.STAMPED:
                state.status = MigrationStatus.COMPLETED
                state.stamped = True
                state.checksum = row["checksum"] or state.checksum
                state.run_id = row["run_id"]
                state.finished_at = row["at"]
            continue
        state.steps[(row["op_index"], row["feature_key"])] = StepState(
            op_index=row["op_index"],
            op_id=row["op_id"],
            op_type=row["op_type"],
            feature_key=row["feature_key"],
            status=StepStatus(row["status"]),
            rows=row["rows"] or 0,
            duration_s=row["duration_s"] or 0.0,
            note=row["note"] or "",
            error=row["error"] or "",
            run_id=row["run_id"] or "",
            write_id=row["write_id"] or "",
            writes=json.loads(row["writes"] or "{}"),
            at=row["at"],
        )
    return state
