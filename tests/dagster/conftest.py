from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg
import pytest
from metaxy_dg_testkit import Project, make_project

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _quiet_dagster_preview_warnings() -> None:
    """Dagster's beta/preview notices about its own APIs (pytest restores the filters after each test)."""
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """Snapshots v1, v2, v3 pushed, data written at v1, code at v3, migrations v1->v2 and v2->v3."""
    return make_project(tmp_path)


@pytest.fixture(scope="session")
def instance():
    """One persistent (sqlite) Dagster instance for the session; tests tell their runs apart by run id."""
    with dg.instance_for_test() as inst:
        yield inst
