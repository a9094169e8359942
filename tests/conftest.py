"""Shared fixtures: an isolated environment, a fresh feature graph, a local store and a real S3 (moto) server.

No mocks: the S3 fixtures (``moto_endpoint``, ``s3``, ``closed_endpoint`` from
:mod:`metaxy_core.testing.fixtures`) run moto's real S3 HTTP API on 127.0.0.1 and the stores write real Delta
tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from metaxy_core import DeltaMetadataStore, FeatureGraph

pytest_plugins = ["metaxy_core.testing.fixtures"]


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
