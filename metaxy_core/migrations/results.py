"""What running a migration produces: step and migration results, and the status vocabulary.

Every status metaxy reports or records is a member of one of the :class:`~enum.StrEnum` classes below. Their
values are the strings stored in the migration log (and printed, and emitted as JSON), so stores written by
earlier versions read the same; a member compares equal to its string (``StepStatus.COMPLETED ==
"completed"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from metaxy_core.errors import MetaxyError


class MigrationStatus(StrEnum):
    """Where a migration stands according to the migration log (``metaxy migrations status``)."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class RunStatus(StrEnum):
    """What one apply (or plan) of a migration did: :attr:`MigrationResult.status`."""

    COMPLETED = "completed"
    PLANNED = "planned"
    ALREADY_APPLIED = "already_applied"
    FAILED = "failed"


class StepStatus(StrEnum):
    """What one (operation, feature) step did: :attr:`StepResult.status`, :attr:`StepOutcome.status`.

    ``recompute_required`` is not a failure: a root feature changed, so its rows must be recomputed by the
    pipeline. ``planned`` and ``already_done`` are reported, never recorded in the log.
    """

    COMPLETED = "completed"
    PLANNED = "planned"
    RECOMPUTE_REQUIRED = "recompute_required"
    ALREADY_DONE = "already_done"
    FAILED = "failed"

    @property
    def done(self) -> bool:
        """The step finished: a re-run skips it."""
        return self in (StepStatus.COMPLETED, StepStatus.RECOMPUTE_REQUIRED)


class EventStatus(StrEnum):
    """Statuses of the migration-level events of the log (a ``rolled_back`` event restarts the history).

    ``stamped`` marks a migration applied without running it (``metaxy migrations stamp`` / ``baseline``):
    it counts as completed, wrote no rows, and a rollback of it only records ``rolled_back``.
    """

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    STAMPED = "stamped"


class RollbackStatus(StrEnum):
    """What rolling back one migration did."""

    ROLLED_BACK = "rolled_back"
    PLANNED = "planned"
    NOT_APPLIED = "not_applied"


@dataclass(frozen=True)
class StepOutcome:
    """What one (operation, feature) step did, as an operation's ``run`` returns it.

    ``status`` is ``completed`` or ``recompute_required`` (a root feature changed: the data must be
    recomputed by the pipeline; not a failure). ``rows`` counts rows written, or that would be in a dry run.
    """

    rows: int
    status: StepStatus = StepStatus.COMPLETED
    note: str = ""


class StepResult(BaseModel):
    """One (operation, feature) step of a migration run or plan."""

    op_index: int
    op_id: str
    op_type: str
    feature_key: str
    status: StepStatus
    rows: int = 0
    duration_s: float = 0.0
    note: str = ""
    error: str = ""


class MigrationResult(BaseModel):
    """What applying (or planning) one migration did.

    ``status`` is a :class:`RunStatus`: ``completed``, ``planned`` (dry run), ``already_applied``, ``failed``.
    """

    migration_id: str
    kind: str
    status: RunStatus
    dry_run: bool = False
    steps: list[StepResult] = Field(default_factory=list)
    duration_s: float = 0.0
    error: str = ""

    @property
    def rows_total(self) -> int:
        return sum(s.rows for s in self.steps)

    @property
    def recompute_required(self) -> list[str]:
        return [s.feature_key for s in self.steps if s.status == StepStatus.RECOMPUTE_REQUIRED]

    def rows_by_feature(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.feature_key] = out.get(s.feature_key, 0) + s.rows
        return out

    @property
    def succeeded(self) -> bool:
        return self.status != RunStatus.FAILED


class MigrationFailed(MetaxyError):
    """A migration step raised; progress up to the failed step is kept, so a re-run resumes there."""

    def __init__(self, message: str, result: MigrationResult) -> None:
        super().__init__(message)
        self.result = result
