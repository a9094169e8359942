"""Applying migrations: chain order, the store lock, checksums, per-step progress and dry runs.

Every unit of work is a *step*: (migration, operation index, feature). A step's rows are written under the
deterministic write id ``<migration>/<op index>/<feature>`` and its completion is recorded in the migration
log, so a re-run after a crash skips completed steps and resumes at the first unfinished one (how a step runs
and is recorded: :mod:`metaxy_core.migrations.steps`). A dry run
takes no lock and records nothing: it runs every step in a write scope that refuses writes and reports the
rows each step would write.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from metaxy_core.errors import MetaxyError, format_validation_error, redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations import progress, units
from metaxy_core.migrations.chain import MigrationChain
from metaxy_core.migrations.context import OperationContext
from metaxy_core.migrations.lock import StoreLock
from metaxy_core.migrations.models import (
    Migration,
    OperationsMigration,
    affected_features,
    overrides_execute,
    revalidate,
)
from metaxy_core.migrations.ops import BaseOperation
from metaxy_core.migrations.results import (
    EventStatus,
    MigrationResult,
    MigrationStatus,
    RunStatus,
    StepResult,
)
from metaxy_core.migrations.state import MigrationState, pending, refuse_unfinished_rollback, state_of
from metaxy_core.migrations.steps import CUSTOM_FEATURE as CUSTOM_FEATURE  # re-exported: callers know it here
from metaxy_core.migrations.steps import StepRunner
from metaxy_core.migrations.steps import step_write_id as step_write_id
from metaxy_core.migrations.units import UnitRunner
from metaxy_core.migrations.usercode import located
from metaxy_core.reporting import ProgressCallback

if TYPE_CHECKING:
    from metaxy_core.store.delta import DeltaMetadataStore

logger = logging.getLogger("metaxy.migrations")


class MigrationEditedError(MetaxyError):
    """A migration file changed after it was (partly) applied."""


class ParentNotAppliedError(MetaxyError):
    """A migration was asked to run before its parent completed.

    Carries ``migration_id``, ``parent``, the parent's ``parent_status`` and the ``store_uri``, so a caller
    can word the fix for its own users (Dagster says which asset to materialize).
    """

    def __init__(self, migration_id: str, parent: str, parent_status: str, store_uri: str) -> None:
        self.migration_id, self.parent, self.parent_status = migration_id, parent, parent_status
        self.store_uri = store_uri
        super().__init__(
            f"migration {migration_id} follows {parent}, which is not applied yet; run "
            f"`metaxy migrations apply {migration_id}` to apply the chain up to it"
        )


def _in_graph(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``method`` with the executor's graph active, so user code (``build_operations``, operations,
    ``CustomMigration.execute``) and store calls without ``graph=`` see the same graph as the executor."""

    @functools.wraps(method)
    def wrapper(self: MigrationExecutor, *args: Any, **kwargs: Any) -> Any:
        with self.graph.use():
            return method(self, *args, **kwargs)

    return wrapper


class MigrationExecutor(StepRunner):
    """Runs migrations against one store.

    Args:
        store: the metadata store.
        project: project name (scopes snapshots, the log and the lock); default: the store's.
        graph: the code's feature graph; default: the active graph.
        run_id: identifies this run in the log and the lock (Dagster passes its run id).
        force: accept migrations whose file changed after they were partly applied.
        batch_rows: samples per bucket (and per Delta commit) of bulk steps such as reconciliation; it bounds
            their memory (about 1 GiB peak at the default, whatever the table size).
        on_step: called with every :class:`StepResult` as it finishes (progress bars, Dagster logs).
        on_progress: called while long steps run (rows done / total, rate, ETA), e.g. after each bucket.
        run_units: run the steps of operations that split into units of work (reconciliation) through this
            runner, layer by layer (e.g. local worker processes: ``metaxy migrations apply --workers N``);
            None (the default) runs every step whole, one after another, in this process.
    """

    def __init__(
        self,
        store: DeltaMetadataStore,
        *,
        project: str | None = None,
        graph: FeatureGraph | None = None,
        run_id: str | None = None,
        force: bool = False,
        batch_rows: int = 1_000_000,
        on_step: Callable[[StepResult], None] | None = None,
        on_progress: ProgressCallback | None = None,
        log: logging.Logger | None = None,
        run_units: UnitRunner | None = None,
    ) -> None:
        self.store = store
        self.project = project or store.project
        self.graph = graph if graph is not None else FeatureGraph.get_active()
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.force = force
        self.batch_rows = batch_rows
        self.on_step = on_step
        self.on_progress = on_progress
        self.log = log or logger
        self.lock = StoreLock(store, self.run_id)
        self.run_units = run_units

    # ------------------------------------------------------------------ status
    def states(self) -> dict[str, MigrationState]:
        return progress.read_states(self.store, self.project)

    def state(self, migration_id: str) -> MigrationState:
        return state_of(self.states(), migration_id)

    def pending(
        self,
        chain: MigrationChain,
        target: str | None = None,
        *,
        states: dict[str, MigrationState] | None = None,
    ) -> list[Migration]:
        """Migrations of ``chain`` up to ``target`` that are not completed, in chain order."""
        return pending(chain.upto(target), self.states() if states is None else states)

    # ------------------------------------------------------------------- apply
    def apply(
        self, chain: MigrationChain, target: str | None = None, *, dry_run: bool = False
    ) -> list[MigrationResult]:
        """Apply (or plan) pending migrations up to ``target`` in chain order; stops at the first failure.

        Raises:
            MigrationFailed: a step failed (its result, with the steps done so far, is attached).
        """
        if target is not None:
            chain.get(target)
        states = self.states()  # one read of the migration log for the whole decision
        todo = self.pending(chain, target, states=states)
        self.preflight(chain.upto(target), todo, states=states)
        results: list[MigrationResult] = []
        if not todo:
            return results
        if dry_run:
            return [self.apply_migration(m, dry_run=True) for m in todo]
        with self.lock:
            for m in todo:
                results.append(self.apply_migration(m, chain=chain))
        return results

    @_in_graph
    def preflight(
        self,
        migrations: list[Migration],
        todo: list[Migration],
        *,
        states: dict[str, MigrationState] | None = None,
    ) -> None:
        """Everything that can be checked without writing, before the lock is taken or anything is recorded.

        ``migrations`` (the chain up to the target) must match the files they were applied from; for every
        migration in ``todo``: its validators pass in the apply phase, its operations build, its snapshots
        were pushed and every feature its operations name is in the graph. A bad file therefore fails the
        command with nothing written, not after the lock and a ``started`` event.
        """
        states = self.states() if states is None else states
        for migration in migrations:
            self._check_checksum(migration, states.get(migration.migration_id))
        for migration in todo:
            self._revalidate(migration)
            operations = self._operations(migration)
            if operations == [None] and isinstance(migration, OperationsMigration):
                operations = self.built_operations(migration)  # what its execute()'s super() runs
            for index, op in enumerate(operations):
                if op is None:
                    continue
                try:
                    ctx = self.context(migration, index, dry_run=True)
                    for feature in op.features_for(ctx):
                        ctx.to_graph.spec(feature)
                except MetaxyError as exc:
                    raise located(exc, migration) from exc.__cause__

    def _check_checksum(self, migration: Migration, state: MigrationState | None) -> None:
        if state:  # and nothing runs of a migration whose rollback is unfinished
            refuse_unfinished_rollback(state)
        if state and state.checksum and state.checksum != migration.checksum and not self.force:
            raise MigrationEditedError(
                f"{migration.source_path or migration.migration_id} was edited after it was "
                f"{'applied' if state.completed else 'partly applied'} (recorded checksum {state.checksum}, "
                f"file now {migration.checksum}); revert the edit and put new work in a new migration, or "
                "pass --force to continue with the edited file"
            )

    @_in_graph
    def apply_migration(
        self, migration: Migration, *, dry_run: bool = False, chain: MigrationChain | None = None
    ) -> MigrationResult:
        """Apply (or plan) one migration: every operation in order, skipping completed steps."""
        start = time.perf_counter()
        state = self.state(migration.migration_id)
        if state.completed:
            return MigrationResult(
                migration_id=migration.migration_id,
                kind=migration.kind,
                status=RunStatus.ALREADY_APPLIED,
                dry_run=dry_run,
            )
        if chain is not None and not dry_run:
            self.check_parent(migration)
        steps: list[StepResult] = []
        if dry_run:
            for index in range(len(self._operations(migration))):
                steps.extend(self.run_operation(migration, index, dry_run=True, state=state))
            return MigrationResult(
                migration_id=migration.migration_id,
                kind=migration.kind,
                status=RunStatus.PLANNED,
                dry_run=True,
                steps=steps,
                duration_s=time.perf_counter() - start,
            )
        with self.lock:
            if self.state(migration.migration_id).completed:  # finished by another run meanwhile
                return MigrationResult(
                    migration_id=migration.migration_id,
                    kind=migration.kind,
                    status=RunStatus.ALREADY_APPLIED,
                    dry_run=False,
                )
            operations = self._operations(migration)
            for index in range(len(operations)):
                steps.extend(self.run_operation(migration, index, state=state, finish=False))
                state = self.state(migration.migration_id)
            self.finish(migration)
        return MigrationResult(
            migration_id=migration.migration_id,
            kind=migration.kind,
            status=RunStatus.COMPLETED,
            steps=steps,
            duration_s=time.perf_counter() - start,
        )

    def check_parent(self, migration: Migration) -> None:
        """The one parent check: refuse to apply ``migration`` before every migration it follows completed
        (both heads, for a merge migration).

        Raises:
            ParentNotAppliedError: with the first parent that is not completed and its status.
        """
        if not migration.parents:
            return
        states = self.states()
        for parent_id in migration.parents:
            parent = state_of(states, parent_id)
            if not parent.completed:
                raise ParentNotAppliedError(
                    migration.migration_id, parent_id, parent.status, self.store.root_uri
                )

    # -------------------------------------------------------------- steps
    @_in_graph
    def _operations(self, migration: Migration) -> list[BaseOperation | None]:
        """The migration's steps: its operations, or ``None`` standing for its own ``execute`` (a
        CustomMigration's, or a PythonMigration's override, which reaches the operations through
        ``super().execute()``: see :mod:`metaxy_core.migrations.execute`)."""
        if overrides_execute(migration):
            return [None]
        return list(self.built_operations(migration))

    @_in_graph
    def built_operations(self, migration: Migration) -> list[BaseOperation]:
        """The migration's operations, validated; errors name the file and ``build_operations()``."""
        try:
            return list(migration.operations(store=self.store))
        except MetaxyError as exc:
            raise located(exc, migration) from exc.__cause__
        except ValidationError as exc:
            raise MetaxyError(
                f"migration {migration.migration_id}: build_operations() returned an invalid operation: "
                f"{format_validation_error(exc)}"
            ) from None
        except Exception as exc:  # the user's build_operations() itself failed
            raise MetaxyError(
                f"{migration.source_path or migration.migration_id}: build_operations() raised "
                f"{type(exc).__name__}: {redact(str(exc), self.store.secrets)}; fix the migration "
                "(run with --raiseerr for the traceback)"
            ) from exc

    def _revalidate(self, migration: Migration) -> None:
        revalidate(migration, secrets=self.store.secrets)

    def begin(self, migration: Migration, state: MigrationState | None = None) -> MigrationState:
        """Check the checksum, run apply-phase validators and record ``started`` once per attempt."""
        state = state or self.state(migration.migration_id)
        self._check_checksum(migration, state)
        self._revalidate(migration)
        if state.status != MigrationStatus.IN_PROGRESS or state.checksum != migration.checksum:
            progress.record(
                self.store,
                project=self.project,
                migration_id=migration.migration_id,
                status=EventStatus.STARTED,
                run_id=self.run_id,
                checksum=migration.checksum,
            )
            state = self.state(migration.migration_id)
        return state

    def finish(self, migration: Migration) -> None:
        progress.record(
            self.store,
            project=self.project,
            migration_id=migration.migration_id,
            status=EventStatus.COMPLETED,
            run_id=self.run_id,
            checksum=migration.checksum,
        )
        # Keep state checks cheap: the log gets one small file per event; compact it now and then.
        from metaxy_core.store.maintenance import compact_fragmented_system_tables

        try:
            compact_fragmented_system_tables(self.store)
        except MetaxyError as exc:  # maintenance never fails a migration; the next completion retries
            self.log.debug("compacting the system tables failed: %s", exc)

    def context(self, migration: Migration, op_index: int, *, dry_run: bool) -> OperationContext:
        from_graph, to_graph = migration.resolve_graphs(self.store, self.project, self.graph)
        affected = affected_features(migration, self.store, self.project, self.graph)
        return OperationContext(
            store=self.store,
            project=self.project,
            migration=migration,
            op_index=op_index,
            to_graph=to_graph,
            from_graph=from_graph,
            affected=list(affected),
            run_id=self.run_id,
            dry_run=dry_run,
            batch_rows=self.batch_rows,
            log=self.log,
            on_progress=self.on_progress,
        )

    @_in_graph
    def run_operation(
        self,
        migration: Migration,
        op_index: int,
        *,
        dry_run: bool = False,
        state: MigrationState | None = None,
        finish: bool | None = None,
    ) -> list[StepResult]:
        """Run (or plan) every unfinished feature step of one operation.

        Self-contained so that Dagster can run each operation in its own op/process: it takes the lock,
        records ``started`` if needed and, for the last operation (``finish`` default), records completion.
        """
        operations = self._operations(migration)
        if not 0 <= op_index < len(operations):
            raise MetaxyError(f"migration {migration.migration_id} has no operation #{op_index}")
        state = state or self.state(migration.migration_id)
        if state.completed:
            return []
        finish = (op_index == len(operations) - 1) if finish is None else finish
        if dry_run:
            self._revalidate(migration)
            return self.run_steps(migration, op_index, operations[op_index], state, dry_run=True)
        with self.lock:
            # Read again under the lock: another run may have progressed since the caller's read.
            state = self.state(migration.migration_id)
            if state.completed:
                return []
            state = self.begin(migration, state)
            op = operations[op_index]
            if self.run_units is not None and units.splits(op):
                results = units.run_operation_units(self, migration, op_index, state, self.run_units)
            else:
                results = self.run_steps(migration, op_index, op, state, dry_run=False)
            if finish:
                self.finish(migration)
        return results
