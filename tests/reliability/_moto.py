"""A real moto S3 server on 127.0.0.1 that can be stopped and started again on the same port.

moto keeps its state in module-level backends, so a server restarted in the same process still has every
bucket and object. Stopping does what a dead server does to its clients: the listening socket is closed (new
connections are refused) and every open keep-alive connection is shut down (in-flight requests fail).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StoppableMoto:
    def __init__(self, port: int | None = None) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.down = False

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
                    "127.0.0.1",
                    self.port,
                    DomainDispatcherApplication(create_backend_app),
                    threaded=True,
                    request_handler=self._handler(),
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


class MotoProcess:
    """``moto_server`` as a child process (for settings that must not leak into the test process)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        script = Path(sys.executable).with_name("moto_server")
        self.proc = subprocess.Popen(
            [str(script), "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
