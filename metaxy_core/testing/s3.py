"""A real S3 API (moto's server) on 127.0.0.1 for tests, and a bucket on it.

The server runs in a child process: in the test process it would need the GIL to answer, and delta-rs readers
(``DeltaTable.scan()``, ``QueryBuilder``) hold the GIL while they wait for S3, which deadlocks. moto is only
imported by that child, so importing this module needs neither moto nor pytest.

Example:
    >>> with S3Server() as server:
    ...     bucket = S3Location.create(server.endpoint)
    ...     store = DeltaMetadataStore(bucket.root, bucket.storage_options)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MOTO_KEY_ID = "metaxy-test-key-id"
MOTO_SECRET = "metaxy-test-secret-Zq9vX2"
MOTO_REGION = "us-east-1"


def free_port() -> int:
    """A TCP port nothing listens on (closed again right away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's S3 (and IAM, ...) API on 127.0.0.1 in a child process, stopped by whoever started it.

    :meth:`stop` makes it behave like a dead server (connections refused, open ones cut) while keeping its
    buckets; :meth:`start` serves them again on the same port; :meth:`close` ends the child.

    Args:
        env: the child's environment (moto reads settings such as ``INITIAL_NO_AUTH_ACTION_COUNT`` from it);
            this process's environment by default.
    """

    def __init__(self, *, env: Mapping[str, str] | None = None) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._child = subprocess.Popen(
            [sys.executable, "-m", "metaxy_core.testing._moto_server", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            text=True,
        )
        try:
            self._expect("ready")
        except BaseException:
            self.close()
            raise

    def _expect(self, answer: str) -> None:
        assert self._child.stdout is not None
        line = self._child.stdout.readline().strip()
        if line != answer:
            raise RuntimeError(f"moto server on port {self.port}: expected {answer!r}, got {line!r}")

    def _command(self, command: str) -> None:
        assert self._child.stdin is not None
        self._child.stdin.write(command + "\n")
        self._child.stdin.flush()
        self._expect(command)

    def stop(self) -> None:
        """Close the listening socket and every open connection; buckets and objects are kept."""
        self._command("stop")

    def start(self) -> None:
        """Serve again on the same port after :meth:`stop`."""
        self._command("start")

    @property
    def pid(self) -> int:
        """The server's process id (to freeze it from another process: ``SIGSTOP``/``SIGCONT``)."""
        return self._child.pid

    def freeze(self) -> None:
        """Stop the server's process (SIGSTOP): connections are accepted by the kernel, nothing answers."""
        os.kill(self._child.pid, signal.SIGSTOP)

    def freeze_on(self, method: str, path_contains: str) -> None:
        """Freeze the server (as :meth:`freeze`) when the next ``method`` request whose path contains
        ``path_contains`` arrives, before it is handled (e.g. ``"PUT", "/video__emb/_delta_log/"``: the first
        commit to that table, after its data files were uploaded). After :meth:`thaw` that request and those
        arriving in the next 3 s (the client's retries the kernel queued) are dropped unanswered, like
        requests to a server that hung."""
        self._command(f"freeze-on {method} {path_contains}")

    @property
    def frozen(self) -> bool:
        """Whether the server's process is stopped (SIGSTOP)."""
        try:
            with open(f"/proc/{self._child.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
        except OSError:
            return False

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT); requests it had accepted are answered late."""
        os.kill(self._child.pid, signal.SIGCONT)

    def close(self) -> None:
        """End the child process (its state goes with it)."""
        if self._child.poll() is None:
            self.thaw()  # a frozen child would not read the closed stdin
        if self._child.stdin is not None and not self._child.stdin.closed:
            try:
                self._child.stdin.close()
            except OSError:
                pass
        try:
            self._child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait()
        if self._child.stdout is not None:
            self._child.stdout.close()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def client(
        self,
        service: str = "s3",
        *,
        key_id: str = MOTO_KEY_ID,
        secret: str = MOTO_SECRET,
        region: str = MOTO_REGION,
    ) -> Any:
        """A boto3 client for this server."""
        return s3_client(self.endpoint, service, key_id=key_id, secret=secret, region=region)


def s3_client(
    endpoint: str,
    service: str = "s3",
    *,
    key_id: str = MOTO_KEY_ID,
    secret: str = MOTO_SECRET,
    region: str = MOTO_REGION,
) -> Any:
    """A boto3 client for ``endpoint`` with explicit credentials (nothing from the environment)."""
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=region,
    )


@dataclass(frozen=True)
class S3Location:
    """A bucket on the test S3 server and the storage options that reach it."""

    endpoint: str
    bucket: str
    prefix: str
    storage_options: dict[str, str] = field(default_factory=dict)
    key_id: str = MOTO_KEY_ID
    secret: str = MOTO_SECRET

    @classmethod
    def create(cls, endpoint: str, *, prefix: str = "metadata/store") -> S3Location:
        """A fresh, uniquely named bucket on ``endpoint``."""
        location = cls(
            endpoint=endpoint,
            bucket=f"metaxy-{uuid.uuid4().hex[:12]}",
            prefix=prefix,
            storage_options={
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": MOTO_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": MOTO_SECRET,
                "AWS_REGION": MOTO_REGION,
            },
        )
        location.client().create_bucket(Bucket=location.bucket)
        return location

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def client(self) -> Any:
        return s3_client(self.endpoint)
