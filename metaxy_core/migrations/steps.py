"""Running one operation's steps: each (operation, feature) step under its write id, recorded in the log.

Split from :mod:`metaxy_core.migrations.executor` (which decides *what* runs: chain order, the lock,
checksums, parents): this module runs a step and records how it ended. A step's rows are written under the
deterministic write id :func:`step_write_id`, so a retry (or a unit of the same step on another worker, see
:mod:`metaxy_core.migrations.units`) shares it, and its completion or failure is one event in the migration
log.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from metaxy_core.errors import MetaxyError, StoreUnreachableError, redact
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import execute, progress
from metaxy_core.migrations.context import OperationContext, running_step, step_label
from metaxy_core.migrations.lock import LockLostError, StoreLock
from metaxy_core.migrations.models import Migration
from metaxy_core.migrations.ops import BaseOperation
from metaxy_core.migrations.results import (
    EventStatus,
    MigrationFailed,
    MigrationResult,
    ReportedFailure,
    RunStatus,
    StepResult,
    StepStatus,
    outcome_of,
    step_status,
)
from metaxy_core.migrations.state import MigrationState
from metaxy_core.migrations.usercode import located, step_error
from metaxy_core.reporting import ProgressCallback

if TYPE_CHECKING:
    from metaxy_core.store.delta import DeltaMetadataStore

#: the feature key of the one step of a migration's own ``execute`` (a CustomMigration's)
CUSTOM_FEATURE = "*"


class StepRunner:
    """Runs and records the steps of one operation; the base of
    :class:`~metaxy_core.migrations.executor.MigrationExecutor`, which provides the attributes below and
    :meth:`context`."""

    store: DeltaMetadataStore
    project: str
    run_id: str
    log: logging.Logger
    lock: StoreLock
    on_step: Callable[[StepResult], None] | None
    on_progress: ProgressCallback | None

    def context(self, migration: Migration, op_index: int, *, dry_run: bool) -> OperationContext:
        raise NotImplementedError

    def run_steps(
        self,
        migration: Migration,
        op_index: int,
        op: BaseOperation | None,
        state: MigrationState,
        *,
        dry_run: bool,
    ) -> list[StepResult]:
        if op is None:
            features = [CUSTOM_FEATURE]
            op_id, op_type = migration.operation_labels()[0]
            ctx = None
        else:
            try:
                ctx = self.context(migration, op_index, dry_run=dry_run)
                features = [str(f) for f in op.features_for(ctx)]
            except MetaxyError as exc:
                raise located(exc, migration) from exc.__cause__
            op_id, op_type = op.op_id, op.type or op.import_path()
        results = []
        for feature in features:
            if not dry_run and state.step_done(op_index, feature):
                done = state.steps[(op_index, feature)]
                results.append(
                    StepResult(
                        op_index=op_index,
                        op_id=op_id,
                        op_type=op_type,
                        feature_key=feature,
                        status=StepStatus.ALREADY_DONE,
                        rows=done.rows,
                        note=done.note,
                    )
                )
                continue
            run = execute.ExecuteRun(self, migration) if op is None else None
            outer = self._run_step(
                migration,
                op_index,
                op,
                ctx,
                feature,
                op_id,
                op_type,
                dry_run=dry_run,
                epoch=state.epoch,
                run=run,
            )
            results.extend(run.steps if run else [])  # what an execute() override ran via super().execute()
            results.append(outer)
        return results

    def _run_step(
        self,
        migration: Migration,
        op_index: int,
        op: BaseOperation | None,
        ctx: OperationContext | None,
        feature: str,
        op_id: str,
        op_type: str,
        *,
        dry_run: bool,
        epoch: int = 0,
        run: execute.ExecuteRun | None = None,
    ) -> StepResult:
        write_id = step_write_id(migration.migration_id, op_index, feature, epoch)
        method = execute.entry_method(migration, op)
        start = time.perf_counter()
        self.log.info(
            "%s %s: %s on %s", "planning" if dry_run else "applying", migration.migration_id, op_id, feature
        )
        step = running_step(step_label(migration.migration_id, op_id, feature), self.on_progress)
        with self.store.write_scope(write_id, dry_run=dry_run) as scope, step:
            try:
                if run is not None:
                    outcome = execute.run_execute(run, scope.rows_by_feature, method, dry_run=dry_run)
                else:
                    assert ctx is not None and op is not None
                    outcome = outcome_of(op.run(ctx, FeatureKey(feature)), method=method)
                status = step_status(outcome, op_id)
            except Exception as exc:
                if isinstance(exc, LockLostError):  # fenced out: nothing may be recorded, say why at once
                    raise
                exc = self.store.storage_error(exc) or exc  # S3 failed in a frame the operation collected
                duration = time.perf_counter() - start
                inner = run is not None and exc is run.failure  # already recorded by the failed operation
                message = exc.result.error if inner else step_error(exc, method, self.store.secrets)  # type: ignore[union-attr]
                result = StepResult(
                    op_index=op_index,
                    op_id=op_id,
                    op_type=op_type,
                    feature_key=feature,
                    status=StepStatus.FAILED,
                    rows=exc.rows if isinstance(exc, ReportedFailure) else 0,
                    duration_s=duration,
                    error=message,
                )
                if not dry_run and not _store_unreachable(exc, self.store):
                    try:
                        self.record_step(migration, result, write_id, scope.rows_by_feature)
                        progress.record(
                            self.store,
                            project=self.project,
                            migration_id=migration.migration_id,
                            status=EventStatus.FAILED,
                            run_id=self.run_id,
                            checksum=migration.checksum,
                            error=message,
                        )
                    except MetaxyError as record_error:  # the step's own error is the one to report
                        self.log.warning(
                            "could not record the failure in the migration log: %s", record_error
                        )
                self.notify(result)
                self.log.debug("step failed:\n%s", redact(traceback.format_exc(), self.store.secrets))
                if inner:
                    raise exc  # its message names the operation and the feature that failed
                failed = MigrationResult(
                    migration_id=migration.migration_id,
                    kind=migration.kind,
                    status=RunStatus.FAILED,
                    dry_run=dry_run,
                    steps=[result],
                    error=message,
                )
                where = f"{migration.source_path}: " if migration.source_path else ""
                what = f"operation {op_id}" + (f" on {feature}" if feature != CUSTOM_FEATURE else "")
                raise MigrationFailed(
                    f"{where}migration {migration.migration_id}, {what} failed: {message}. "
                    + (
                        "Fix the cause and run the dry run again."
                        if dry_run
                        else "Completed steps are kept; fix the cause and re-run `metaxy migrations apply` "
                        "to resume here."
                    ),
                    failed,
                ) from exc
        if dry_run and status == StepStatus.COMPLETED:
            status = StepStatus.PLANNED
        result = StepResult(
            op_index=op_index,
            op_id=op_id,
            op_type=op_type,
            feature_key=feature,
            status=status,
            rows=outcome.rows,
            duration_s=time.perf_counter() - start,
            note=outcome.note,
        )
        if not dry_run:
            writes = dict(scope.rows_by_feature)
            self.lock.check()  # first: a run whose lease was taken over must not record its step
            self.record_step(migration, result, write_id, writes)
        self.notify(result)
        return result

    def record_step(
        self, migration: Migration, result: StepResult, write_id: str, writes: dict[str, int]
    ) -> None:
        progress.record(
            self.store,
            project=self.project,
            migration_id=migration.migration_id,
            status=result.status,
            run_id=self.run_id,
            op_index=result.op_index,
            op_id=result.op_id,
            op_type=result.op_type,
            feature_key=result.feature_key,
            rows=result.rows,
            duration_s=result.duration_s,
            note=result.note,
            error=result.error,
            checksum=migration.checksum,
            write_id=write_id,
            writes=writes,
        )

    def notify(self, result: StepResult) -> None:
        if self.on_step is not None:
            self.on_step(result)


def step_write_id(migration_id: str, op_index: int, feature: str, epoch: int = 0) -> str:
    """Deterministic write id of a step: retries share it, a re-apply after a rollback does not."""
    base = f"{migration_id}/{op_index}/{feature.replace('/', '__')}"
    return base if epoch == 0 else f"{base}/r{epoch}"


def _store_unreachable(exc: BaseException, store: DeltaMetadataStore) -> bool:
    """The step failed because the metadata store itself cannot be reached: recording it would wait again."""
    return isinstance(exc, StoreUnreachableError) and store.root_uri in str(exc)
