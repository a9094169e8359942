"""The migration verbs: status, list, apply, generate, explain, history, verify, rollback and unlock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from metaxy_core.commands.project import Project
from metaxy_core.commands.workers import WorkerPool
from metaxy_core.errors import MetaxyError
from metaxy_core.migrations import progress
from metaxy_core.migrations.generator import GeneratedMigration, generate, generate_merge
from metaxy_core.migrations.loader import UnloadableMigration, load_chain_lenient
from metaxy_core.migrations.lock import LeaseInfo, StoreLock
from metaxy_core.migrations.models import DiffMigration, Migration, affected_features
from metaxy_core.migrations.results import MigrationResult, MigrationStatus, StepResult, StepStatus
from metaxy_core.migrations.rollback import RollbackResult, rollback, rollback_targets
from metaxy_core.migrations.state import MigrationState, state_of
from metaxy_core.migrations.verify import MigrationVerification, verify_migration
from metaxy_core.reporting import ProgressCallback


@dataclass
class MigrationStatusRow:
    migration_id: str
    kind: str
    #: the id it follows, or the list of heads a merge migration joins
    parent: str | list[str]
    status: MigrationStatus
    path: str
    rows: int = 0
    steps_done: int = 0
    steps_failed: int = 0
    edited: bool = False
    error: str = ""
    #: why the migration's file cannot be loaded right now (a validator that cannot reach its database...)
    load_error: str = ""
    #: marked applied by ``stamp``/``baseline`` without running
    stamped: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _status_row(migration: Migration, state: MigrationState) -> MigrationStatusRow:
    return MigrationStatusRow(
        migration_id=migration.migration_id,
        kind=migration.kind,
        parent=migration.parent,
        status=state.status,
        path=str(migration.source_path or ""),
        rows=state.rows,
        steps_done=sum(1 for s in state.steps.values() if s.done),
        steps_failed=sum(1 for s in state.steps.values() if s.status == StepStatus.FAILED),
        edited=bool(state.checksum and state.checksum != migration.checksum)
        and not isinstance(migration, UnloadableMigration),
        load_error=migration.load_error if isinstance(migration, UnloadableMigration) else "",
        error=state.error,
        stamped=state.stamped,
        steps=[
            {
                "op_index": s.op_index,
                "op_id": s.op_id,
                "feature": s.feature_key,
                "status": s.status,
                "rows": s.rows,
                "note": s.note,
                "error": s.error,
            }
            for s in sorted(state.steps.values(), key=lambda s: (s.op_index, s.feature_key))
        ],
    )


@dataclass
class StatusReport:
    """Where every migration of the chain stands, in chain order."""

    migrations_dir: Path
    migrations: list[MigrationStatusRow]

    def as_dict(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.migrations]

    @property
    def unloadable(self) -> list[MigrationStatusRow]:
        """Rows whose file cannot be loaded right now (the status command then exits 1)."""
        return [r for r in self.migrations if r.load_error]


def migrations_status(project: Project) -> StatusReport:
    """Status of every migration in the chain.

    A file that cannot be loaded (a validator that cannot reach its database, say) keeps its place in the
    chain when it still states its id and parent: its row shows the error, so one unreachable database does
    not hide the state of the others (the CLI then exits 1).

    Raises:
        ChainError: the chain is broken (the message names the file).
    """
    config = project.config
    config.add_import_path()
    with project.graph.use():
        chain, errors = load_chain_lenient(config.migrations_path)
    states = project.states() if len(chain) else {}
    rows = [_status_row(m, state_of(states, m.migration_id)) for m in chain]
    placed = {r.path for r in rows}
    for error in errors:  # files that cannot even be placed (a malformed file name or YAML)
        if str(error.path) not in placed:
            rows.append(
                MigrationStatusRow(
                    migration_id=error.path.name.rsplit(".", 1)[0],
                    kind=UnloadableMigration.kind,
                    parent="?",
                    status=MigrationStatus.NOT_STARTED,
                    path=str(error.path),
                    load_error=str(error),
                )
            )
    return StatusReport(config.migrations_path, rows)


@dataclass
class MigrationFile:
    migration_id: str
    kind: str
    #: the id it follows, or the list of heads a merge migration joins
    parent: str | list[str]
    path: str
    description: str
    from_snapshot_version: str | None
    to_snapshot_version: str | None


@dataclass
class ChainListing:
    """The migration chain as files, first to head."""

    migrations: list[MigrationFile]

    def as_dict(self) -> list[dict[str, Any]]:
        return [asdict(m) for m in self.migrations]


def migrations_list(project: Project) -> ChainListing:
    """The migration chain as files (no store access)."""
    return ChainListing(
        [
            MigrationFile(
                migration_id=m.migration_id,
                kind=m.kind,
                parent=m.parent,
                path=str(m.source_path or ""),
                description=m.summary(),
                from_snapshot_version=getattr(m, "from_snapshot_version", None),
                to_snapshot_version=getattr(m, "to_snapshot_version", None),
            )
            for m in project.chain
        ]
    )


@dataclass
class ApplyReport:
    """What applying (or planning) the pending migrations did, one result per migration."""

    results: list[MigrationResult]
    dry_run: bool = False

    def as_dict(self) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in self.results]

    @property
    def recompute_required(self) -> list[str]:
        """Features the pipeline must recompute (changed root features), sorted."""
        return sorted({f for r in self.results for f in r.recompute_required})


def migrations_apply(
    project: Project,
    target: str | None = None,
    *,
    dry_run: bool = False,
    force: bool = False,
    on_step: Callable[[StepResult], None] | None = None,
    on_progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> ApplyReport:
    """Apply pending migrations up to MIGRATION_ID (default: all).

    A dry run plans instead: it writes nothing and reports the rows each step would write. ``on_step`` hears
    every finished step, ``on_progress`` long steps while they run (rows done / total, rate, ETA).
    ``workers`` (default: the ``workers`` setting, 1) above 1 runs the units of work of reconciliations in
    that many local processes (see docs/scale.md); the result is the same as with one.

    Raises:
        MigrationFailed: a step failed; progress so far is kept and a re-run resumes.
    """
    chain = project.chain
    workers = project.config.workers if workers is None else workers
    if workers < 1:
        raise MetaxyError(f"--workers {workers}: give 1 or more worker processes")
    executor = project.executor(force=force, on_step=on_step, on_progress=on_progress)
    if workers == 1 or dry_run:
        return ApplyReport(executor.apply(chain, target, dry_run=dry_run), dry_run)
    pool = WorkerPool(
        project.config, workers=workers, run_id=executor.run_id, batch_rows=executor.batch_rows, force=force
    )
    with pool:
        executor.run_units = pool
        return ApplyReport(executor.apply(chain, target), dry_run)


def migrations_generate(
    project: Project, name: str | None = None, *, merge: bool = False
) -> GeneratedMigration:
    """Write a reconciliation migration for the code's graph changes (--merge: join the chain's heads)."""
    if merge:
        return generate_merge(project.forked_chain(), project.config.migrations_path, name=name)
    return generate(
        project.store,
        project.graph,
        project.chain,
        project.config.migrations_path,
        project=project.config.project,
        name=name,
    )


@dataclass
class MigrationExplanation:
    """Everything about one migration: its file, operations, affected features and progress."""

    migration_id: str
    kind: str
    path: str
    parent: str
    description: str
    checksum: str
    operations: list[dict[str, str]]
    affected_features: list[str]
    status: MigrationStatusRow
    from_snapshot_version: str | None = None
    to_snapshot_version: str | None = None
    #: why the affected features could not be computed (e.g. a snapshot that was never pushed)
    affected_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "migration_id": self.migration_id,
            "kind": self.kind,
            "path": self.path,
            "parent": self.parent,
            "description": self.description,
            "checksum": self.checksum,
            "operations": self.operations,
        }
        if self.from_snapshot_version is not None or self.to_snapshot_version is not None:
            out["from_snapshot_version"] = self.from_snapshot_version
            out["to_snapshot_version"] = self.to_snapshot_version
        if self.affected_error is not None:
            out["affected_error"] = self.affected_error
        out["affected_features"] = self.affected_features
        out["status"] = self.status.as_dict()
        return out


def migrations_explain(project: Project, migration_id: str) -> MigrationExplanation:
    """Details of one migration.

    Its file, operations, affected features (or why they cannot be computed) and progress.
    """
    m: Migration = project.chain.get(migration_id)
    try:
        affected, error = affected_features(m, project.store, project.config.project, project.graph), None
    except MetaxyError as exc:
        affected, error = [], str(exc)
    return MigrationExplanation(
        migration_id=m.migration_id,
        kind=m.kind,
        path=str(m.source_path or ""),
        parent=m.parent,
        description=m.summary(),
        checksum=m.checksum,
        operations=[{"id": i, "type": t} for i, t in m.operation_labels()],
        affected_features=[str(k) for k in affected],
        status=_status_row(m, state_of(project.states(), m.migration_id)),
        from_snapshot_version=m.from_snapshot_version if isinstance(m, DiffMigration) else None,
        to_snapshot_version=m.to_snapshot_version if isinstance(m, DiffMigration) else None,
        affected_error=error,
    )


@dataclass
class LogEvent:
    """One event of the migration log."""

    at: str
    migration_id: str
    op_index: int
    op_id: str
    feature_key: str
    status: str
    rows: int
    duration_s: float
    run_id: str
    error: str


@dataclass
class MigrationHistory:
    """The migration log, event by event, oldest first."""

    events: list[LogEvent]

    def as_dict(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.events]


def migrations_history(project: Project, migration_id: str | None = None) -> MigrationHistory:
    """The migration log, event by event."""
    events = progress.read_events(project.store, project.config.project)
    if migration_id:
        events = events.filter(events["migration_id"] == migration_id)
    names = [f.name for f in fields(LogEvent)]
    return MigrationHistory(
        [
            LogEvent(**{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()})
            for row in events.select(names).to_dicts()
        ]
    )


@dataclass
class VerificationReport:
    """The verdict of ``metaxy migrations verify``: one verification per migration, in chain order."""

    migrations: list[MigrationVerification]

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.migrations)

    @property
    def failed(self) -> list[MigrationVerification]:
        return [v for v in self.migrations if not v.passed]

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "migrations": [v.as_dict() for v in self.migrations]}


def migrations_verify(project: Project, migration_id: str | None = None) -> VerificationReport:
    """Check that MIGRATION_ID (default: every migration) is applied and left nothing at the old version.

    The verdict of the Dagster "verified" asset checks
    (:func:`~metaxy_core.migrations.verify.verify_migration`).
    """
    chain = project.chain
    migrations = [chain.get(migration_id)] if migration_id is not None else list(chain)
    states = project.states() if migrations else {}
    return VerificationReport(
        [verify_migration(project.store, m, graph=project.graph, states=states) for m in migrations]
    )


@dataclass
class RollbackReport:
    """What rolling back did (or, in a dry run, would do), newest migration first."""

    results: list[RollbackResult]
    dry_run: bool = False

    def as_dict(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.results]


class NotConfirmed(MetaxyError):
    """The operator did not confirm a rollback of several migrations; nothing was changed."""


def migrations_rollback(
    project: Project,
    target: str | None = None,
    *,
    dry_run: bool = False,
    confirm: Callable[[list[str]], bool] | None = None,
) -> RollbackReport:
    """Undo the newest applied migration, or all down to MIGRATION_ID.

    ``confirm`` is asked (with the ids, newest first) before more than one migration is rolled back; the CLI
    prompts on a terminal. A ``False`` answer changes nothing.

    Raises:
        NotConfirmed: ``confirm`` said no.
    """
    chain, executor = project.chain, project.executor()
    if confirm is not None and not dry_run:
        ids = rollback_targets(chain, executor.states(), target)
        if len(ids) > 1 and not confirm(ids):
            raise NotConfirmed(
                f"rollback of {len(ids)} migrations ({', '.join(ids)}) not confirmed; nothing changed"
            )
    return RollbackReport(rollback(executor, chain, target, dry_run=dry_run), dry_run)


@dataclass
class UnlockResult:
    """The lease ``metaxy migrations unlock`` released (None: the store was not locked)."""

    released: LeaseInfo | None

    def as_dict(self) -> dict[str, Any]:
        return {"released": self.released.owner if self.released else None}


def migrations_unlock(project: Project, *, force: bool = False) -> UnlockResult:
    """Release the store's migration lock held by a dead run.

    A lease whose heartbeat is fresh (its holder looks alive) is refused, naming its holder, unless ``force``:
    the holder would then stop at its next write.

    Raises:
        LeaseAliveError: the lease's heartbeat is fresh and ``force`` is false.
    """
    return UnlockResult(StoreLock(project.store, owner="metaxy-unlock").force_release(force=force))
