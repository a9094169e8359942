"""One function per CLI verb, each returning a result object; the CLI only parses and renders.

Usable from Python as well (``commands.migrations_apply(open_project(), dry_run=True)``). Every function raises
:class:`~metaxy_core.errors.MetaxyError` subclasses with messages ready for users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from metaxy_core.config import MetaxyConfig
from metaxy_core.errors import MetaxyError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations import progress
from metaxy_core.migrations.chain import MigrationChain
from metaxy_core.migrations.executor import MigrationExecutor
from metaxy_core.migrations.generator import GeneratedMigration, generate
from metaxy_core.migrations.loader import load_chain
from metaxy_core.migrations.lock import LeaseInfo, StoreLock
from metaxy_core.migrations.models import (
    DiffMigration,
    Migration,
    MigrationFailed,
    MigrationResult,
    StepResult,
)
from metaxy_core.migrations.rollback import RollbackResult, rollback
from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_core.store.system import PushResult


@dataclass
class Project:
    """A loaded project: configuration, the code's feature graph, the store and the migration chain."""

    config: MetaxyConfig

    @cached_property
    def graph(self) -> FeatureGraph:
        return self.config.load_features()

    @cached_property
    def store(self) -> DeltaMetadataStore:
        return self.config.get_store()

    @cached_property
    def chain(self) -> MigrationChain:
        # Operation `type:` paths and .py migrations may import the project's own modules (next to metaxy.toml).
        self.config.add_import_path()
        # A PythonMigration's build_operations() may read the feature graph while the chain loads.
        with self.graph.use():
            return load_chain(self.config.migrations_path)

    def executor(self, **kwargs: Any) -> MigrationExecutor:
        return MigrationExecutor(self.store, project=self.config.project, graph=self.graph, **kwargs)


def open_project(config_path: str | Path | None = None) -> Project:
    return Project(MetaxyConfig.load(config_path))


# ------------------------------------------------------------------------ graph
def push(project: Project) -> PushResult:
    """Record the code's graph snapshot in the store (idempotent)."""
    return project.store.push_snapshot(project.graph, project=project.config.project)


def graph_info(project: Project) -> list[dict[str, Any]]:
    graph = project.graph
    rows = []
    for key in graph.topological_order():
        spec = graph.spec(key)
        rows.append(
            {
                "feature": str(key),
                "feature_version": graph.feature_version(key),
                "id_columns": list(spec.id_columns),
                "deps": [str(d.feature) for d in spec.deps],
                "fields": [
                    {
                        "field": str(f.key),
                        "code_version": f.code_version,
                        "version": graph.field_version(key, f.key),
                        "deps": [f"{k}:{fk}" for k, fk in graph.resolved_field_deps(key, f.key)],
                    }
                    for f in spec.fields
                ],
            }
        )
    return rows


def snapshot_info(project: Project) -> dict[str, Any]:
    latest = project.store.latest_snapshot(project=project.config.project)
    current = project.graph.snapshot_version
    return {
        "project": project.config.project,
        "current_snapshot_version": current,
        "latest_pushed_snapshot_version": latest.snapshot_version if latest else None,
        "latest_pushed_at": latest.pushed_at.isoformat() if latest else None,
        "pushed": latest is not None and latest.snapshot_version == current,
    }


# ------------------------------------------------------------------- migrations
@dataclass
class MigrationStatusRow:
    migration_id: str
    kind: str
    parent: str
    status: str
    path: str
    rows: int = 0
    steps_done: int = 0
    steps_failed: int = 0
    edited: bool = False
    error: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _status_rows(project: Project, states: dict[str, progress.MigrationState]) -> list[MigrationStatusRow]:
    rows = []
    for m in project.chain:
        state = states.get(m.migration_id) or progress.MigrationState(m.migration_id)
        rows.append(
            MigrationStatusRow(
                migration_id=m.migration_id,
                kind=m.kind,
                parent=m.parent,
                status=state.status,
                path=str(m.source_path or ""),
                rows=state.rows,
                steps_done=sum(1 for s in state.steps.values() if s.done),
                steps_failed=sum(1 for s in state.steps.values() if s.status == "failed"),
                edited=bool(state.checksum and state.checksum != m.checksum),
                error=state.error,
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
        )
    return rows


def migrations_status(project: Project) -> list[MigrationStatusRow]:
    """Status per migration in chain order (raises on a broken chain)."""
    chain = project.chain
    if not len(chain):
        return []
    return _status_rows(project, progress.read_states(project.store, project.config.project))


def migrations_list(project: Project) -> list[dict[str, Any]]:
    """The chain as files, without touching the store."""
    return [
        {
            "migration_id": m.migration_id,
            "kind": m.kind,
            "parent": m.parent,
            "path": str(m.source_path or ""),
            "description": m.summary(),
            "from_snapshot_version": getattr(m, "from_snapshot_version", None),
            "to_snapshot_version": getattr(m, "to_snapshot_version", None),
        }
        for m in project.chain
    ]


def migrations_apply(
    project: Project,
    target: str | None = None,
    *,
    dry_run: bool = False,
    force: bool = False,
    on_step: Callable[[StepResult], None] | None = None,
) -> list[MigrationResult]:
    """Apply (or plan) pending migrations up to ``target``.

    Raises:
        MigrationFailed: a step failed; progress so far is kept and a re-run resumes.
    """
    chain = project.chain
    executor = project.executor(force=force, on_step=on_step)
    return executor.apply(chain, target, dry_run=dry_run)


def migrations_generate(project: Project, name: str | None = None) -> GeneratedMigration:
    return generate(
        project.store,
        project.graph,
        project.chain,
        project.config.migrations_path,
        project=project.config.project,
        name=name,
    )


def migrations_explain(project: Project, migration_id: str) -> dict[str, Any]:
    """Everything about one migration: file, operations, affected features, progress."""
    m: Migration = project.chain.get(migration_id)
    info: dict[str, Any] = {
        "migration_id": m.migration_id,
        "kind": m.kind,
        "path": str(m.source_path or ""),
        "parent": m.parent,
        "description": m.summary(),
        "checksum": m.checksum,
        "operations": [{"id": i, "type": t} for i, t in m.operation_labels()],
    }
    if isinstance(m, DiffMigration):
        info["from_snapshot_version"] = m.from_snapshot_version
        info["to_snapshot_version"] = m.to_snapshot_version
    try:
        affected = m.get_affected_features(project.store, project.config.project, project.graph)  # type: ignore[call-arg]
    except TypeError:
        affected = m.get_affected_features(project.store, project.config.project)
    except MetaxyError as exc:
        affected = []
        info["affected_error"] = str(exc)
    info["affected_features"] = [str(k) for k in affected]
    state = progress.read_states(project.store, project.config.project).get(m.migration_id)
    row = _status_rows(project, {m.migration_id: state} if state else {})
    info["status"] = next(r for r in row if r.migration_id == m.migration_id).as_dict()
    return info


def migrations_history(project: Project, migration_id: str | None = None) -> list[dict[str, Any]]:
    events = progress.read_events(project.store, project.config.project)
    if migration_id:
        events = events.filter(events["migration_id"] == migration_id)
    cols = [
        "at",
        "migration_id",
        "op_index",
        "op_id",
        "feature_key",
        "status",
        "rows",
        "duration_s",
        "run_id",
        "error",
    ]
    return [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
        for r in events.select(cols).to_dicts()
    ]


def migrations_rollback(
    project: Project, target: str | None = None, *, dry_run: bool = False
) -> list[RollbackResult]:
    """Undo the newest applied migration, or every applied one down to ``target`` (newest first)."""
    return rollback(project.executor(), project.chain, target, dry_run=dry_run)


def migrations_unlock(project: Project) -> LeaseInfo | None:
    return StoreLock(project.store, owner="metaxy-unlock").force_release()


def store_maintain(
    project: Project, *, vacuum_hours: float | None = None, dry_run: bool = False, z_order: bool = False
) -> list[Any]:
    """``metaxy store maintain``: compact and checkpoint every table of the store (feature and system tables),
    then with ``vacuum_hours`` vacuum files unreferenced for that long. A dry run changes nothing and reports
    file counts (and the files vacuum would delete). Returns one ``TableMaintenance`` per table and action."""
    from metaxy_core.store.maintenance import maintain

    graph = project.graph if z_order or project.store.is_remote else None  # local stores are listed from disk
    return maintain(project.store, vacuum_hours=vacuum_hours, dry_run=dry_run, z_order=z_order, graph=graph)


__all__ = [
    "MigrationFailed",
    "MigrationStatusRow",
    "Project",
    "graph_info",
    "migrations_apply",
    "migrations_explain",
    "migrations_generate",
    "migrations_history",
    "migrations_list",
    "migrations_rollback",
    "migrations_status",
    "migrations_unlock",
    "open_project",
    "push",
    "snapshot_info",
]
