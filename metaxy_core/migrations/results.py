"""What running a migration produces: step and migration results, and the status vocabulary.

Every status metaxy reports or records is a member of one of the :class:`~enum.StrEnum` classes below. Their
values are the strings stored in the migration log (and printed, and emitted as JSON), so stores written by
earlier versions read the same; a member compares equal to its string (``StepStatus.COMPLETED ==
"completed"``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from metaxy_core.errors import MetaxyError


class MigrationStatus(StrEnum):
    """Where a migration stands according to the migration log (``metaxy migrations status``).

    ``rolling_back``: a rollback started and has not finished (it runs, or it was interrupted): some of the
    migration's rows may be hidden, others not. Re-running ``metaxy migrations rollback`` finishes it; until
    then ``apply`` refuses to run the migration.
    """

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"


class RunStatus(StrEnum):
    """What one apply (or plan) of a migration did: :attr:`MigrationResult.status`.

    ``skipped`` is Metaxy's status for a dry run or a migration with nothing to do; user code written for
    Metaxy returns it, and it is not a failure.
    """

    COMPLETED = "completed"
    PLANNED = "planned"
    ALREADY_APPLIED = "already_applied"
    FAILED = "failed"
    SKIPPED = "skipped"


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
    it counts as completed, wrote no rows, and a rollback of it only records ``rolled_back``. A rollback
    records ``rolling_back`` before it hides anything and ``rolled_back`` once everything is hidden.
    """

    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    STAMPED = "stamped"


class StampStatus(StrEnum):
    """What stamping one migration did (``metaxy migrations stamp`` / ``baseline``)."""

    STAMPED = "stamped"
    ALREADY_APPLIED = "already_applied"


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

    The executor builds one from its steps; user code may build one the way code written for Metaxy does,
    with Metaxy's fields (``status``, ``features_completed``, ``features_failed``, ``features_skipped``,
    ``affected_features``, ``errors``, ``rows_affected``, ``duration_seconds``, ``timestamp``). Fields not
    given are derived from ``steps``. ``status`` is a :class:`RunStatus`: ``completed``, ``planned`` (dry
    run), ``already_applied``, ``failed`` or Metaxy's ``skipped``.

    A result :attr:`failed` when its status is ``failed`` or it reports ``errors`` or ``features_failed``;
    returned from a migration's ``execute``, such a result fails the migration with its message.

    Example:
        >>> MigrationResult(migration_id="20250101_000000_x", status="failed", features_completed=0,
        ...                 features_failed=1, features_skipped=0, affected_features=[],
        ...                 errors={"video/files": "bucket not found"}, rows_affected=0,
        ...                 duration_seconds=0.1, timestamp=datetime.now(timezone.utc)).failed
        True
    """

    # extra="forbid": a misspelt field (``row_affected=``) must not vanish silently
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    migration_id: str
    status: RunStatus
    kind: str = ""
    dry_run: bool = False
    steps: list[StepResult] = Field(default_factory=list)
    duration_s: float = Field(0.0, validation_alias=AliasChoices("duration_s", "duration_seconds"))
    error: str = ""
    features_completed: int = 0
    features_failed: int = 0
    features_skipped: int = 0
    affected_features: list[str] = Field(default_factory=list)
    #: feature key -> error message
    errors: dict[str, str] = Field(default_factory=dict)
    rows_affected: int = 0
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must be timezone-aware, e.g. datetime.now(timezone.utc)")
        return value

    @model_validator(mode="after")
    def _derive(self) -> MigrationResult:
        given = set(self.model_fields_set)
        if self.steps:
            features = [s.feature_key for s in self.steps if s.feature_key != "*"]
            failed = [s for s in self.steps if s.status == StepStatus.FAILED]
            if "rows_affected" not in given:
                self.rows_affected = sum(s.rows for s in self.steps)
            if "affected_features" not in given:
                self.affected_features = list(dict.fromkeys(features))
            failed_features = {s.feature_key for s in failed} - {"*"}
            if "features_failed" not in given:
                self.features_failed = len(failed_features)
            if "features_completed" not in given:
                self.features_completed = len(set(features) - failed_features)
            if "errors" not in given:
                self.errors = {s.feature_key: s.error for s in failed if s.error}
        if "error" not in given and self.errors:
            self.error = "; ".join(f"{feature}: {message}" for feature, message in self.errors.items())
        return self

    @property
    def duration_seconds(self) -> float:
        """``duration_s`` under Metaxy's name."""
        return self.duration_s

    @property
    def rows_total(self) -> int:
        return self.rows_affected

    @property
    def recompute_required(self) -> list[str]:
        return [s.feature_key for s in self.steps if s.status == StepStatus.RECOMPUTE_REQUIRED]

    def rows_by_feature(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.feature_key] = out.get(s.feature_key, 0) + s.rows
        return out

    @property
    def failed(self) -> bool:
        """The migration failed: status ``failed``, or errors / failed features reported."""
        return self.status == RunStatus.FAILED or bool(self.errors) or self.features_failed > 0

    @property
    def succeeded(self) -> bool:
        return not self.failed

    @property
    def failure_message(self) -> str:
        """What went wrong, in one line: ``error``, else ``errors``, else the failed features' count."""
        if self.error:
            return self.error
        if self.errors:
            return "; ".join(f"{feature}: {message}" for feature, message in self.errors.items())
        if self.features_failed:
            return f"{self.features_failed} feature(s) failed (no error message given)"
        return "status 'failed' (no error message given)"

    def summary(self) -> str:
        """A human-readable, multi-line summary (Metaxy's format)."""
        lines = [
            f"Migration: {self.migration_id}",
            f"Status: {self.status.upper()}",
            f"Timestamp: {self.timestamp.isoformat()}",
            f"Duration: {self.duration_s:.2f}s",
            f"Features: {self.features_completed} completed, {self.features_failed} failed",
            f"Rows affected: {self.rows_affected}",
        ]
        if self.affected_features:
            lines.append("\nFeatures processed:")
            lines.extend(f"  \u2713 {feature}" for feature in self.affected_features)
        if self.errors:
            lines.append("\nErrors:")
            lines.extend(f"  \u2717 {feature}: {message}" for feature, message in self.errors.items())
        return "\n".join(lines)


class ReportedFailure(MetaxyError):
    """User code reported a failure by returning it (a failed :class:`MigrationResult`) instead of raising.

    The step fails with the result's message exactly as if the code had raised; ``rows`` is what the
    result said it wrote before failing.
    """

    def __init__(self, message: str, rows: int = 0) -> None:
        super().__init__(message)
        self.rows = rows


def outcome_of(value: Any, *, method: str) -> StepOutcome:
    """What user code (a migration's ``execute``, an operation's ``run`` / ``execute`` /
    ``execute_for_feature``) returned, as the step's :class:`StepOutcome`.

    Accepted: a :class:`StepOutcome`; a :class:`MigrationResult` (its ``rows_affected``; a failed one
    fails the step); the number of rows (an int; None counts as 0); a dict of rows per feature (summed).

    Args:
        value: the returned value.
        method: the method that returned it, for messages (``"S3Backfill.execute()"``).

    Raises:
        ReportedFailure: ``value`` is a failed result (status ``failed``, or errors reported).
        MetaxyError: ``value`` is of no accepted kind, or a negative count.
    """
    if isinstance(value, StepOutcome):
        return value
    if isinstance(value, MigrationResult):
        if value.failed:
            raise ReportedFailure(
                f"{method} returned a failed result: {value.failure_message}", rows=value.rows_affected
            )
        note = f"{method} reported status '{value.status}'" if value.status == RunStatus.SKIPPED else ""
        return StepOutcome(value.rows_affected, note=note)
    if value is None:
        return StepOutcome(0)
    if isinstance(value, dict):
        return StepOutcome(sum(_count(v, method) for v in value.values()))
    return StepOutcome(_count(value, method))


def _count(value: Any, method: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        rows = operator.index(value)
    except TypeError:
        raise MetaxyError(
            f"{method} returned {type(value).__name__} {value!r:.60}; return the number of rows written (an "
            "int), a dict of rows per feature, or a MigrationResult"
        ) from None
    if rows < 0:
        raise MetaxyError(f"{method} returned {rows} rows; a row count cannot be negative")
    return rows


def step_status(outcome: StepOutcome, op_id: str) -> StepStatus:
    """The outcome's status as a :class:`StepStatus` (an operation may return the plain string)."""
    if outcome.status in (StepStatus.COMPLETED, StepStatus.RECOMPUTE_REQUIRED):
        return StepStatus(outcome.status)
    raise MetaxyError(
        f"operation {op_id} returned a StepOutcome with status {outcome.status!r}; an operation reports "
        f"'{StepStatus.COMPLETED}' or '{StepStatus.RECOMPUTE_REQUIRED}'"
    )


class MigrationFailed(MetaxyError):
    """A migration step raised; progress up to the failed step is kept, so a re-run resumes there."""

    def __init__(self, message: str, result: MigrationResult) -> None:
        super().__init__(message)
        self.result = result
