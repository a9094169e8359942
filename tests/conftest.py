"""Shared fixtures: an isolated environment, a fresh feature graph, a local store and a real S3 (moto) server.

No mocks: the S3 fixtures run moto's real S3 HTTP API on 127.0.0.1 and the stores write real Delta tables.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metaxy_core import DeltaMetadataStore, FeatureGraph

MOTO_KEY_ID = "metaxy-test-key-id"
MOTO_SECRET = "metaxy-test-secret-Zq9vX2"
MOTO_REGION = "us-east-1"


def free_port() -> int:
    """A TCP port nothing listens on (closed again right away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No METAXY_* / AWS_* from the developer's shell, no ~/.aws files, no instance-metadata lookups."""
    for name in list(os.environ):
        if name.startswith(("METAXY_", "AWS_")):
            monkeypatch.delenv(name)
    nowhere = tmp_path_factory.getbasetemp() / "no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def graph() -> Iterator[FeatureGraph]:
    """A fresh, active feature graph: features declared in the test register here, not globally."""
    g = FeatureGraph()
    with g.use():
        yield g


@pytest.fixture
def store(tmp_path: Path) -> DeltaMetadataStore:
    """A local Delta store in a folder that does not exist yet (the first write creates it)."""
    return DeltaMetadataStore(tmp_path / "store")


# ----------------------------------------------------------------------------------------------- S3 (moto)
@dataclass(frozen=True)
class S3Location:
    """A bucket on the test S3 server and the storage options that reach it."""

    endpoint: str
    bucket: str
    prefix: str
    storage_options: dict[str, str] = field(default_factory=dict)
    key_id: str = MOTO_KEY_ID
    secret: str = MOTO_SECRET

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def client(self):  # noqa: ANN201 - boto3 client types are not importable without stubs
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=MOTO_KEY_ID,
            aws_secret_access_key=MOTO_SECRET,
            region_name=MOTO_REGION,
        )


_MOTO_CHILD = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the parent closes stdin
server.stop()
"""


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API (moto's ThreadedMotoServer) on 127.0.0.1 and a free port, for the whole session.

    The server runs in a child process: in this one it would need the GIL to answer, and delta-rs readers
    (``DeltaTable.scan()``, ``QueryBuilder``) hold the GIL while they wait for S3, which deadlocks.
    """
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", _MOTO_CHILD, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready", (
            "moto server did not start"
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        assert child.stdin is not None
        child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


@pytest.fixture
def closed_endpoint() -> str:
    """An http endpoint on 127.0.0.1 where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def s3(moto_endpoint: str) -> S3Location:
    """A fresh bucket; ``s3.root`` is ``s3://<bucket>/<prefix>`` and ``s3.storage_options`` reach it."""
    location = S3Location(
        endpoint=moto_endpoint,
        bucket=f"metaxy-{uuid.uuid4().hex[:12]}",
        prefix="metadata/store",
        storage_options={
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ACCESS_KEY_ID": MOTO_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": MOTO_SECRET,
            "AWS_REGION": MOTO_REGION,
        },
    )
    location.client().create_bucket(Bucket=location.bucket)
    return location
