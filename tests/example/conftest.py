"""Fixtures for the example project's tests: real local servers (moto S3, pgserver PostgreSQL), seeded once
per session, and a freshly seeded Delta store per test.

The repository's root ``conftest.py`` clears ``AWS_*`` / ``METAXY_*`` before every test, so
:func:`example_env` exports the servers' settings again for each test, exactly as production would set them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The example's package lives in example_project/ (not installed): make it importable before anything else.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "example_project"))

import pytest  # noqa: E402
from example_project.servers import LocalServers, local_servers  # noqa: E402
from example_testkit import EXAMPLE_GRAPH, N_TEST  # noqa: E402

from example_project import CONFIG_FILE, generate  # noqa: E402
from metaxy_core import DeltaMetadataStore, FeatureGraph, MetaxyConfig  # noqa: E402
from metaxy_core.migrations import MigrationChain, load_chain  # noqa: E402


@pytest.fixture(autouse=True)
def _example_graph_active() -> Iterator[FeatureGraph]:
    """The example's graph is the active one, whatever another test left active."""
    with EXAMPLE_GRAPH.use():
        yield EXAMPLE_GRAPH


@pytest.fixture(scope="session")
def servers() -> Iterator[LocalServers]:
    """S3 (moto) and PostgreSQL (pgserver) on 127.0.0.1, seeded with the example's objects and labels."""
    with local_servers(export=False) as running:
        generate.seed_s3(running.s3.client(), n_samples=N_TEST, direct_put=running.s3.direct_put())
        generate.seed_postgres(running.postgres.uri, n_samples=N_TEST)
        yield running


@pytest.fixture
def example_env(servers: LocalServers, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in servers.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EXAMPLE_ENV", raising=False)
    return servers.env


@dataclass
class SeededExample:
    config: MetaxyConfig
    store: DeltaMetadataStore
    chain: MigrationChain
    report: generate.SeedReport


@pytest.fixture
def seeded(example_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SeededExample:
    """The example's configuration with its store in ``tmp_path``, seeded by the old pipeline and deployed."""
    monkeypatch.setenv("METAXY_STORE_ROOT", str(tmp_path / "store"))
    config = MetaxyConfig.load(CONFIG_FILE)
    store = config.get_store()
    report = generate.seed_store(store, n_samples=N_TEST, current_graph=EXAMPLE_GRAPH)
    return SeededExample(config=config, store=store, chain=load_chain(config.migrations_path), report=report)
