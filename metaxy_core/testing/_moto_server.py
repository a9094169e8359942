"""The child process behind :class:`metaxy_core.testing.s3.S3Server`: moto's S3 API on 127.0.0.1.

    python -m metaxy_core.testing._moto_server PORT

Prints ``ready`` once it listens, then reads commands from stdin: ``stop`` (close the listening socket and
every open connection, keep the buckets), ``start`` (listen on the same port again), ``freeze-on METHOD
TEXT`` (SIGSTOP itself on the next such request whose path contains TEXT, before handling it; after SIGCONT
that request, and those parsed in the 3 s after, are dropped unanswered); each is acknowledged with one
line. End of stdin ends the process.
moto is imported here only, so the settings it reads from the environment at import
(``INITIAL_NO_AUTH_ACTION_COUNT``, ...) are the child's.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

#: after a ``freeze-on`` freeze ends, requests are dropped for this long (those the kernel queued meanwhile)
DROP_AFTER_THAW_S = 3.0


class StoppableServer:
    """A threaded moto server that can stop (as a dead server would) and start again on the same port.

    moto keeps its state in module-level backends, so a restarted server still has every bucket and object.
    Stopping closes the listening socket (new connections are refused) and shuts down every open keep-alive
    connection (in-flight requests fail).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.down = False
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._app = DomainDispatcherApplication(create_backend_app)
        self._freeze: tuple[str, str] | None = None
        self._drop_until = 0.0

    def arm_freeze(self, method: str, needle: str) -> None:
        """Freeze the whole process (SIGSTOP to itself) on the next ``method`` request whose path contains
        ``needle``, before handling it."""
        with self._lock:
            self._freeze = (method.upper(), needle)

    def froze_on(self, method: str, path: str) -> bool:
        """Whether this request triggers the armed freeze; if so the process is stopped (SIGSTOP) until
        SIGCONT, and requests parsed in the seconds after that are dropped (:meth:`dropping`)."""
        with self._lock:
            if self._freeze is None or method != self._freeze[0] or self._freeze[1] not in path:
                return False
            self._freeze = None
            self._drop_until = float("inf")  # other threads resume with this one: drop from now on
        # Directed at this thread, the stop is immediate (sent to the process, a signal may be delivered
        # to another thread while this one goes on for a moment).
        signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        with self._lock:
            self._drop_until = time.monotonic() + DROP_AFTER_THAW_S
        return True

    def dropping(self) -> bool:
        with self._lock:
            return time.monotonic() < self._drop_until

    def _handler(self) -> type[MotoRequestHandler]:
        owner = self

        class Handler(MotoRequestHandler):
            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner._connections.add(self.connection)

            def parse_request(self) -> bool:  # a request arriving on a kept-alive connection while down
                if owner.down:
                    self.close_connection = True
                    return False
                if not super().parse_request():
                    return False
                if owner.froze_on(self.command, self.path) or owner.dropping():
                    # Stopped until SIGCONT; then this request and those the kernel queued meanwhile (the
                    # client's retries) are dropped unanswered, as a hung server's would be: applying them
                    # late would commit a write its client already gave up on.
                    self.close_connection = True
                    return False
                return True

            def finish(self) -> None:
                with owner._lock:
                    owner._connections.discard(self.connection)
                super().finish()

        return Handler

    def start(self) -> None:
        self.down = False
        deadline = time.monotonic() + 10
        while True:
            try:
                self._server = make_server(
                    "127.0.0.1", self.port, self._app, threaded=True, request_handler=self._handler()
                )
                break
            except OSError:  # the old socket is still being torn down
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.down = True
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None


def main(argv: list[str]) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = StoppableServer(int(argv[0]))
    server.start()
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "stop":
            server.stop()
        elif command == "start":
            server.start()
        elif command.startswith("freeze-on "):
            _, method, needle = command.split(" ", 2)
            server.arm_freeze(method, needle)
        print(command, flush=True)
    server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
