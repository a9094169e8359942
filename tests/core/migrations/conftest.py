"""Fixtures for the migrations-engine tests: a real Delta store in ``tmp_path`` and a migrations folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "migrations"
if str(FIXTURES) not in sys.path:  # helper modules, also importable by spawned children and YAML `type:`
    sys.path.insert(0, str(FIXTURES))

import mxtest_support as s  # noqa: E402

from metaxy_core import DeltaMetadataStore  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> DeltaMetadataStore:
    return DeltaMetadataStore(tmp_path / "store", project=s.PROJECT)


@pytest.fixture
def mig_dir(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path
