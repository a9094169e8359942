"""System tables kept next to the feature tables, under ``<root>/_metaxy_system/``.

The store owns its layout, so every system table's name and schema is declared here, whoever writes it:

* ``snapshots``: every pushed graph snapshot (project, version, time, the snapshot as JSON) so an old graph
  can be rebuilt without the code that declared it;
* ``retracted_writes``: write ids hidden from reads (rollback), append-only so nothing is ever lost;
* ``migration_events``: the migration log, written by :mod:`metaxy_core.migrations.progress`;
* ``lock``: the apply lease, written by :mod:`metaxy_core.migrations.lock`;
* ``clock``: probe commits whose log files' modification times read the storage's clock (:func:`storage_now`).

Maintenance walks :data:`SYSTEM_TABLES`; the migrations layer imports the names and schemas from here rather
than the store importing them from the migrations layer.

Every row of a system table carries its commit order (``metaxy_commit_order``, see
:mod:`metaxy_core.store.order`): events are read in the order they were committed, never by their timestamps.
:func:`cas_append` commits at exactly the next version or not at all (the lock's compare-and-swap), and
:func:`storage_now` / :func:`commit_time` read the *storage's* clock, so that a lease's age is judged on one
clock whatever the hosts' clocks say.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from metaxy_core._process import hostname, now
from metaxy_core.errors import SnapshotNotFoundError, StoreError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.store import _io, _storage
from metaxy_core.store._io import CommitConflict as CommitConflict
from metaxy_core.store._storage import modified_at
from metaxy_core.store.order import in_commit_order, written
from metaxy_core.store.provenance import COMMIT_ORDER

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.store.delta import DeltaMetadataStore

#: folder of the system tables under the store's root
SYSTEM_DIR = "_metaxy_system"

SNAPSHOTS = "snapshots"
RETRACTED = "retracted_writes"
MIGRATION_EVENTS = "migration_events"
LOCK = "lock"
CLOCK = "clock"
#: every system table the store knows (maintenance covers these, and any other folder found locally)
SYSTEM_TABLES = (SNAPSHOTS, RETRACTED, MIGRATION_EVENTS, LOCK, CLOCK)
#: system tables written one small event per commit, hence fragmented quickly
EVENT_TABLES = (MIGRATION_EVENTS, LOCK, CLOCK)

_TIMESTAMP = pl.Datetime("us", "UTC")

#: the migration log: one row per event, keyed by (migration, operation index, feature)
MIGRATION_EVENTS_SCHEMA: dict[str, type[pl.DataType] | pl.DataType] = {
    "project": pl.String,
    "migration_id": pl.String,
    "op_index": pl.Int64,
    "op_id": pl.String,
    "op_type": pl.String,
    "feature_key": pl.String,
    "status": pl.String,
    "rows": pl.Int64,
    "duration_s": pl.Float64,
    "note": pl.String,
    "error": pl.String,
    "run_id": pl.String,
    "checksum": pl.String,
    "write_id": pl.String,
    "writes": pl.String,
    "host": pl.String,
    "pid": pl.Int64,
    "at": _TIMESTAMP,
}

#: the apply lease: acquire/renew/release events of one owner (a run id) per project. ``at``/``expires_at``
#: are the writer's clock (information only); ``token`` is the lease's fencing token, ``ttl_s``/``beat_s`` the
#: holder's lease and heartbeat periods, ``host_id``/``process`` where its pid means something and which
#: process it is (see :mod:`metaxy_core.migrations.lock`)
LOCK_SCHEMA: dict[str, type[pl.DataType] | pl.DataType] = {
    "project": pl.String,
    "event": pl.String,
    "owner": pl.String,
    "host": pl.String,
    "pid": pl.Int64,
    "at": _TIMESTAMP,
    "expires_at": _TIMESTAMP,
    "token": pl.Int64,
    "ttl_s": pl.Float64,
    "beat_s": pl.Float64,
    "host_id": pl.String,
    "process": pl.String,
}


@dataclass(frozen=True)
class SnapshotRecord:
    """A pushed snapshot."""

    project: str
    snapshot_version: str
    pushed_at: datetime
    feature_count: int
    snapshot: dict[str, Any]


@dataclass(frozen=True)
class PushResult:
    snapshot_version: str
    already_pushed: bool
    previous_version: str | None


def open_system_table(store: DeltaMetadataStore, name: str, *, for_commit: bool = False) -> DeltaTable | None:
    """System table ``name`` at its latest version; None before its first write.

    For readers that need the version they read (a cache keyed by it, the lock's compare-and-swap append):
    pass the table to :func:`read_system` to read exactly that version. ``for_commit``: the caller commits
    to the table (:func:`cas_append`), so it gets one of its own (see :func:`._io.open_table`).
    """
    return _io.open_table(store.system_table_uri(name), store.storage_options, for_commit=for_commit)


def read_system(
    store: DeltaMetadataStore,
    name: str,
    *,
    table: DeltaTable | None = None,
    where: pl.Expr | None = None,
) -> pl.DataFrame | None:
    """The rows of system table ``name`` (those matching ``where``); None when it was never written.

    ``table`` (from :func:`open_system_table`) pins the version read; by default the latest one.
    """
    uri = store.system_table_uri(name)
    if table is None:
        table = _io.open_table(uri, store.storage_options)
        if table is None:
            return None
    with _io.guard("read", uri, store.storage_options):
        lf = _io.scan_table(table, store.storage_options)
        return (lf if where is None else lf.filter(where)).collect()


@contextmanager
def system_errors(store: DeltaMetadataStore, name: str, action: str) -> Iterator[None]:
    """Turn storage errors raised inside the block into :class:`StoreError` naming system table ``name``.

    For writers that commit to a system table themselves (the lock's compare-and-swap append).
    """
    with _io.guard(action, store.system_table_uri(name), store.storage_options):
        yield


def append_system(store: DeltaMetadataStore, name: str, rows: pl.DataFrame) -> int | None:
    """Append ``rows`` to system table ``name`` in one commit (the table is created by the first one);
    returns the version committed (the rows' commit order is ``2·version``)."""
    return _io.append(store.system_table_uri(name), rows, store.storage_options, keep_open=True)


def next_version(table: DeltaTable | None) -> int:
    """The version the next commit to ``table`` lands at (0 creates the table)."""
    return 0 if table is None else table.version() + 1


def cas_append(store: DeltaMetadataStore, name: str, table: DeltaTable | None, rows: pl.DataFrame) -> int:
    """Append ``rows`` to system table ``name`` as exactly version ``next_version(table)``; returns it.

    ``table`` is the table as the caller read it (None: it does not exist yet). If anything else was
    committed since, nothing is written and :class:`CommitConflict` is raised: re-read and decide again.
    The rows are stamped with their commit order.
    """
    uri = store.system_table_uri(name)
    version = next_version(table)
    stamped = rows.with_columns(pl.lit(written(version), pl.Int64).alias(COMMIT_ORDER))
    with _io.guard("write to", uri, store.storage_options):
        _io.commit_at(uri, table, stamped, store.storage_options, exact=True)
    return version


def committed_after(store: DeltaMetadataStore, name: str, version: int) -> bool:
    """Whether system table ``name`` has a commit after ``version`` (one HEAD of the next log file).

    Commits land at consecutive versions and the newest log file is never cleaned up, so the absence of
    ``version + 1`` proves that ``version`` is still the latest: a writer that knows the version of its own
    last commit learns that nobody committed since without reading the table (the lock's fence check).
    """
    uri = store.system_table_uri(name)
    with _io.guard("read the log of", uri, store.storage_options):
        return modified_at(f"{uri}/_delta_log/{version + 1:020d}.json", store.storage_options) is not None


def log_reaches(store: DeltaMetadataStore, name: str, version: int) -> bool:
    """Whether system table ``name`` has a commit (or checkpoint) at ``version`` or later, without opening it.

    One listing request on S3 (log keys sort by version: the first key after every key of ``version - 1``),
    one directory listing locally.
    """
    log = f"{store.system_table_uri(name)}/_delta_log"
    with _io.guard("read the log of", store.system_table_uri(name), store.storage_options):
        if not store.is_remote:
            try:
                names = os.listdir(log)
            except FileNotFoundError:
                return False
            return any(n[:20].isdigit() and int(n[:20]) >= version for n in names)
        bucket, prefix = _storage.bucket_key(log)
        with _storage.boto_errors():
            listed = _storage.s3_client(store.storage_options).list_objects_v2(
                Bucket=bucket, Prefix=f"{prefix}/", StartAfter=f"{prefix}/{version - 1:020d}~", MaxKeys=1
            )
    first = [item["Key"].rsplit("/", 1)[-1] for item in listed.get("Contents", [])]
    return bool(first) and first[0][:20].isdigit() and int(first[0][:20]) >= version


def log_tail(store: DeltaMetadataStore, name: str, version: int) -> tuple[str | None, bool]:
    """(a tag of commit ``version`` of system table ``name``, None if gone; whether a later commit exists).

    See :func:`metaxy_core.store._storage.log_tail`: one request on S3, so a process that cached the table
    at ``version`` (the migration log) re-reads it only when it changed.
    """
    uri = store.system_table_uri(name)
    with _io.guard("read the log of", uri, store.storage_options):
        return _storage.log_tail(f"{uri}/_delta_log", version, store.storage_options)


def storage_now(store: DeltaMetadataStore) -> datetime:
    """The storage's own clock: when the storage says a probe commit made now was written.

    One tiny commit to the ``clock`` system table, then the modification time of its log file: the file
    system's clock on a local store (the kernel's, or the file server's), the server's ``LastModified`` (whole
    seconds) on S3. Unlike this process's clock, it is the same for every host.
    """
    probe = pl.DataFrame({"host": [hostname()], "at": [now()]}, schema={"host": pl.String, "at": _TIMESTAMP})
    version = _io.append(store.system_table_uri(CLOCK), probe, store.storage_options)
    assert version is not None  # a plain commit reports its version
    stamp = commit_time(store, CLOCK, version)
    if stamp is None:
        raise StoreError(f"the log file of commit {version} of {store.system_table_uri(CLOCK)} vanished")
    return stamp


def commit_time(store: DeltaMetadataStore, name: str, version: int) -> datetime | None:
    """When the storage says commit ``version`` of system table ``name`` was written (its log file's
    modification time, on the storage's clock); None when that log file is gone (cleaned up after its
    retention, i.e. long ago)."""
    uri = store.system_table_uri(name)
    with _io.guard("read the log of", uri, store.storage_options):
        stamp = modified_at(f"{uri}/_delta_log/{version:020d}.json", store.storage_options)
    return None if stamp is None else _as_utc(stamp)


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def latest_local_commit(store: DeltaMetadataStore, name: str) -> tuple[int, int] | None:
    """(latest commit version, its log file's mtime in ns) of a local system table, from one listing.

    Identifies the table's content without opening it (a few microseconds instead of milliseconds), which is
    what a per-process cache of a small, often re-read table needs. None when unknown: a remote store, or no
    table yet.
    """
    if store.is_remote:
        return None
    log = os.path.join(store.system_table_uri(name), "_delta_log")
    try:
        versions = [int(n[:-5]) for n in os.listdir(log) if n.endswith(".json") and n[:-5].isdigit()]
        if not versions:
            return None
        latest = max(versions)
        return latest, os.stat(os.path.join(log, f"{latest:020d}.json")).st_mtime_ns
    except OSError:
        return None


#: small, rarely written system tables as this process last read them: uri -> (their version's identity, rows)
_SMALL_TABLES: dict[str, tuple[object, pl.DataFrame]] = {}
_SMALL_TABLES_LOCK = threading.Lock()


def _read_small(store: DeltaMetadataStore, name: str) -> pl.DataFrame | None:
    """The rows of system table ``name``, read again only when it changed since this process last read it
    (locally: one listing of its log; on S3: one listing request, :func:`log_tail`). For tables an apply reads
    several times and rarely writes (the pushed snapshots: each migration resolves two graphs from them)."""
    uri = store.system_table_uri(name)
    with _SMALL_TABLES_LOCK:
        cached = _SMALL_TABLES.get(uri)
    if store.is_remote:
        if cached is not None:
            version, tag = cached[0]  # type: ignore[misc]
            if tag is not None and log_tail(store, name, version) == (tag, False):
                return cached[1]
        table = open_system_table(store, name)
        if table is None:
            return None
        df = read_system(store, name, table=table)
        key: object = (table.version(), log_tail(store, name, table.version())[0])
    else:
        key = latest_local_commit(store, name)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        df = read_system(store, name)
    if df is not None and key is not None:
        with _SMALL_TABLES_LOCK:
            if len(_SMALL_TABLES) > 16:
                _SMALL_TABLES.clear()
            _SMALL_TABLES[uri] = (key, df)
    return df


def _snapshot_rows(store: DeltaMetadataStore, project: str) -> pl.DataFrame | None:
    df = _read_small(store, SNAPSHOTS)
    if df is None:
        return None
    df = in_commit_order(df.filter(pl.col("project") == project), "pushed_at")
    return df if df.height else None


def _record(row: dict[str, Any]) -> SnapshotRecord:
    return SnapshotRecord(
        project=row["project"],
        snapshot_version=row["snapshot_version"],
        pushed_at=row["pushed_at"],
        feature_count=row["feature_count"],
        snapshot=json.loads(row["snapshot"]),
    )


def push_snapshot(store: DeltaMetadataStore, graph: FeatureGraph, *, project: str) -> PushResult:
    """Record ``graph`` as the deployed snapshot unless it already is the latest one (idempotent)."""
    latest = latest_snapshot(store, project=project)
    version = graph.snapshot_version
    if latest is not None and latest.snapshot_version == version:
        return PushResult(
            version, already_pushed=True, previous_version=_previous_version(store, project, version)
        )
    row = pl.DataFrame(
        {
            "project": [project],
            "snapshot_version": [version],
            "pushed_at": [now()],
            "feature_count": [len(graph)],
            "snapshot": [json.dumps(graph.to_snapshot(), sort_keys=True)],
        },
        schema_overrides={"pushed_at": pl.Datetime("us", "UTC"), "feature_count": pl.Int64},
    )
    append_system(store, SNAPSHOTS, row)
    return PushResult(
        version, already_pushed=False, previous_version=latest.snapshot_version if latest else None
    )


def _previous_version(store: DeltaMetadataStore, project: str, version: str) -> str | None:
    df = _snapshot_rows(store, project)
    if df is None:
        return None
    others = df.filter(pl.col("snapshot_version") != version)
    return others["snapshot_version"][-1] if others.height else None


def latest_snapshot(store: DeltaMetadataStore, *, project: str) -> SnapshotRecord | None:
    df = _snapshot_rows(store, project)
    return None if df is None else _record(df.row(-1, named=True))


def list_snapshots(store: DeltaMetadataStore, *, project: str) -> list[SnapshotRecord]:
    df = _snapshot_rows(store, project)
    return [] if df is None else [_record(r) for r in df.iter_rows(named=True)]


def get_snapshot(store: DeltaMetadataStore, snapshot_version: str, *, project: str) -> SnapshotRecord:
    df = _snapshot_rows(store, project)
    match = None if df is None else df.filter(pl.col("snapshot_version") == snapshot_version)
    if match is None or match.height == 0:
        known = [] if df is None else df["snapshot_version"].unique(maintain_order=True).to_list()
        raise SnapshotNotFoundError(
            f"snapshot {snapshot_version} was never pushed to {store.root_uri} for project {project!r} "
            f"(pushed: {', '.join(known) or 'none'}); run `metaxy push` from the code that defines it"
        )
    return _record(match.row(-1, named=True))


def load_snapshot_graph(store: DeltaMetadataStore, snapshot_version: str, *, project: str) -> FeatureGraph:
    return FeatureGraph.from_snapshot(get_snapshot(store, snapshot_version, project=project).snapshot)


def retracted_write_ids(store: DeltaMetadataStore, key: FeatureKey) -> list[str]:
    """Write ids hidden from reads for ``key``: the newest retract/restore event per write id wins."""
    df = read_system(store, RETRACTED)
    if df is None:
        return []
    latest = (
        in_commit_order(df.filter(pl.col("feature_key") == key.to_string()), "at")
        .unique(subset=["write_id"], keep="last", maintain_order=True)
        .filter(pl.col("retracted"))
    )
    return latest["write_id"].to_list()


def retract_writes(
    store: DeltaMetadataStore, key: FeatureKey, write_ids: list[str], *, retracted: bool, reason: str
) -> None:
    """Hide (``retracted=True``) or show again the rows written under ``write_ids``."""
    if not write_ids:
        return
    at = now()
    rows = pl.DataFrame(
        {
            "feature_key": [key.to_string()] * len(write_ids),
            "write_id": write_ids,
            "retracted": [retracted] * len(write_ids),
            "reason": [reason] * len(write_ids),
            "at": [at] * len(write_ids),
        },
        schema_overrides={"at": pl.Datetime("us", "UTC")},
    )
    append_system(store, RETRACTED, rows)
