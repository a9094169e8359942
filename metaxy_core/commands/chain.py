"""Gates and chain shape: ``migrations check``, ``validate`` and ``heads`` (Flyway's validate, Alembic's
check and heads).

``check`` answers a deploy script's question, "is this store exactly at the code's migrations?", cheaply.
``validate`` goes further without applying anything: every file loads, the chain is one line, applied files
are unedited, every snapshot a migration names is known, and pending migrations would start (their
operations build, their features exist, their apply-phase validators pass). Both list one line per problem.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from metaxy_core.commands.project import Project
from metaxy_core.errors import MetaxyError
from metaxy_core.migrations.chain import ChainError, ForkError, MigrationChain
from metaxy_core.migrations.executor import MigrationEditedError
from metaxy_core.migrations.loader import MigrationLoadError, MigrationLoadErrors
from metaxy_core.migrations.models import DiffMigration, FullGraphMigration, Migration
from metaxy_core.migrations.results import MigrationStatus
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir
from metaxy_core.migrations.state import MigrationState, pending, state_of


class ProblemKind(StrEnum):
    """What is wrong with a migration, as ``check`` and ``validate`` report it."""

    PENDING = "pending"
    EDITED = "edited"
    MISSING_FILE = "missing_file"
    LOAD_ERROR = "load_error"
    CHAIN = "chain"
    SNAPSHOT = "snapshot"
    INVALID = "invalid"


@dataclass
class Problem:
    """One problem: the migration (or file) and a message that ends with the fix."""

    kind: ProblemKind
    migration_id: str
    message: str
    path: str = ""

    def line(self) -> str:
        return f"{self.migration_id or self.path}: {self.kind}: {self.message}"


@dataclass
class CheckReport:
    """The verdict of ``metaxy migrations check``: ok when nothing is pending and no applied file changed."""

    migrations: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "migrations": self.migrations, "problems": [asdict(p) for p in self.problems]}


def migrations_check(project: Project) -> CheckReport:
    """Exit 0 when every migration is applied and unedited, 1 otherwise (one line per problem; for CI).

    Reads the files and the store's log only. Problems: a migration not applied (pending, in progress or
    failed), an applied file whose checksum changed, an applied migration whose file is gone.

    Raises:
        MetaxyError: a file cannot be loaded or the chain is broken (``validate`` lists every such problem).
    """
    chain = project.chain
    states = project.states()
    problems = _log_problems(chain, states)
    for m in pending(chain, states):
        state = state_of(states, m.migration_id)
        text = (
            "not applied" if state.status == MigrationStatus.NOT_STARTED else state.status.replace("_", " ")
        )
        text += f" ({state.error})" if state.error else ""
        problems.append(
            Problem(ProblemKind.PENDING, m.migration_id, f"{text}; run `metaxy migrations apply`", _path(m))
        )
    order = {mid: i for i, mid in enumerate(chain.ids)}
    problems.sort(key=lambda p: (order.get(p.migration_id, len(order)), p.kind != ProblemKind.EDITED))
    return CheckReport(len(chain), problems)


@dataclass
class ValidationReport:
    """The verdict of ``metaxy migrations validate``: every problem found without applying anything."""

    migrations: int
    pending: list[str]
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "migrations": self.migrations,
            "pending": self.pending,
            "problems": [asdict(p) for p in self.problems],
        }


def migrations_validate(project: Project) -> ValidationReport:
    """Check files, chain, checksums and snapshots against the store, and that pending migrations would start.

    Nothing is applied, locked or recorded. Every bad file is listed (not only the first); a forked chain is
    one problem and the rest is still validated.
    """
    try:
        chain = project.forked_chain()
    except MigrationLoadErrors as exc:
        return ValidationReport(0, [], [_load_problem(e) for e in exc.errors])
    except MigrationLoadError as exc:
        return ValidationReport(0, [], [_load_problem(exc)])
    except ChainError as exc:
        return ValidationReport(0, [], [Problem(ProblemKind.CHAIN, "", str(exc))])
    problems: list[Problem] = []
    if len(chain.heads) > 1:
        try:
            _ = chain.head
        except ForkError as exc:
            problems.append(Problem(ProblemKind.CHAIN, "", str(exc)))
    states = project.states() if len(chain) else {}
    problems += _log_problems(chain, states)
    flagged = {p.migration_id for p in problems}
    known = _known_snapshots(project)
    files = SnapshotFiles(snapshots_dir(project.config.migrations_path))
    todo = pending(chain, states)
    todo_ids = {m.migration_id for m in todo}
    executor = project.executor()
    for m in chain:
        found = _snapshot_problems(m, known, files)
        problems += found
        if found or m.migration_id in flagged or m.migration_id not in todo_ids:
            continue
        try:  # what an apply checks before it takes the lock: operations, features, apply-phase validators
            executor.preflight([m], [m], states=states)
        except MigrationEditedError:
            continue  # reported from the log already
        except MetaxyError as exc:
            problems.append(Problem(ProblemKind.INVALID, m.migration_id, str(exc), _path(m)))
    return ValidationReport(len(chain), [m.migration_id for m in todo], problems)


@dataclass
class HeadInfo:
    migration_id: str
    path: str
    status: str


@dataclass
class HeadsReport:
    """The chain's heads (one when it is valid); several after two branches each added a migration."""

    heads: list[HeadInfo]
    #: the newest migration every head follows (``None`` for an empty chain or unrelated first migrations)
    branch_point: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"heads": [asdict(h) for h in self.heads], "branch_point": self.branch_point}


def migrations_heads(project: Project) -> HeadsReport:
    """List the chain's heads; several mean a fork to join with `generate --merge`."""
    chain = project.forked_chain()
    states = project.states() if len(chain) else {}
    heads = [
        HeadInfo(m.migration_id, _path(m), str(state_of(states, m.migration_id).status)) for m in chain.heads
    ]
    branch_point = None
    if len(heads) > 1:
        try:
            _ = chain.head
        except ForkError as exc:
            branch_point = exc.parent
        except ChainError:  # unrelated first migrations
            branch_point = None
    return HeadsReport(heads, branch_point)


# -------------------------------------------------------------------------------------------------- helpers
def _path(m: Migration) -> str:
    return str(m.source_path or "")


def _load_problem(exc: MigrationLoadError) -> Problem:
    return Problem(ProblemKind.LOAD_ERROR, "", str(exc), str(exc.path))


def _log_problems(chain: MigrationChain, states: dict[str, MigrationState]) -> list[Problem]:
    """Applied files edited since, and migrations the log has applied whose file is gone."""
    problems = []
    for m in chain:
        state = states.get(m.migration_id)
        if state is not None and state.started and state.checksum and state.checksum != m.checksum:
            problems.append(
                Problem(
                    ProblemKind.EDITED,
                    m.migration_id,
                    f"file changed since it was {'applied' if state.completed else 'partly applied'} "
                    f"(recorded checksum {state.checksum}, file now {m.checksum}); revert the edit and put "
                    "new work in a new migration",
                    _path(m),
                )
            )
    for migration_id, state in sorted(states.items()):
        if migration_id not in chain and state.started:
            problems.append(
                Problem(
                    ProblemKind.MISSING_FILE,
                    migration_id,
                    f"{state.status} in the store's migration log, but no file defines it; restore the file "
                    "from version control (or roll the migration back with the code that had it)",
                )
            )
    return problems


def _known_snapshots(project: Project) -> set[str]:
    """Snapshot versions the store knows: pushed, or the code's own (``push`` would record it)."""
    pushed = {s.snapshot_version for s in project.store.list_snapshots(project=project.config.project)}
    return pushed | {project.graph.snapshot_version}


def _snapshot_problems(m: Migration, known: set[str], files: SnapshotFiles) -> list[Problem]:
    """Every snapshot ``m`` names must be in the store or in a snapshot file beside the migrations, and a
    file that is there must still rebuild to its version."""
    names: list[tuple[str, str | None]] = []
    if isinstance(m, DiffMigration):
        names = [
            ("from_snapshot_version", m.from_snapshot_version),
            ("to_snapshot_version", m.to_snapshot_version),
        ]
    elif isinstance(m, FullGraphMigration):
        names = [("snapshot_version", m.snapshot_version)]
    problems = []
    for name, version in names:
        if not version:
            continue
        try:
            on_file = files.has(version)
            if on_file:
                files.load(version, needed_by=f"migration {m.migration_id}")
        except MetaxyError as exc:  # a bad version string, or an edited/damaged file
            problems.append(Problem(ProblemKind.SNAPSHOT, m.migration_id, f"{name}: {exc}", _path(m)))
            continue
        if not on_file and version not in known:
            problems.append(
                Problem(
                    ProblemKind.SNAPSHOT,
                    m.migration_id,
                    f"{name} {version} is neither pushed to the store, in {files.directory}, nor the code's "
                    "snapshot; run `metaxy push` from the code that defines it, or fix the version",
                    _path(m),
                )
            )
    return problems
