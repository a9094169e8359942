from __future__ import annotations

import warnings
from collections.abc import Iterator
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
def project(tmp_path: Path) -> Iterator[Project]:
    """Snapshots v1, v2, v3 pushed, data written at v1, code at v3, migrations v1->v2 and v2->v3.

    The project's code graph is active during the test, as in a code location's process (whatever another
    test file in this worker imported into the default graph)."""
    project = make_project(tmp_path)
    with project.active():
        yield project


@pytest.fixture(scope="session")
def instance():
    """One persistent (sqlite) Dagster instance for the session; tests tell their runs apart by run id."""
    with dg.instance_for_test() as inst:
        yield inst
