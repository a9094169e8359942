"""Which process is this, on which host, by which clock, and is another process still running.

The migration lock (a lease held by a dead process of this very host is free at once), the store's spill
clean-up (a spill folder of a dead process is removed) and every timestamp the store writes need these
answers, and neither layer may import the other; this module sits below both.

A pid only identifies a process inside one pid namespace of one boot of one machine. Containers sharing a
hostname (host networking, Kubernetes ``hostNetwork``) or a machine that rebooted reuse pids, so liveness is
only judged for a :func:`host_identity` equal to ours: hostname, boot id and pid-namespace inode together.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

#: environment variable shifting :func:`now` by this many seconds (simulates a host whose clock is off)
CLOCK_OFFSET_ENV = "METAXY_CLOCK_OFFSET_SECONDS"

#: identifies this process among every process that ever touches a store (pids are reused, this is not)
_PROCESS_ID = uuid.uuid4().hex[:16]


def hostname() -> str:
    """This machine's name, as recorded next to a pid for people to read."""
    return socket.gethostname()


def current_pid() -> int:
    """This process's id."""
    return os.getpid()


def process_id() -> str:
    """A random id of this process, drawn at import: unlike a pid, never shared with another process."""
    return _PROCESS_ID


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.readline().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def host_identity() -> str:
    """Where this process's pid means something: hostname, boot id and pid-namespace inode.

    Two containers with the same hostname have different pid namespaces; a rebooted machine has a new boot
    id. Only a lease or spill folder recorded under exactly this identity may be judged by its pid.
    """
    boot = _read_first_line("/proc/sys/kernel/random/boot_id")
    return f"{hostname()}/{boot or '-'}/{_pid_namespace() or '-'}"


def host_tag() -> str:
    """A short, file-name-safe digest of :func:`host_identity`."""
    return hashlib.sha256(host_identity().encode()).hexdigest()[:10]


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs in this pid namespace (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_process(host_id: str | None, pid: int) -> bool:
    """Whether ``pid`` recorded under ``host_id`` is known to be gone.

    Only a process recorded under exactly this :func:`host_identity` can be checked; any other (another
    machine, another container with the same hostname, an earlier boot, an unknown identity) is never
    reported dead, so callers fall back to their own expiry rules for it.
    """
    return bool(host_id) and host_id == host_identity() and not pid_alive(pid)


def now() -> datetime:
    """The time this process stamps on what it writes (information only: nothing is ordered by it).

    ``METAXY_CLOCK_OFFSET_SECONDS`` shifts it, to show that a host whose clock is off changes no decision.
    """
    offset = os.environ.get(CLOCK_OFFSET_ENV)
    current = datetime.now(UTC)
    if offset:
        try:
            current += timedelta(seconds=float(offset))
        except ValueError:
            pass
    return current
