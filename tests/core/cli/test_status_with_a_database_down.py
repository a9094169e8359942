"""A migration whose validator checks a real PostgreSQL (pgserver) at load time, as Metaxy's documented
validation example does: while the database is down, ``metaxy migrations status`` still lists the whole
chain, with that one row in error, and exits 1."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metaxy_core.testing import video_graph
from metaxy_core.testing.project import ProjectDir

FEATURES = """
from metaxy_core.testing import declare_video_features

declare_video_features()
"""

CHECKED = """
import os
from datetime import datetime, timezone

import psycopg
from pydantic import model_validator

from metaxy_core.migrations import CustomMigration


class AnnotationsFromPostgres(CustomMigration):
    migration_id: str = "20250502_000000_annotations"
    created_at: datetime = datetime(2025, 5, 2, tzinfo=timezone.utc)
    parent: str = "20250501_000000_first"
    database_url: str = os.environ.get("MX_DATABASE_URL", "")

    @model_validator(mode="after")
    def validate_database_connectivity(self):
        try:
            with psycopg.connect(self.database_url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except Exception as e:
            raise ValueError(f"Failed to connect to database: {e}. Check database_url.") from e
        return self

    def get_affected_features(self, store, project):
        return []

    def execute(self, store, project, *, dry_run=False):
        return 0
"""

YAML = """
migration_id: "{mid}"
created_at: "2025-05-01T00:00:00+00:00"
parent: {parent}
kind: full_graph
snapshot_version: "{snapshot}"
ops: []
"""


@pytest.fixture
def postgres() -> Iterator[Any]:
    """A real PostgreSQL 16 (pgserver) in a folder outside pytest's temp (run as root, pgserver starts it as
    the `pgserver` user, which must reach its data folder)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    parent = Path(tempfile.mkdtemp(prefix="metaxy-status-pg-"))
    parent.chmod(0o755)
    server = pgserver.get_server(parent / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        try:
            server.cleanup()
        except Exception:  # noqa: BLE001 - stopped by the test already
            pass
        shutil.rmtree(parent, ignore_errors=True)


def test_status_lists_the_whole_chain_while_one_validator_cannot_reach_its_database(
    tmp_path: Path, postgres: Any
) -> None:
    project = ProjectDir(tmp_path / "demo", modules={"mx_pg_features": FEATURES})
    snapshot = video_graph().snapshot_version
    project.migration(
        "20250501_000000_first.yaml",
        YAML.format(mid="20250501_000000_first", parent="initial", snapshot=snapshot),
    )
    checked = project.migration("20250502_000000_annotations.py", CHECKED)
    project.migration(
        "20250503_000000_last.yaml",
        YAML.format(mid="20250503_000000_last", parent='"20250502_000000_annotations"', snapshot=snapshot),
    )
    env = {"MX_DATABASE_URL": postgres.get_uri()}
    applied = project.run("migrations", "apply", env=env)
    assert applied.code == 0, applied.err
    up = json.loads(project.run("migrations", "status", "--format", "json", env=env).out)
    assert [r["status"] for r in up] == ["completed"] * 3

    postgres.cleanup()  # the database goes down
    down = project.run("migrations", "status", "--format", "json", env=env)
    rows = json.loads(down.out)
    assert [(r["migration_id"], r["status"]) for r in rows] == [
        ("20250501_000000_first", "completed"),
        ("20250502_000000_annotations", "completed"),  # what the log says, still readable
        ("20250503_000000_last", "completed"),
    ]
    assert rows[0]["load_error"] == "" and rows[2]["load_error"] == ""
    assert "Failed to connect to database" in rows[1]["load_error"]
    assert "validator validate_database_connectivity" in rows[1]["load_error"]
    assert down.code == 1
    [line] = down.failed_lines
    assert str(checked) in line and "cannot be loaded" in line

    wide = {**env, "COLUMNS": "1000"}  # the people's view (one line per row): every row, the error shown
    table = project.run("migrations", "status", env=wide)
    lines = [line for line in table.out.splitlines() if "2025050" in line]
    assert table.code == 1 and len(lines) == 3
    assert "cannot be loaded:" in lines[1] and "Failed to connect to database" in lines[1]
