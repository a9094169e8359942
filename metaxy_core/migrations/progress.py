"""The migration log: an append-only Delta system table of per-step progress events.

One source of truth for the executor, ``metaxy migrations status`` and Dagster. Events are keyed by
(migration, operation index, feature); migration-level events use operation index -1. A ``rolled_back`` event
closes a migration's history: only events after the newest one count, so a rolled-back migration is pending
again while its old events stay readable (``metaxy migrations history``).

This module writes events (:func:`record`) and reads them (:func:`read_events`, :func:`read_states`); what the
events mean is :mod:`metaxy_core.migrations.state`'s fold, and their vocabulary is
:mod:`metaxy_core.migrations.results`' status enums.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import TYPE_CHECKING, Any

import polars as pl

from metaxy_core._process import now
from metaxy_core.migrations.results import EventStatus, MigrationStatus, StepStatus
from metaxy_core.migrations.state import MIGRATION_LEVEL, MigrationState, StepState, fold
from metaxy_core.store.order import in_commit_order, written
from metaxy_core.store.provenance import COMMIT_ORDER
from metaxy_core.store.system import (
    MIGRATION_EVENTS,
    MIGRATION_EVENTS_SCHEMA,
    append_system,
    latest_local_commit,
    log_tail,
    open_system_table,
    read_system,
)

if TYPE_CHECKING:
    from metaxy_core.store.delta import DeltaMetadataStore

EVENTS = MIGRATION_EVENTS

# The log's vocabulary under the names this module has always offered (scripts and tests read them here).
NOT_STARTED = MigrationStatus.NOT_STARTED
IN_PROGRESS = MigrationStatus.IN_PROGRESS
COMPLETED = MigrationStatus.COMPLETED
FAILED = MigrationStatus.FAILED
STARTED = EventStatus.STARTED
ROLLED_BACK = EventStatus.ROLLED_BACK
#: step statuses of finished steps (a re-run skips them)
STEP_DONE = tuple(s for s in StepStatus if s.done)

__all__ = [
    "COMPLETED",
    "EVENTS",
    "FAILED",
    "IN_PROGRESS",
    "MIGRATION_LEVEL",
    "NOT_STARTED",
    "ROLLED_BACK",
    "STARTED",
    "STEP_DONE",
    "MigrationState",
    "StepState",
    "read_events",
    "read_states",
    "record",
    "record_all",
]


#: the log as last read (or written) by this process, per table URI: (Delta version, a tag of that version's
#: commit file or None when this process wrote it, rows). A state check re-reads the log only when its version
#: moved, so Dagster ops and repeated checks in one process pay ~5 ms, not a full read; on S3 the check is
#: one listing request instead of opening the table, and this process's own events are added to the cache
#: as it commits them (an apply records three, each followed by a state check).
_LOG_CACHE: dict[str, tuple[int, str | None, pl.DataFrame]] = {}
_LOG_CACHE_LOCK = threading.Lock()


def read_events(store: DeltaMetadataStore, project: str) -> pl.DataFrame:
    """Every event of ``project`` in commit order, oldest first (never by the writers' clocks; see
    :mod:`metaxy_core.store.order`). The whole log is read once per Delta version and kept."""
    df = _cached_log(store)
    if df is None:
        table = open_system_table(store, EVENTS)
        if table is None:
            return pl.DataFrame(schema=MIGRATION_EVENTS_SCHEMA)
        uri, version = store.system_table_uri(EVENTS), table.version()
        with _LOG_CACHE_LOCK:
            cached = _LOG_CACHE.get(uri)
        if cached is not None and cached[0] == version and not store.is_remote:  # remote: _cached_log decided
            df = cached[2]
        else:
            df = read_system(store, EVENTS, table=table)
            assert df is not None  # the table exists: it was just opened
            tag = log_tail(store, EVENTS, version)[0] if store.is_remote else None
            _keep(uri, version, tag, df)
    return in_commit_order(df.filter(pl.col("project") == project), "at")


def _cached_log(store: DeltaMetadataStore) -> pl.DataFrame | None:
    """The cached log of a remote store when its version is still the latest (one listing), else None.

    A tag that differs (or a commit file that vanished) means the table is not the one cached: a store
    re-created under the same URI, as a test server's may be.
    """
    uri = store.system_table_uri(EVENTS)
    with _LOG_CACHE_LOCK:
        cached = _LOG_CACHE.get(uri)
    if cached is None or not store.is_remote:
        return None
    version, tag, df = cached
    now_tag, later = log_tail(store, EVENTS, version)
    if now_tag is None or later or (tag is not None and tag != now_tag):
        return None
    if tag is None:  # this process committed that version: remember the file it wrote
        _keep(uri, version, now_tag, df)
    return df


def _keep(uri: str, version: int, tag: str | None, df: pl.DataFrame) -> None:
    with _LOG_CACHE_LOCK:
        if len(_LOG_CACHE) > 16:
            _LOG_CACHE.clear()
        _LOG_CACHE[uri] = (version, tag, df)


def _add_own(uri: str, version: int | None, rows: pl.DataFrame) -> None:
    """Add events this process just committed at ``version`` to the cached log when it holds the version
    before (otherwise the next read reads the log again)."""
    if version is None:
        return
    stamped = rows.with_columns(pl.lit(written(version), pl.Int64).alias(COMMIT_ORDER))
    if version == 0:  # this commit created the log: these are all its rows
        _keep(uri, version, None, stamped)
        return
    with _LOG_CACHE_LOCK:
        cached = _LOG_CACHE.get(uri)
    if cached is None or cached[0] != version - 1 or set(stamped.columns) != set(cached[2].columns):
        return  # not known, or a log of an earlier layout: the next check reads it again
    before = cached[2]
    _keep(uri, version, None, pl.concat([before, stamped.select(before.columns).cast(before.schema)]))


_STATES_CACHE: dict[tuple[str, str], tuple[tuple[int, int], dict[str, MigrationState]]] = {}


def read_states(store: DeltaMetadataStore, project: str) -> dict[str, MigrationState]:
    """Current state of every migration that has events, from a single read of the log.

    Folded states are kept per process while the (local) log does not change, so repeated checks, such as one
    per Dagster op, cost a directory listing. States are read-only.
    """
    uri = store.system_table_uri(EVENTS)
    key = latest_local_commit(store, EVENTS)
    if key is not None:
        with _LOG_CACHE_LOCK:
            cached = _STATES_CACHE.get((uri, project))
        if cached is not None and cached[0] == key:
            return dict(cached[1])
    states = _read_states(store, project)
    if key is not None:
        with _LOG_CACHE_LOCK:
            if len(_STATES_CACHE) > 16:
                _STATES_CACHE.clear()
            _STATES_CACHE[(uri, project)] = (key, states)
    return dict(states)


def _read_states(store: DeltaMetadataStore, project: str) -> dict[str, MigrationState]:
    events = read_events(store, project)
    # One pass over the log's rows (a handful per migration): a polars group-by with a filter per migration
    # cost ~0.3 ms per migration, i.e. 60 ms for 200 migrations on every state check.
    rows_by_migration: dict[str, list[dict[str, Any]]] = {}
    for row in events.iter_rows(named=True):
        rows_by_migration.setdefault(str(row["migration_id"]), []).append(row)
    return {migration_id: fold(migration_id, rows) for migration_id, rows in rows_by_migration.items()}


def record(
    store: DeltaMetadataStore,
    *,
    project: str,
    migration_id: str,
    status: EventStatus | StepStatus,
    run_id: str,
    op_index: int = MIGRATION_LEVEL,
    op_id: str = "",
    op_type: str = "",
    feature_key: str = "",
    rows: int = 0,
    duration_s: float = 0.0,
    note: str = "",
    error: str = "",
    checksum: str = "",
    write_id: str = "",
    writes: dict[str, int] | None = None,
) -> None:
    """Append one event (one small Delta commit; delta-rs retries concurrent appends)."""
    event = {
        "project": project,
        "migration_id": migration_id,
        "op_index": op_index,
        "op_id": op_id,
        "op_type": op_type,
        "feature_key": feature_key,
        "status": str(status),
        "rows": rows,
        "duration_s": duration_s,
        "note": note,
        "error": error,
        "run_id": run_id,
        "checksum": checksum,
        "write_id": write_id,
        "writes": json.dumps(writes or {}, sort_keys=True),
    }
    record_all(store, [event])


def record_all(store: DeltaMetadataStore, events: list[dict[str, Any]]) -> None:
    """Append several events in one commit, so they are recorded all or none (``baseline``'s stamps).

    Each event has :func:`record`'s fields (``project``, ``migration_id``, ``status``, ``run_id``...; the
    others default as there); host, pid and time are added here.
    """
    defaults = {"op_index": MIGRATION_LEVEL, "rows": 0, "duration_s": 0.0, "writes": "{}"}
    at, host, pid = now(), socket.gethostname(), os.getpid()
    rows = [
        {
            **{name: "" for name in MIGRATION_EVENTS_SCHEMA},
            **defaults,
            **{k: (str(v) if k == "status" else v) for k, v in event.items()},
            "host": host,
            "pid": pid,
            "at": at,
        }
        for event in events
    ]
    frame = pl.DataFrame(rows, schema=MIGRATION_EVENTS_SCHEMA)
    _add_own(store.system_table_uri(EVENTS), append_system(store, EVENTS, frame), frame)
