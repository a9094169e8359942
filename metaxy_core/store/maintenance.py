"""Delta maintenance for a metadata store: compaction, checkpoints and vacuum of feature and system tables.

Append-only tables accumulate one or more small files per write and one log entry per commit; reads then
open many files and replay a long log. Maintenance keeps reads of the current version fast:

* :func:`optimize` compacts small files (delta-rs ``optimize.compact``; optionally Z-ordered on the feature's
  id columns, which clusters files by id so bucketed processing and id lookups skip files). Compaction is a
  ``dataChange=false`` rewrite: rows, their write ids and versions are unchanged, concurrent appends are safe.
* :func:`checkpoint` writes a Delta checkpoint, so opening a table reads one Parquet file instead of
  replaying every JSON commit, and removes expired log files.
* :func:`vacuum` deletes data files no longer referenced by the table (replaced by compaction, or orphaned by
  an interrupted write) once they are older than the retention period.

Each function covers one feature table, or every table of the store (feature tables and the ``_metaxy_system``
tables) when ``feature`` is None, and returns one :class:`TableMaintenance` per table.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from metaxy_core.errors import InvalidKeyError
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.store import _io

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.graph.graph import FeatureGraph
    from metaxy_core.store.base import FeatureRef
    from metaxy_core.store.delta import DeltaMetadataStore

#: delta-rs' default retention for vacuum (one week); shorter needs an explicit choice
DEFAULT_RETENTION_HOURS = 168.0


@dataclass
class TableMaintenance:
    """What maintenance did to one table (``table`` is a feature key or ``_metaxy_system/<name>``)."""

    table: str
    action: str
    files_before: int = 0
    files_after: int = 0
    files_added: int = 0
    files_removed: int = 0
    version_before: int | None = None
    version_after: int | None = None
    seconds: float = 0.0
    dry_run: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def tables(
    store: DeltaMetadataStore, feature: FeatureRef | None = None, *, graph: FeatureGraph | None = None
) -> list[tuple[str, str, FeatureKey | None]]:
    """(label, uri, feature key) of the tables to maintain: one feature, or every table of the store.

    Local stores are listed from disk; for remote stores the feature tables are those of ``graph`` (default:
    the active graph) that exist, plus the system tables.
    """
    from metaxy_core.graph.graph import FeatureGraph, resolve_key
    from metaxy_core.migrations.lock import LOCK_TABLE
    from metaxy_core.migrations.progress import EVENTS
    from metaxy_core.store.delta import SYSTEM_DIR
    from metaxy_core.store.system import RETRACTED, SNAPSHOTS

    if feature is not None:
        key = resolve_key(feature)
        return [(key.to_string(), store.table_uri(key), key)]
    found: dict[str, tuple[str, str, FeatureKey | None]] = {}
    system = {SNAPSHOTS, RETRACTED, EVENTS, LOCK_TABLE}
    if not store.is_remote and os.path.isdir(store.root_uri):
        for name in sorted(os.listdir(store.root_uri)):
            path = os.path.join(store.root_uri, name)
            if name.startswith(("_", ".")) or not os.path.isdir(os.path.join(path, "_delta_log")):
                continue
            try:
                key = FeatureKey(name.split("__"))
            except InvalidKeyError:  # a folder that is not a feature table: leave it alone
                continue
            found[key.to_string()] = (key.to_string(), path, key)
        system_dir = os.path.join(store.root_uri, SYSTEM_DIR)
        if os.path.isdir(system_dir):
            system |= {
                n for n in os.listdir(system_dir) if os.path.isdir(os.path.join(system_dir, n, "_delta_log"))
            }
    else:
        for key in (graph or FeatureGraph.get_active()).keys:
            if store.has_metadata(key):
                found[key.to_string()] = (key.to_string(), store.table_uri(key), key)
    out = [found[k] for k in sorted(found)]
    for name in sorted(system):
        uri = store.system_table_uri(name)
        if _io.open_table(uri, store.storage_options) is not None:
            out.append((f"{SYSTEM_DIR}/{name}", uri, None))
    return out


def _files(table: DeltaTable) -> int:
    return len(table.file_uris())


def _id_columns(key: FeatureKey | None, graph: FeatureGraph | None) -> list[str]:
    if key is None:
        return []
    from metaxy_core.graph.graph import FeatureGraph

    g = graph or FeatureGraph.get_active()
    return list(g.spec(key).id_columns) if key in g else []


def optimize(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    z_order: bool = False,
    target_size: int | None = None,
    graph: FeatureGraph | None = None,
    dry_run: bool = False,
) -> list[TableMaintenance]:
    """Compact small files (and, with ``z_order``, cluster feature tables on their id columns).

    A dry run only reports the current file counts.
    """
    reports = []
    for label, uri, key in tables(store, feature, graph=graph):
        table = _io.open_table(uri, store.storage_options)
        if table is None:
            continue
        start = time.perf_counter()
        report = TableMaintenance(
            label, "optimize", files_before=_files(table), version_before=table.version(), dry_run=dry_run
        )
        ids = _id_columns(key, graph) if z_order else []
        if not dry_run:
            with _io.guard("optimize", uri, store.storage_options):
                if ids:
                    metrics = table.optimize.z_order(ids, target_size=target_size)
                else:
                    metrics = table.optimize.compact(target_size=target_size)
            report.files_added = int(metrics.get("numFilesAdded", 0))
            report.files_removed = int(metrics.get("numFilesRemoved", 0))
            report.detail = {"z_order": ids} if ids else {}
            table = _io.open_table(uri, store.storage_options) or table
        report.files_after = _files(table)
        report.version_after = table.version()
        report.seconds = time.perf_counter() - start
        reports.append(report)
    return reports


def checkpoint(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    graph: FeatureGraph | None = None,
    dry_run: bool = False,
) -> list[TableMaintenance]:
    """Write a checkpoint at each table's current version and remove log files past their retention."""
    reports = []
    for label, uri, _ in tables(store, feature, graph=graph):
        table = _io.open_table(uri, store.storage_options)
        if table is None:
            continue
        start = time.perf_counter()
        report = TableMaintenance(label, "checkpoint", version_before=table.version(), dry_run=dry_run)
        report.files_before = report.files_after = _files(table)
        if not dry_run:
            with _io.guard("checkpoint", uri, store.storage_options):
                table.create_checkpoint()
                table.cleanup_metadata()
        report.version_after = table.version()
        report.seconds = time.perf_counter() - start
        reports.append(report)
    return reports


def vacuum(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    retention_hours: float = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    graph: FeatureGraph | None = None,
) -> list[TableMaintenance]:
    """Delete unreferenced data files older than ``retention_hours`` (a dry run lists them).

    Files replaced by compaction stay readable by older table versions (time travel, readers that opened
    the table before) until vacuumed; keep the retention longer than any read or write that may still use
    them. Below delta-rs' one-week default the retention check is lifted explicitly.
    """
    reports = []
    for label, uri, _ in tables(store, feature, graph=graph):
        table = _io.open_table(uri, store.storage_options)
        if table is None:
            continue
        start = time.perf_counter()
        report = TableMaintenance(
            label, "vacuum", files_before=_files(table), version_before=table.version(), dry_run=dry_run
        )
        options = {
            "retention_hours": int(retention_hours),
            "enforce_retention_duration": retention_hours >= DEFAULT_RETENTION_HOURS,
            "full": True,
        }
        with _io.guard("vacuum", uri, store.storage_options):
            removed = table.vacuum(dry_run=True, **options)
            if not store.is_remote:  # the log still lists files an earlier vacuum deleted: count real ones
                removed = [
                    f for f in removed if os.path.exists(f if os.path.isabs(f) else os.path.join(uri, f))
                ]
            if removed and not dry_run:
                table.vacuum(dry_run=False, **options)
        report.files_removed = len(removed)
        report.detail = {"retention_hours": retention_hours, "files": sorted(removed)[:20]}
        table = _io.open_table(uri, store.storage_options) or table
        report.files_after = _files(table)
        report.version_after = table.version()
        report.seconds = time.perf_counter() - start
        reports.append(report)
    return reports


def maintain(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    vacuum_hours: float | None = None,
    z_order: bool = False,
    dry_run: bool = False,
    graph: FeatureGraph | None = None,
) -> list[TableMaintenance]:
    """Optimize, then checkpoint, then (with ``vacuum_hours``) vacuum every table (or one feature's)."""
    reports = optimize(store, feature, z_order=z_order, graph=graph, dry_run=dry_run)
    reports += checkpoint(store, feature, graph=graph, dry_run=dry_run)
    if vacuum_hours is not None:
        reports += vacuum(store, feature, retention_hours=vacuum_hours, dry_run=dry_run, graph=graph)
    return reports


#: system tables written one small event per commit (the migration log, the lock)
_EVENT_TABLES = ("migration_events", "lock")


def compact_fragmented_system_tables(
    store: DeltaMetadataStore, *, min_files: int = 64
) -> list[TableMaintenance]:
    """Compact (and checkpoint) the event-per-commit system tables once they hold ``min_files`` files or more.

    Every migration-state check reads the whole migration log; at one file per event, a log of a few hundred
    migrations costs ~100 ms per read, compacted ~5 ms. Called by the executor when a migration completes;
    errors are left to the caller to ignore (maintenance must never fail a migration).
    """
    reports = []
    for name in _EVENT_TABLES:
        uri = store.system_table_uri(name)
        table = _io.open_table(uri, store.storage_options)
        if table is None or len(table.file_uris()) < min_files:
            continue
        start = time.perf_counter()
        report = TableMaintenance(
            f"_metaxy_system/{name}",
            "optimize",
            files_before=len(table.file_uris()),
            version_before=table.version(),
        )
        with _io.guard("optimize", uri, store.storage_options):
            table.optimize.compact()
            table = _io.open_table(uri, store.storage_options) or table
            table.create_checkpoint()
        report.files_after, report.version_after = len(table.file_uris()), table.version()
        report.seconds = time.perf_counter() - start
        reports.append(report)
    return reports
