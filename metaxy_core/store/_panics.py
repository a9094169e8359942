"""Keep Rust panic text of delta-rs/object_store off the user's stderr during guarded S3 calls.

Some failures inside delta-rs' and polars' object-store clients (a request timing out while a multipart
upload or a parallel read is in flight) end in a Rust ``panic!`` on a worker thread. The call still fails
(pyo3 raises ``PanicException``, or the task's error surfaces as a normal exception) and
:func:`metaxy_core.store._io.guard` turns it into one clear message; but Rust's default panic hook has already
written ``thread '...' panicked at ...`` and a backtrace note straight to file descriptor 2, where no Python
code sees it.

While at least one guarded S3 call runs (:func:`quiet_panics`), descriptor 2 is a pipe relayed line by line to
the real stderr by a thread, dropping only panic blocks: the ``thread '...' panicked at`` line, the panic
message, the ``note: run with `RUST_BACKTRACE=1``` line and backtrace frames. Everything else passes through
as it arrives, and descriptor 2 is restored when the last guarded call ends. The dropped text is kept at
DEBUG level of the ``metaxy_core.store`` logger, so it is not lost for whoever debugs a crash.
"""

from __future__ import annotations

import logging
import os
import re
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_log = logging.getLogger("metaxy_core.store")
_PANIC_START = re.compile(rb"^thread '[^']*' panicked at ")
_PANIC_NOTE = re.compile(rb"^note: run with `RUST_BACKTRACE=")
_FRAME = re.compile(rb"^(?:stack backtrace:|\s+\d+: |\s+at |note: Some details are omitted)")
#: lines of a panic message kept out at most (a block never swallows more than this)
_MAX_BLOCK = 60
_PIPE_BYTES = 1 << 20

_lock = threading.Lock()
_depth = 0
_relay: _Relay | None = None


class _Relay:
    """Descriptor 2 redirected to a pipe whose lines a thread copies to the saved stderr, minus panics."""

    def __init__(self) -> None:
        self.saved = os.dup(2)
        read, write = os.pipe()
        try:  # room for a burst (a long backtrace) while the relay thread waits for the GIL
            import fcntl

            fcntl.fcntl(write, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
        except (ImportError, OSError):
            pass
        self.read = read
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._run, name="metaxy-stderr-relay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        pending = b""
        block = 0  # > 0: inside a panic block (lines dropped so far)
        dropped: list[bytes] = []
        try:
            while True:
                # A quiet pipe for 50 ms ends a panic block (its text is written in one burst) and lets a
                # partial line (a progress bar's carriage return) through.
                if not select.select([self.read], [], [], 0.05)[0]:
                    block = 0
                    if pending:
                        os.write(self.saved, pending)
                        pending = b""
                    continue
                chunk = os.read(self.read, 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out = []
                for line in lines:
                    if _PANIC_START.match(line):
                        block = 1
                    elif block and (_FRAME.match(line) or block < _MAX_BLOCK):
                        block += 1
                    else:
                        block = 0
                    if block:
                        dropped.append(line)
                        if _PANIC_NOTE.match(line):
                            block = 0  # the note ends the block (a backtrace after it matches _FRAME)
                    else:
                        out.append(line + b"\n")
                if out:
                    os.write(self.saved, b"".join(out))
        finally:
            if pending and not block:
                os.write(self.saved, pending)
            os.close(self.read)
            os.close(self.saved)
            if dropped:
                text = b"\n".join(dropped).decode("utf-8", "replace")
                _log.debug("Rust panic text kept off stderr:\n%s", text)

    def close(self) -> None:
        """Put the saved stderr back on descriptor 2; the relay drains the pipe and ends."""
        os.dup2(self.saved, 2)  # closes the pipe's last write end: the relay reads EOF
        self.thread.join(timeout=1)  # a child process started meanwhile may hold the pipe: it relays on


@contextmanager
def quiet_panics() -> Iterator[None]:
    """Within this block (any thread), Rust panic text written to stderr is dropped; all else is relayed."""
    global _depth, _relay
    with _lock:
        if _depth == 0:
            try:  # POSIX only: the relay waits on the pipe with select(), which Windows does not do for pipes
                _relay = _Relay() if os.name == "posix" else None
            except OSError:  # no descriptor 2, or no pipes left: run unfiltered
                _relay = None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _relay is not None:
                relay, _relay = _relay, None
                relay.close()
