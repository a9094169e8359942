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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from metaxy_core.errors import InvalidKeyError
from metaxy_core.graph.graph import FeatureGraph, resolve_key
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.reporting import ProgressCallback, ProgressMeter
from metaxy_core.store import _io
from metaxy_core.store.system import EVENT_TABLES, SYSTEM_DIR, SYSTEM_TABLES, log_reaches

if TYPE_CHECKING:
    from deltalake import DeltaTable

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
    if feature is not None:
        key = resolve_key(feature)
        return [(key.to_string(), store.table_uri(key), key)]
    found: dict[str, tuple[str, str, FeatureKey | None]] = {}
    system = set(SYSTEM_TABLES)
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
    g = graph or FeatureGraph.get_active()
    return list(g.spec(key).id_columns) if key in g else []


#: what an action does to one open table, filling in the report; returns the table as it is afterwards
TableWork = Callable[["DeltaTable", str, FeatureKey | None, TableMaintenance], "DeltaTable"]


def _each_table(
    store: DeltaMetadataStore,
    targets: Sequence[tuple[str, str, FeatureKey | None]],
    action: str,
    work: TableWork,
    *,
    dry_run: bool = False,
    skip: Callable[[DeltaTable], bool] | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[TableMaintenance]:
    """The one per-table loop: open each table, report its state before and after ``work``, time it.

    ``work`` runs inside the store's error translation (a failure names the table); tables that do not
    exist (or that ``skip`` rejects) get no report. ``on_progress`` hears tables done / total after each.
    """
    reports = []
    meter = ProgressMeter(f"store maintenance: {action}", on_progress, total=len(targets), unit="tables")
    for i, (label, uri, key) in enumerate(targets):
        if i:
            meter.update(i)  # the tables before this one are done
        table = _io.open_table(uri, store.storage_options, for_commit=True)  # the work commits to it
        if table is None or (skip is not None and skip(table)):
            continue
        start = time.perf_counter()
        report = TableMaintenance(
            label, action, files_before=_files(table), version_before=table.version(), dry_run=dry_run
        )
        with _io.guard(action, uri, store.storage_options):
            table = work(table, uri, key, report)
        report.files_after = _files(table)
        report.version_after = table.version()
        report.seconds = time.perf_counter() - start
        reports.append(report)
    if targets:
        meter.update(len(targets))
        meter.finish()
    return reports


def optimize(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    z_order: bool = False,
    target_size: int | None = None,
    graph: FeatureGraph | None = None,
    dry_run: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[TableMaintenance]:
    """Compact small files (and, with ``z_order``, cluster feature tables on their id columns).

    A dry run only reports the current file counts.
    """

    def work(table: DeltaTable, uri: str, key: FeatureKey | None, report: TableMaintenance) -> DeltaTable:
        if dry_run:
            return table
        ids = _id_columns(key, graph) if z_order else []
        if ids:
            metrics = table.optimize.z_order(ids, target_size=target_size)
        else:
            metrics = table.optimize.compact(target_size=target_size)
        report.files_added = int(metrics.get("numFilesAdded", 0))
        report.files_removed = int(metrics.get("numFilesRemoved", 0))
        report.detail = {"z_order": ids} if ids else {}
        return _io.open_table(uri, store.storage_options, for_commit=True) or table

    targets = tables(store, feature, graph=graph)
    return _each_table(store, targets, "optimize", work, dry_run=dry_run, on_progress=on_progress)


def checkpoint(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    graph: FeatureGraph | None = None,
    dry_run: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[TableMaintenance]:
    """Write a checkpoint at each table's current version and remove log files past their retention."""

    def work(table: DeltaTable, uri: str, key: FeatureKey | None, report: TableMaintenance) -> DeltaTable:
        if not dry_run:
            table.create_checkpoint()
            table.cleanup_metadata()
        return table

    targets = tables(store, feature, graph=graph)
    return _each_table(store, targets, "checkpoint", work, dry_run=dry_run, on_progress=on_progress)


def vacuum(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    retention_hours: float = DEFAULT_RETENTION_HOURS,
    dry_run: bool = False,
    graph: FeatureGraph | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[TableMaintenance]:
    """Delete unreferenced data files older than ``retention_hours`` (a dry run lists them).

    Files replaced by compaction stay readable by older table versions (time travel, readers that opened
    the table before) until vacuumed; keep the retention longer than any read or write that may still use
    them. Below delta-rs' one-week default the retention check is lifted explicitly.
    """
    options = {
        "retention_hours": int(retention_hours),
        "enforce_retention_duration": retention_hours >= DEFAULT_RETENTION_HOURS,
        "full": True,
    }

    def work(table: DeltaTable, uri: str, key: FeatureKey | None, report: TableMaintenance) -> DeltaTable:
        removed = table.vacuum(dry_run=True, **options)
        if not store.is_remote:  # the log still lists files an earlier vacuum deleted: count real ones
            removed = [f for f in removed if os.path.exists(f if os.path.isabs(f) else os.path.join(uri, f))]
        if removed and not dry_run:
            table.vacuum(dry_run=False, **options)
        report.files_removed = len(removed)
        report.detail = {"retention_hours": retention_hours, "files": sorted(removed)[:20]}
        return _io.open_table(uri, store.storage_options, for_commit=True) or table

    targets = tables(store, feature, graph=graph)
    return _each_table(store, targets, "vacuum", work, dry_run=dry_run, on_progress=on_progress)


def maintain(
    store: DeltaMetadataStore,
    feature: FeatureRef | None = None,
    *,
    vacuum_hours: float | None = None,
    z_order: bool = False,
    dry_run: bool = False,
    graph: FeatureGraph | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[TableMaintenance]:
    """Optimize, then checkpoint, then (with ``vacuum_hours``) vacuum every table (or one feature's).

    ``on_progress`` hears tables done / total after each table of each phase.
    """
    each = {"graph": graph, "dry_run": dry_run, "on_progress": on_progress}
    reports = optimize(store, feature, z_order=z_order, **each)
    reports += checkpoint(store, feature, **each)
    if vacuum_hours is not None:
        reports += vacuum(store, feature, retention_hours=vacuum_hours, **each)
    return reports


def compact_fragmented_system_tables(
    store: DeltaMetadataStore, *, min_files: int = 64
) -> list[TableMaintenance]:
    """Compact (and checkpoint) the event-per-commit system tables once they hold ``min_files`` files or more.

    Every migration-state check reads the whole migration log; at one file per event, a log of a few hundred
    migrations costs ~100 ms per read, compacted ~5 ms. Called by the executor when a migration completes;
    errors are left to the caller to ignore (maintenance must never fail a migration).
    """

    def work(table: DeltaTable, uri: str, key: FeatureKey | None, report: TableMaintenance) -> DeltaTable:
        table.optimize.compact()
        table = _io.open_table(uri, store.storage_options, for_commit=True) or table
        table.create_checkpoint()
        return table

    reports: list[TableMaintenance] = []
    for name in EVENT_TABLES:
        uri = store.system_table_uri(name)
        # Each commit to an event table adds one file: it cannot hold min_files files before a commit at
        # (version counted) + (files short of min_files) exists, which one listing tells without opening it.
        version, files = _COUNTED.get(uri, (-1, 0))
        if not log_reaches(store, name, version + min_files - files):
            continue

        def skip(table: DeltaTable, uri: str = uri) -> bool:
            _count(uri, table.version(), _files(table))
            return _COUNTED[uri][1] < min_files

        target = [(f"{SYSTEM_DIR}/{name}", uri, None)]
        for report in _each_table(store, target, "optimize", work, skip=skip):
            _count(uri, report.version_after, report.files_after)
            reports.append(report)
    return reports


#: per event table: (version, data files) when this process last counted them, see
#: :func:`compact_fragmented_system_tables`
_COUNTED: dict[str, tuple[int, int]] = {}


def _count(uri: str, version: int | None, files: int | None) -> None:
    if version is not None and files is not None:
        if len(_COUNTED) > 64:
            _COUNTED.clear()
        _COUNTED[uri] = (version, files)
