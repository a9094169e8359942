"""The feature graph and the store: ``push``, ``graph``, ``snapshot`` and ``store maintain``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from metaxy_core.commands.project import Project
from metaxy_core.errors import ConfigError, MetaxyError, SnapshotNotFoundError
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir
from metaxy_core.reporting import ProgressCallback
from metaxy_core.store.maintenance import TableMaintenance, maintain
from metaxy_core.store.system import PushResult


@dataclass(frozen=True)
class PushReport(PushResult):
    """What ``metaxy push`` did: the snapshot recorded in the store, and the snapshot files it wrote."""

    snapshot_files: tuple[str, ...] = ()


def push(project: Project) -> PushReport:
    """Record the code's feature graph snapshot in the store (idempotent).

    It also writes ``.metaxy/snapshots/<version>.json`` beside the migrations: the code's snapshot, and every
    snapshot a migration file names that only the store holds. Dagster loads migrations from files, and an
    applied migration keeps working on its own snapshots after the code moves on, so commit that folder.

    Raises:
        ConfigError: no feature is declared (``entrypoints`` empty or importing nothing): an empty snapshot
            would make every stored feature look removed.
    """
    if not len(project.graph):
        config = project.config
        raise ConfigError(
            f"{config.config_file or 'configuration'}: no features are declared (entrypoints: "
            f"{config.entrypoints or '[]'}); list the modules that declare your features in `entrypoints`, "
            "then push"
        )
    result = project.store.push_snapshot(project.graph, project=project.config.project)
    files = SnapshotFiles(snapshots_dir(project.config.migrations_path))
    written = [files.write(project.graph)]
    for version in _named_snapshots(project):
        if not files.has(version):
            try:
                written.append(files.write(project.store.load_snapshot_graph(version)))
            except SnapshotNotFoundError:
                continue  # never pushed: the migration's loader says so where it matters
    return PushReport(**asdict(result), snapshot_files=tuple(str(p) for p in written if p is not None))


def _named_snapshots(project: Project) -> list[str]:
    """Snapshot versions the migration files name (none when they cannot be loaded: push still works)."""
    try:
        chain = project.chain
    except MetaxyError:
        return []
    names = [getattr(m, a, None) for m in chain for a in ("from_snapshot_version", "to_snapshot_version")]
    names += [getattr(m, "snapshot_version", None) for m in chain]
    return sorted({n for n in names if n})


@dataclass
class FieldInfo:
    field: str
    code_version: str
    version: str
    #: upstream fields as ``feature:field``
    deps: list[str]


@dataclass
class FeatureInfo:
    feature: str
    feature_version: str
    id_columns: list[str]
    deps: list[str]
    fields: list[FieldInfo]


@dataclass
class GraphInfo:
    """The code's feature graph: features upstream first, with their fields and versions."""

    snapshot_version: str
    features: list[FeatureInfo]

    def as_dict(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.features]


def graph_info(project: Project) -> GraphInfo:
    """List features, fields and their versions."""
    graph = project.graph
    features = []
    for key in graph.topological_order():
        spec = graph.spec(key)
        fields = [
            FieldInfo(
                field=str(f.key),
                code_version=f.code_version,
                version=graph.field_version(key, f.key),
                deps=[f"{k}:{fk}" for k, fk in graph.resolved_field_deps(key, f.key)],
            )
            for f in spec.fields
        ]
        features.append(
            FeatureInfo(
                feature=str(key),
                feature_version=graph.feature_version(key),
                id_columns=list(spec.id_columns),
                deps=[str(d.feature) for d in spec.deps],
                fields=fields,
            )
        )
    return GraphInfo(graph.snapshot_version, features)


@dataclass
class SnapshotInfo:
    """The code's snapshot version next to the latest one pushed to the store."""

    project: str
    current_snapshot_version: str
    latest_pushed_snapshot_version: str | None
    latest_pushed_at: str | None
    pushed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot_info(project: Project) -> SnapshotInfo:
    """Show the code's snapshot version and the latest pushed one."""
    latest = project.store.latest_snapshot(project=project.config.project)
    current = project.graph.snapshot_version
    return SnapshotInfo(
        project=project.config.project,
        current_snapshot_version=current,
        latest_pushed_snapshot_version=latest.snapshot_version if latest else None,
        latest_pushed_at=latest.pushed_at.isoformat() if latest else None,
        pushed=latest is not None and latest.snapshot_version == current,
    )


@dataclass
class MaintenanceReport:
    """What ``metaxy store maintain`` did (or, in a dry run, would do), per table and action."""

    tables: list[TableMaintenance]
    dry_run: bool = False

    def as_dict(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.tables]


def store_maintain(
    project: Project,
    *,
    vacuum_hours: float | None = None,
    dry_run: bool = False,
    z_order: bool = False,
    on_progress: ProgressCallback | None = None,
) -> MaintenanceReport:
    """Compact and checkpoint every table; with vacuum hours, vacuum too.

    Covers feature and system tables; with ``vacuum_hours``, files unreferenced for that long are vacuumed. A
    dry run changes nothing and reports file counts (and the files vacuum would delete). ``on_progress``
    hears tables done / total while it runs.
    """
    graph = project.graph if z_order or project.store.is_remote else None  # local stores are listed from disk
    reports = maintain(
        project.store,
        vacuum_hours=vacuum_hours,
        dry_run=dry_run,
        z_order=z_order,
        graph=graph,
        on_progress=on_progress,
    )
    return MaintenanceReport(reports, dry_run)
