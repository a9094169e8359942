"""Local stand-ins for production services: an S3 API (moto) and PostgreSQL (pgserver), both real servers.

The example's migrations never see these objects: they read the standard configuration (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``DATABASE_URL``) that
:func:`local_servers` exports while the servers run. Point those variables at real services and the same
migrations run against production.

Example:
    >>> with local_servers() as servers:
    ...     print(servers.env["AWS_ENDPOINT_URL"], servers.env["DATABASE_URL"])
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: credentials the local S3 server accepts (moto accepts any; these are the conventional ones)
LOCAL_AWS_KEY = "testing"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    """A moto S3 server on 127.0.0.1, in this process (``ThreadedMotoServer``)."""

    port: int
    _server: Any = field(repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        """A boto3 S3 client for this server (explicit settings; the migrations use the environment's)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=LOCAL_AWS_KEY,
            aws_secret_access_key=LOCAL_AWS_KEY,
            region_name="us-east-1",
        )

    def direct_put(self) -> Callable[[str, str, bytes], None] | None:
        """Write objects straight into this in-process server's storage (for bulk seeding), if possible.

        Thousands of HTTP PUTs to moto cost ~5 ms each; seeding goes through the server's own storage instead,
        and every reader (the migrations included) still gets the objects through the S3 API. Returns None
        when moto's internals are not where this expects them; callers then upload with boto3.
        """
        try:
            from moto.core import DEFAULT_ACCOUNT_ID
            from moto.s3.models import s3_backends

            backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        except Exception:  # another moto layout: fall back to the API
            return None
        return lambda bucket, key, body: backend.put_object(bucket, key, body)


def start_s3() -> S3Server:
    """Start moto's S3 API on a free port and wait until it answers."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(port=port, _server=server)
    # moto keeps its state per process (a second server in this process shares it): never reset it, other
    # users may be relying on it; seeding is idempotent instead.
    for attempt in range(50):
        try:
            urllib.request.urlopen(f"{s3.endpoint}/", timeout=5).close()
            break
        except OSError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    return s3


@dataclass
class PostgresServer:
    """A PostgreSQL 16 server from the ``pgserver`` wheel, in a temporary folder deleted on stop."""

    uri: str
    data_dir: Path
    pid: int | None
    _server: Any = field(repr=False)

    def stop(self) -> None:
        """Stop the server and delete its data, even when ``pg_ctl stop`` cannot run."""
        try:
            self._server.cleanup()  # pg_ctl stop; with cleanup_mode="delete" also deletes data_dir
        except Exception as exc:  # e.g. run as root, the `pgserver` user can no longer reach pg_ctl
            log.warning("pg_ctl stop failed (%s); stopping PostgreSQL (pid %s) with a signal", exc, self.pid)
        finally:
            _terminate(self.pid)
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _terminate(pid: int | None) -> None:
    """Fast-shutdown PostgreSQL's postmaster (SIGINT), then kill it if it is still there after 10 s."""
    if pid is None:
        return
    import psutil

    try:
        process = psutil.Process(pid)
        if process.name() != "postgres":
            return
        process.send_signal(signal.SIGINT)
        process.wait(10)
    except psutil.TimeoutExpired:
        process.kill()
    except psutil.Error:
        pass  # already gone


def start_postgres() -> PostgresServer:
    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI)
        warnings.simplefilter("ignore")
        import pgserver

    parent = Path(tempfile.mkdtemp(prefix="metaxy-example-pg-"))
    data_dir = parent / "data"
    server = pgserver.get_server(data_dir, cleanup_mode="delete")
    return PostgresServer(uri=server.get_uri(), data_dir=data_dir, pid=server.get_pid(), _server=server)


@dataclass
class LocalServers:
    s3: S3Server
    postgres: PostgresServer

    @property
    def env(self) -> dict[str, str]:
        """The configuration production would set, pointing at the local servers."""
        return {
            "AWS_ENDPOINT_URL": self.s3.endpoint,
            "AWS_ACCESS_KEY_ID": LOCAL_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",  # delta-rs: only needed if the metadata store itself lives on this S3
            "DATABASE_URL": self.postgres.uri,
        }


@contextmanager
def local_servers(*, export: bool = True) -> Iterator[LocalServers]:
    """Start both servers; with ``export``, set their configuration in ``os.environ`` until the block ends.

    Both servers are stopped (and PostgreSQL's data deleted) when the block exits, even on errors.
    """
    started = time.perf_counter()
    s3 = start_s3()
    try:
        postgres = start_postgres()
    except BaseException:
        s3.stop()
        raise
    servers = LocalServers(s3=s3, postgres=postgres)
    log.info(
        "local servers up in %.1fs: S3 %s, PostgreSQL %s",
        time.perf_counter() - started,
        s3.endpoint,
        postgres.uri,
    )
    saved = {k: os.environ.get(k) for k in servers.env}
    try:
        if export:
            os.environ.update(servers.env)
        yield servers
    finally:
        if export:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        postgres.stop()
        s3.stop()
