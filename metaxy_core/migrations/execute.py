"""A migration's own ``execute``: run as the migration's one step, with ``super().execute()`` inside it.

Metaxy lets a migration override ``execute`` for hooks around its operations (validation, logging, pre- and
post-steps) and call ``super().execute(store, project, dry_run=dry_run)`` for the operations themselves. The
executor honours that: it runs the override as the migration's one step (``execute``, feature ``*``), and the
``super()`` call, arriving here through :func:`execute_operations`, runs the operations as steps of their
own inside it, so they are resumable and attributed for rollback like any others. What the override returns
is then the step's outcome (:func:`~metaxy_core.migrations.results.outcome_of`): a failed result fails the
migration, and so does an operation that failed inside it, whatever the override returned.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from metaxy_core.migrations.models import Migration, OperationsMigration, overrides
from metaxy_core.migrations.ops import BaseOperation
from metaxy_core.migrations.results import (
    MigrationFailed,
    MigrationResult,
    RunStatus,
    StepOutcome,
    StepResult,
    outcome_of,
)

if TYPE_CHECKING:
    from metaxy_core.migrations.executor import MigrationExecutor
    from metaxy_core.store.delta import DeltaMetadataStore


@dataclass
class ExecuteRun:
    """A migration's own ``execute`` running as its one step; where its ``super().execute()`` goes."""

    executor: MigrationExecutor
    migration: Migration
    #: the steps of the operations it ran through ``super().execute()``
    steps: list[StepResult] = field(default_factory=list)
    failure: MigrationFailed | None = None
    ran_operations: bool = False


_RUNNING: ContextVar[ExecuteRun | None] = ContextVar("metaxy_execute_run", default=None)


def execute_operations(
    migration: Migration, store: DeltaMetadataStore, project: str, *, dry_run: bool = False
) -> MigrationResult:
    """What ``Migration.execute`` does: run the migration's operations through the engine.

    From inside the migration's own ``execute`` override (the executor running it), the operations run as
    steps of that run; called anywhere else, the migration is applied (or planned) on its own, as Metaxy's
    ``migration.execute(store, project)`` does.
    """
    run = _RUNNING.get()
    if run is not None and run.migration is migration:
        return run_operations_of(run, dry_run=dry_run)
    from metaxy_core.migrations.executor import MigrationExecutor

    return MigrationExecutor(store, project=project).apply_migration(migration, dry_run=dry_run)


def run_execute(run: ExecuteRun, written: dict[str, int], method: str, *, dry_run: bool) -> StepOutcome:
    """Call the migration's own ``execute`` and turn what it returns into the step's outcome.

    ``written`` is the step's write scope tally (rows the override wrote itself, outside its operations).

    Raises:
        MigrationFailed: an operation it ran through ``super().execute()`` failed (already recorded).
        ReportedFailure: it returned a failed result.
    """
    executor, migration = run.executor, run.migration
    token = _RUNNING.set(run)
    try:
        value = type(migration).execute(migration, executor.store, executor.project, dry_run=dry_run)
    finally:
        _RUNNING.reset(token)
    if run.failure is not None:
        raise run.failure
    outcome = outcome_of(value, method=method)
    if run.ran_operations:  # their rows are counted by their own steps; this one counts its hooks' writes
        return StepOutcome(sum(written.values()), note=outcome.note)
    if isinstance(migration, OperationsMigration) and overrides(migration, "build_operations"):
        note = f"{method} did not call super().execute(), so build_operations() was not run"
        executor.log.warning("%s: %s", migration.migration_id, note)
        return StepOutcome(outcome.rows, note=note)
    if value is None:  # nothing reported: the rows it wrote through the store
        return StepOutcome(sum(written.values()), note=outcome.note)
    return outcome


def run_operations_of(run: ExecuteRun, *, dry_run: bool) -> MigrationResult:
    """The operations of ``run.migration``, run as its own steps from inside its ``execute`` override
    (what ``super().execute()`` does there): completed steps are skipped, so a re-run resumes.

    A failing step is recorded and returned as a failed result, as Metaxy's ``execute`` returns one; the
    migration fails whatever the override then returns.
    """
    executor, migration, start = run.executor, run.migration, time.perf_counter()
    run.ran_operations = True
    steps: list[StepResult] = []
    status, error = (RunStatus.PLANNED if dry_run else RunStatus.COMPLETED), ""
    with executor.graph.use():
        state = executor.state(migration.migration_id)
        try:
            for index, op in enumerate(executor.built_operations(migration)):
                steps.extend(executor.run_steps(migration, index, op, state, dry_run=dry_run))
        except MigrationFailed as exc:
            run.failure = exc
            steps.extend(exc.result.steps)
            status, error = RunStatus.FAILED, exc.result.error
    run.steps.extend(steps)
    return MigrationResult(
        migration_id=migration.migration_id,
        kind=migration.kind,
        status=status,
        dry_run=dry_run,
        steps=steps,
        duration_s=time.perf_counter() - start,
        error=error,
    )


def entry_method(migration: Migration, op: BaseOperation | None) -> str:
    """The user-facing method a step calls, for messages: ``S3Backfill.execute_for_feature()``."""
    if op is None:
        return f"{type(migration).__qualname__}.execute()"
    implemented = type(op).implemented()
    return f"{type(op).__qualname__}.{implemented[0] if implemented else 'run'}()"
