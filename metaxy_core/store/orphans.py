"""Files a failed step left in a feature table without committing them, removed when the step runs again.

A Delta write uploads its Parquet files first and commits them in one log entry at the end. A write cut off
in between (the S3 endpoint stalled, the process was killed, the lease was lost) leaves files that no commit
references: invisible to readers, but they cost storage and are only collected by a vacuum once they are
older than its retention (a week by default). The step's re-run removes them before its first write to the
table (:func:`clean_before_write`), deleting only files that are provably that step's leftovers:

1. **not referenced** by the table: not in its current version, and not added by any commit written since the
   file (a commit always lands after the files it adds), so files replaced by a compaction but kept for
   time travel stay;
2. **written before the current lease was acquired**, on the storage's own clock (the file's modification time
   against the lease's acquire commit in the lock table): every writer of the current run, including sibling
   units of the same step on other workers, starts after the acquisition, so none of its in-flight files
   qualifies; a file older than that belongs to a run that no longer holds the lease;
3. **holding only rows of this step's write id** (deterministic per step, shared by its attempts): files of
   any other writer (another step, a user's ``write_metadata`` still uploading outside migrations) never
   carry it, and a file that cannot be read as Parquet is left alone.

A local file is written under a staging name carrying a tag of the step's write id (:func:`staging_path`)
and renamed into place once complete: a write killed midway leaves that staging file, never a truncated file
under a data file's name. Staging files of this step written before the lease was acquired are removed too
(conditions 2 and, by their name, 3; no commit ever adds one).

The check runs once per step, table and lease in a process, only for fenced writes (a lease is held); when
there is nothing to remove it costs one listing of the table folder and one HEAD of the lock commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import polars as pl

from metaxy_core.store import _io
from metaxy_core.store._storage import delete_files, list_data_files, modified_at, read_bytes
from metaxy_core.store.provenance import WRITE_ID

if TYPE_CHECKING:
    from deltalake import DeltaTable

    from metaxy_core.store.scope import Fence

_log = logging.getLogger("metaxy_core.store")
_DONE: set[tuple[str, str, int]] = set()
_LOCK = threading.Lock()
#: S3 reports modification times to the second: commits within this much before a file may still add it
_CLOCK_GRAIN = timedelta(seconds=2)


def staging_path(path: str, write_id: str) -> str:
    """Where a local data file ``path`` of the step writing ``write_id`` is written before it is renamed to
    ``path``: its name ends in a tag of the write id (write ids hold ``/``), so that a re-run of the step
    finds what a killed write left without reading it."""
    return f"{path}{_staging_suffix(write_id)}"


def _staging_suffix(write_id: str) -> str:
    return f".{hashlib.sha256(write_id.encode()).hexdigest()[:16]}.tmp"


def clean_before_write(
    uri: str, options: Mapping[str, str], table: DeltaTable | None, rows: pl.DataFrame, fence: Fence | None
) -> tuple[int, int]:
    """Before a step's first commit to ``uri`` under ``fence``: remove what its earlier attempts left.

    ``rows`` are the rows about to be written (their write id names the step). Returns (files, bytes)
    removed. Call inside :func:`metaxy_core.store._io.guard`.
    """
    if table is None or fence is None or not fence.guards(uri) or WRITE_ID not in rows.columns:
        return 0, 0
    column = rows.get_column(WRITE_ID)
    first = column[0] if column.len() else None
    if first is None or column.null_count() or not (column == first).all():  # no hash of every row
        return 0, 0
    write_id = str(first)
    key = (uri, write_id, fence.token)
    with _LOCK:
        if key in _DONE:
            return 0, 0
        if len(_DONE) > 65536:
            _DONE.clear()
        _DONE.add(key)
    from metaxy_core.store.system import LOCK, SYSTEM_DIR

    lock_commit = f"{fence.root.rstrip('/')}/{SYSTEM_DIR}/{LOCK}/_delta_log/{fence.token:020d}.json"
    acquired = modified_at(lock_commit, options)
    if acquired is None:  # the lock commit is gone (log retention): no safe bound
        return 0, 0
    current = {unquote(str(path)) for path in table.get_add_actions(flatten=True).column("path").to_pylist()}
    listed = {name: v for name, v in list_data_files(uri, options).items() if v[1] < acquired}
    staged = {name: v for name, v in listed.items() if name.endswith(_staging_suffix(write_id))}
    candidates = {n: v for n, v in listed.items() if n not in current and n.endswith(".parquet")}
    ours = {name: v for name, v in candidates.items() if _write_ids(uri, name, options) == {write_id}}
    orphans = sorted(staged)
    if ours:
        committed = _added_since(uri, options, min(when for _, when in ours.values()) - _CLOCK_GRAIN)
        orphans += sorted(name for name in ours if name not in committed)
    if not orphans:
        return 0, 0
    ours.update(staged)
    size = sum(ours[name][0] for name in orphans)
    try:
        delete_files(uri, orphans, options)
    except OSError as exc:  # e.g. no s3:DeleteObject: the write goes on, a vacuum collects them later
        _log.warning(
            "could not remove %d uncommitted files from %s (%s); a vacuum will", len(orphans), uri, exc
        )
        return 0, 0
    _log.info(
        "removed %d files (%d bytes) that an earlier attempt of step %s wrote to %s without committing them",
        len(orphans),
        size,
        write_id,
        uri,
    )
    return len(orphans), size


def _write_ids(uri: str, name: str, options: Mapping[str, str]) -> set[str] | None:
    """The write ids of a Parquet file's rows, or None when it cannot be read (truncated, not ours...)."""
    try:
        lf = pl.scan_parquet(f"{uri}/{name}", storage_options=_io.polars_options(options))
        values = lf.select(pl.col(WRITE_ID).unique()).collect().get_column(WRITE_ID)
    except Exception:  # noqa: BLE001 - any unreadable file is left alone
        return None
    return {str(v) for v in values if v is not None}


def _added_since(uri: str, options: Mapping[str, str], since: Any) -> set[str]:
    """Paths that commits written at or after ``since`` add or remove (relative to the table, decoded)."""
    paths: set[str] = set()
    log = f"{uri}/_delta_log"
    for name, (_, when) in list_data_files(log, options).items():
        if not name.endswith(".json") or "/" in name or when < since:
            continue
        for line in read_bytes(f"{log}/{name}", options).decode("utf-8", "replace").splitlines():
            try:
                action = json.loads(line)
            except ValueError:
                continue
            for kind in ("add", "remove"):
                if isinstance(action.get(kind), dict) and "path" in action[kind]:
                    paths.add(unquote(str(action[kind]["path"])))
    return paths
