"""Run the ``metaxy`` CLI with fault injection, for the reliability tests only.

    python killhook.py migrations apply        # plan in the METAXY_TEST_HOOK environment variable (JSON)

The plan may contain:

* ``log``: a file receiving one JSON line per Delta commit the process attempts (table, kind, event);
* ``kill_at`` + ``how``: SIGKILL this process at its n-th commit, ``before`` it, ``after`` it, or ``during``
  it (a timer fires ``delay`` seconds after the commit starts, usually inside delta-rs);
* ``timer``: SIGKILL this process that many seconds after the CLI starts, wherever it is;
* ``host``: pretend to run on another host (``socket.gethostname``), so a lease it leaves behind cannot be
  recognised as a dead local process and must expire;
* ``freeze_pid`` + ``freeze_at``: SIGSTOP that process (an S3 server) once, ``read``: at the first scan of a
  feature table after the first lock commit (the step's read phase), ``write``: just before the first commit
  to a feature table (the step's write phase); the time is logged as ``{"frozen_at": <epoch seconds>}``;
* ``revoke``: ``{"endpoint", "user", "key_id", "secret"}`` of an IAM access key of a moto server enforcing
  authentication: that key is deleted (revoked) at the first scan of a feature table after the first lock
  commit, so the step's reads from then on are refused (403); logged as ``{"revoked_at": <epoch seconds>}``;
* ``host_id``: pretend to run under another host identity (``metaxy_core._process.host_identity``: hostname,
  boot id, pid namespace), e.g. another container with the same hostname;
* ``file_rows``: the bulk writer cuts a bucket into local files of at most that many rows
  (``metaxy_core.store.bulk.FILE_ROWS``, 262,144 in production), written two at a time, so small test buckets
  take that path too; ``kill_after_files``: SIGKILL this process once that many such files are written
  (the bucket's other files being written or not yet, its commit not made); ``truncate_last``: the last of
  them is first cut to half its bytes, as a write killed midway leaves it (wherever the writer put it).

Only this script reads the variable: the hooks are installed by monkeypatching public module attributes
(``metaxy_core.store._io.append``, the bulk writer ``metaxy_core.store.bulk.append_frames`` and the
lock's compare-and-swap ``cas_append``); the engine has no test-only paths.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

PLAN: dict[str, Any] = json.loads(os.environ.get("METAXY_TEST_HOOK", "{}"))
START = time.monotonic()
_count = 0
_log_fd = os.open(PLAN["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if PLAN.get("log") else None

if PLAN.get("host"):
    socket.gethostname = lambda: PLAN["host"]  # type: ignore[assignment]
if PLAN.get("host_id"):
    from metaxy_core import _process

    _process.host_identity = lambda: PLAN["host_id"]  # type: ignore[assignment]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _describe(target: Any, frame: Any) -> dict[str, Any]:
    uri = target if isinstance(target, str) else getattr(target, "table_uri", str(target))
    table = str(uri).rstrip("/").rsplit("/", 1)[-1]
    kinds = {
        "migration_events": "progress",
        "lock": "lock",
        "snapshots": "snapshot",
        "clock": "clock",
        "retracted_writes": "retraction",
    }
    kind = kinds.get(table, "data")
    rows = sum(f.height for f in frame) if isinstance(frame, list) else getattr(frame, "height", None)
    info: dict[str, Any] = {"table": table, "kind": kind, "rows": rows}
    if kind == "progress":
        row = frame.row(0, named=True)
        info["event"] = f"{row['status']}:{row['op_index']}:{row['feature_key']}"
    elif kind == "lock":
        info["event"] = frame.row(0, named=True)["event"]
    return info


_inside = threading.local()


def _hooked(real: Any) -> Any:
    def commit(target: Any, frame: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_inside, "active", False):  # a bulk append falling back to _io.append: one commit
            return real(target, frame, *args, **kwargs)
        _inside.active = True
        try:
            return _commit(real, target, frame, *args, **kwargs)
        finally:
            _inside.active = False

    return commit


_frozen = False
_locked = False


def _freeze(phase: str) -> None:
    """SIGSTOP the plan's ``freeze_pid`` (once) when the plan freezes at ``phase``."""
    global _frozen
    if _frozen or PLAN.get("freeze_at") != phase or not PLAN.get("freeze_pid"):
        return
    _frozen = True
    os.kill(int(PLAN["freeze_pid"]), signal.SIGSTOP)
    if _log_fd is not None:
        os.write(_log_fd, (json.dumps({"frozen_at": time.time(), "phase": phase}) + "\n").encode())


_revoked = False


def _revoke() -> None:
    """Delete the plan's ``revoke`` access key (once), with that key itself (its user may do anything)."""
    global _revoked
    if _revoked or not PLAN.get("revoke"):
        return
    _revoked = True
    import boto3

    key = PLAN["revoke"]
    boto3.client(
        "iam",
        endpoint_url=key["endpoint"],
        aws_access_key_id=key["key_id"],
        aws_secret_access_key=key["secret"],
        region_name="us-east-1",
    ).delete_access_key(UserName=key["user"], AccessKeyId=key["key_id"])
    if _log_fd is not None:
        os.write(_log_fd, (json.dumps({"revoked_at": time.time()}) + "\n").encode())


def _hooked_scan(real: Any) -> Any:
    def scan_table(table: Any, *args: Any, **kwargs: Any) -> Any:
        frame = real(table, *args, **kwargs)
        if _locked and "_metaxy_system" not in str(getattr(table, "table_uri", "")):
            _freeze("read")
            _revoke()
        return frame

    return scan_table


def _commit(real: Any, target: Any, frame: Any, *args: Any, **kwargs: Any) -> Any:
    global _count, _locked
    _count += 1
    info = _describe(target, frame)
    if _log_fd is not None:  # os.write: nothing buffered in the process when SIGKILL lands
        line = {"n": _count, "t": round(time.monotonic() - START, 4), **info}
        os.write(_log_fd, (json.dumps(line) + "\n").encode())
    _locked = _locked or info["kind"] == "lock"
    if info["kind"] == "data":
        _freeze("write")
    if _count != PLAN.get("kill_at"):
        return real(target, frame, *args, **kwargs)
    how = PLAN.get("how", "before")
    if how == "before":
        _die()
    if how == "during":
        threading.Timer(float(PLAN.get("delay", 0.0)), _die).start()
    result = real(target, frame, *args, **kwargs)
    if how == "after":
        _die()
    if how == "during":
        time.sleep(1.0)  # the timer fires; never carry on past this commit
    return result


def _hooked_cas(real: Any) -> Any:
    """The lock's ``cas_append(store, name, table, rows)``, seen as one commit of ``rows`` to ``name``."""
    hooked = _hooked(lambda target, frame, store, table: real(store, target, table, frame))

    def cas_append(store: Any, name: str, table: Any, rows: Any) -> Any:
        return hooked(name, rows, store, table)

    return cas_append


def _counting_writer(make: Any, kill_after: int, truncate_last: bool) -> Any:
    """The bulk writer's file writer, SIGKILLing the process once ``kill_after`` files are written (the last
    one cut to half its bytes first with ``truncate_last``: a write killed midway)."""
    written = [0]
    lock = threading.Lock()

    def writer(frame: Any, **kwargs: Any) -> Any:
        write = make(frame, **kwargs)

        def hooked(path: str) -> None:
            write(path)
            with lock:
                written[0] += 1
                if written[0] >= kill_after:
                    if truncate_last:
                        os.truncate(path, os.path.getsize(path) // 2)
                    _die()

        return hooked

    return writer


def main() -> int:
    from metaxy_core.cli.app import main as cli_main
    from metaxy_core.migrations import lock
    from metaxy_core.store import _io

    _io.append = _hooked(_io.append)
    _io.scan_table = _hooked_scan(_io.scan_table)
    lock.cas_append = _hooked_cas(lock.cas_append)
    try:  # the bulk writer of bucketed reconciliation commits Parquet files it wrote itself
        from metaxy_core.store import bulk
    except ImportError:
        pass
    else:
        bulk.append_frames = _hooked(bulk.append_frames)
        if PLAN.get("file_rows"):
            bulk.FILE_ROWS = int(PLAN["file_rows"])
        if PLAN.get("kill_after_files"):
            bulk._parquet_writer = _counting_writer(
                bulk._parquet_writer, int(PLAN["kill_after_files"]), bool(PLAN.get("truncate_last"))
            )
    if PLAN.get("timer") is not None:
        threading.Timer(float(PLAN["timer"]) - (time.monotonic() - START), _die).start()
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
