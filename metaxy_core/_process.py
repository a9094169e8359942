"""Which process is this, and is another one still running: identity and liveness of local processes.

Both the migration lock (a lease held by a dead process on this host is free at once) and the store's spill
clean-up (a spill folder of a dead process is removed) need the same two answers, and neither layer may
import the other; this module sits below both.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    """This machine's name, as recorded next to a pid (a pid only identifies a process on its own host)."""
    return socket.gethostname()


def current_pid() -> int:
    """This process's id."""
    return os.getpid()


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs on this host (one owned by another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_process(host: str, pid: int) -> bool:
    """Whether ``pid`` on ``host`` is known to be gone: only a process of this host can be checked.

    A process on another host is never reported dead (its liveness is unknowable from here), so callers
    fall back to their own expiry rules for it.
    """
    return host == hostname() and not pid_alive(pid)
