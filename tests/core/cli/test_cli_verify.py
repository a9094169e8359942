"""`metaxy migrations verify [ID]` on a real Delta store: the Dagster check's verdict, on the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.cli.app import main
from metaxy_core.migrations import load_chain
from metaxy_core.migrations.verify import verify_migration
from metaxy_core.testing import EMBEDDINGS, seed_video_store, video_features, write_migration

PROJECT = "verify"
MID = "20250101_000000_embedding_v2"
MODULE = "verify_cli_features"
FEATURES = """
import os

from metaxy_core.testing import declare_video_features

declare_video_features(embedding=os.environ.get("EMB_VERSION", "1"))
"""


class VerifyProject:
    """A project folder whose store holds 20 samples at embedding v1 and one migration v1 -> v2."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
        self.root, self.monkeypatch, self.capsys = root, monkeypatch, capsys
        self.store = DeltaMetadataStore(str(root / ".metaxy" / "store"), project=PROJECT)
        self.v1, self.v2 = video_features(embedding="1"), video_features(embedding="2")
        seed_video_store(self.store, self.v1, [f"s{i}" for i in range(20)])
        for features in (self.v1, self.v2):
            self.store.push_snapshot(features.graph, project=PROJECT)
        write_migration(self.migrations_dir, MID, from_snapshot=self.v1.graph, to_snapshot=self.v2.graph)

    @property
    def migrations_dir(self) -> Path:
        return self.root / ".metaxy" / "migrations"

    def run(self, *args: str) -> tuple[int, str, str]:
        """`metaxy ARGS` with the v2 code and a fresh feature graph, as a new process would."""
        self.monkeypatch.setenv("EMB_VERSION", "2")
        sys.modules.pop(MODULE, None)
        with FeatureGraph().use():
            code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, " ".join(err.split())

    def verify_json(self, *args: str) -> tuple[int, dict]:
        code, out, _ = self.run("migrations", "verify", *args, "--format", "json")
        return code, json.loads(out)


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[VerifyProject]:
    (tmp_path / "metaxy.toml").write_text(f'project = "{PROJECT}"\nentrypoints = ["{MODULE}"]\n')
    (tmp_path / f"{MODULE}.py").write_text(FEATURES)
    monkeypatch.chdir(tmp_path)
    yield VerifyProject(tmp_path, monkeypatch, capsys)
    sys.modules.pop(MODULE, None)


def test_a_pending_migration_fails_verification_with_the_fix(project: VerifyProject) -> None:
    code, report = project.verify_json()
    assert code == 1
    assert report["passed"] is False
    [verification] = report["migrations"]
    assert verification["migration_id"] == MID
    assert verification["status"] == "not_started" and verification["passed"] is False
    assert f"run `metaxy migrations apply {MID}`" in verification["description"]

    code, _, err = project.run("migrations", "verify")
    assert code == 1
    assert f"FAILED: 1 migration(s) failed verification: {MID}" in err


def test_an_applied_migration_passes_verification(project: VerifyProject) -> None:
    assert project.run("migrations", "apply")[0] == 0

    code, report = project.verify_json()
    assert code == 0
    assert report == {
        "passed": True,
        "migrations": [
            {
                "migration_id": MID,
                "status": "completed",
                "passed": True,
                "description": (
                    f"migration {MID} is applied; 1 affected feature(s) have no samples left at the old "
                    "version that could be carried over"
                ),
                "checked_features": [EMBEDDINGS],
                "left_at_old_version": {},
                "needs_recompute": {},
            }
        ],
    }
    code, out, _ = project.run("migrations", "verify", MID)
    assert code == 0
    assert "Migration verification" in out and "passed" in out


def test_rows_written_at_the_old_version_after_the_apply_fail_verification(project: VerifyProject) -> None:
    assert project.run("migrations", "apply")[0] == 0
    # A pipeline still running the old code writes 5 new samples at embedding v1 after the migration.
    seed_video_store(project.store, project.v1, [f"late{i}" for i in range(5)])

    code, report = project.verify_json(MID)
    assert code == 1
    [verification] = report["migrations"]
    assert verification["status"] == "completed" and verification["passed"] is False
    assert verification["left_at_old_version"] == {EMBEDDINGS: 5}
    assert "roll the migration back and apply it again" in verification["description"]

    # The verdict is the one the Dagster "verified" check computes (both call verify_migration).
    with project.v2.graph.use():
        [migration] = load_chain(project.migrations_dir)
    expected = verify_migration(project.store, migration, graph=project.v2.graph)
    assert verification == json.loads(json.dumps(expected.as_dict()))


def test_an_unknown_migration_id_is_an_error_naming_it(project: VerifyProject) -> None:
    code, _, err = project.run("migrations", "verify", "20990101_000000_nope")
    assert code == 1
    assert "FAILED: migration 20990101_000000_nope not found" in err


def test_a_project_without_migrations_passes(project: VerifyProject) -> None:
    (project.migrations_dir / f"{MID}.yaml").unlink()
    code, report = project.verify_json()
    assert code == 0 and report == {"passed": True, "migrations": []}
    code, out, _ = project.run("migrations", "verify")
    assert code == 0 and "no migrations to verify" in out
