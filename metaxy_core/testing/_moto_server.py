"""The child process behind :class:`metaxy_core.testing.s3.S3Server`: moto's S3 API on 127.0.0.1.

    python -m metaxy_core.testing._moto_server PORT

Prints ``ready`` once it listens, then reads commands from stdin: ``stop`` (close the listening socket and
every open connection, keep the buckets), ``start`` (listen on the same port again); each is acknowledged
with one line. End of stdin ends the process. moto is imported here only, so the settings it reads from the
environment at import (``INITIAL_NO_AUTH_ACTION_COUNT``, ...) are the child's.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server


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
                return super().parse_request()

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
        print(command, flush=True)
    server.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
