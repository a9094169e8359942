"""pytest fixtures over :mod:`metaxy_core.testing`; enable them with
``pytest_plugins = ["metaxy_core.testing.fixtures"]`` in a top-level ``conftest.py``.

* ``moto_endpoint`` (session): the endpoint of an :class:`~metaxy_core.testing.s3.S3Server` (closed after);
* ``s3``: a fresh bucket on it (:class:`~metaxy_core.testing.s3.S3Location`);
* ``closed_endpoint``: an http endpoint on 127.0.0.1 where nothing listens.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metaxy_core.testing.s3 import S3Location, S3Server, free_port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 API (moto) on 127.0.0.1 and a free port, for the whole session."""
    with S3Server() as server:
        yield server.endpoint


@pytest.fixture
def closed_endpoint() -> str:
    """An http endpoint on 127.0.0.1 where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def s3(moto_endpoint: str) -> S3Location:
    """A fresh bucket; ``s3.root`` is ``s3://<bucket>/<prefix>`` and ``s3.storage_options`` reach it."""
    return S3Location.create(moto_endpoint)
