"""The `metaxy` command line, run in process against a project folder with a real Delta store."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from metaxy_core import FeatureGraph, MetaxyConfig
from metaxy_core.cli.app import main

FEATURES = """
import os

from metaxy_core.testing import declare_video_features

declare_video_features(embedding=os.environ.get("EMB_VERSION", "1"))
"""


class Project:
    def __init__(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.root, self.monkeypatch, self.capsys = root, monkeypatch, capsys

    def run(self, *args: str, emb: str = "1") -> tuple[int, str, str]:
        """Run `metaxy ARGS` with a fresh feature graph, as a new process would."""
        self.monkeypatch.setenv("EMB_VERSION", emb)
        sys.modules.pop("cli_features", None)
        with FeatureGraph().use():
            code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def seed(self) -> None:
        sys.modules.pop("cli_features", None)
        config = MetaxyConfig.load(self.root / "metaxy.toml")
        with FeatureGraph().use():
            graph = config.load_features()
            store = config.get_store()
            raw = pl.DataFrame({"sample_uid": [f"s{i}" for i in range(50)]}).with_columns(
                metaxy_provenance_by_field=pl.struct(
                    frames=pl.col("sample_uid") + "f", audio=pl.col("sample_uid") + "a"
                )
            )
            store.write_metadata("video/raw", raw)
            store.write_metadata(
                "video/embeddings", store.resolve_update("video/embeddings").added.with_columns(dim=pl.lit(3))
            )
            assert graph.snapshot_version


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Project]:
    (tmp_path / "metaxy.toml").write_text('project = "cli"\nentrypoints = ["cli_features"]\n')
    (tmp_path / "cli_features.py").write_text(FEATURES)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")  # the config is found by walking up
    yield Project(tmp_path, monkeypatch, capsys)
    sys.modules.pop("cli_features", None)


def test_push_is_idempotent_and_snapshot_reports_it(project: Project) -> None:
    code, out, _ = project.run("push")
    assert code == 0 and "pushed snapshot" in out
    code, out, _ = project.run("push")
    assert code == 0 and "already the latest pushed one" in out
    code, out, _ = project.run("snapshot", "--format", "json")
    info = json.loads(out)
    assert (
        info["pushed"] is True and info["current_snapshot_version"] == info["latest_pushed_snapshot_version"]
    )


def test_graph_lists_fields_with_versions_as_json(project: Project) -> None:
    code, out, _ = project.run("graph", "--format", "json")
    rows = json.loads(out)
    assert code == 0
    assert [r["feature"] for r in rows] == ["video/raw", "video/embeddings"]
    assert rows[1]["fields"][0]["deps"] == ["video/raw:frames"]


def test_generate_after_push_still_finds_the_change_and_apply_reconciles(project: Project) -> None:
    project.seed()
    assert project.run("push")[0] == 0
    assert project.run("push", emb="2")[0] == 0  # the new code was deployed and pushed first
    code, out, _ = project.run("migrations", "generate", "--name", "clip v2", emb="2")
    assert code == 0, out
    [path] = (project.root / ".metaxy" / "migrations").glob("*_clip_v2.yaml")
    assert "video/embeddings" in out

    code, out, _ = project.run("migrations", "apply", "--dry-run", "--format", "json", emb="2")
    plan = json.loads(out)
    assert code == 0 and plan[0]["status"] == "planned" and plan[0]["steps"][0]["rows"] == 50
    code, out, _ = project.run("migrations", "status", "--format", "json", emb="2")
    assert json.loads(out)[0]["status"] == "not_started"

    code, out, _ = project.run("migrations", "apply", emb="2")
    assert code == 0 and "completed" in out
    code, out, _ = project.run("migrations", "apply", emb="2")
    assert code == 0 and "nothing to apply" in out
    code, out, _ = project.run("migrations", "explain", path.stem, "--format", "json", emb="2")
    info = json.loads(out)
    assert info["affected_features"] == ["video/embeddings"] and info["status"]["status"] == "completed"
    code, out, _ = project.run("migrations", "history", "--format", "json", emb="2")
    assert [e["status"] for e in json.loads(out)] == ["started", "completed", "completed"]

    code, out, _ = project.run("migrations", "rollback", "--format", "json", emb="2")
    assert code == 0 and json.loads(out)[0]["features"][0]["hidden"] == 50
    code, out, _ = project.run("migrations", "status", "--format", "json", emb="2")
    assert json.loads(out)[0]["status"] == "not_started"


def test_generate_without_any_pushed_snapshot_fails_with_the_fix(project: Project) -> None:
    code, _, err = project.run("migrations", "generate")
    assert code == 1
    assert "FAILED:" in err and "run `metaxy push`" in err


def test_status_exits_non_zero_on_a_broken_chain_naming_the_file(project: Project) -> None:
    migrations = project.root / ".metaxy" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "20250101_000000_a.yaml").write_text(
        textwrap.dedent(
            """\
            parent: 20241231_000000_gone
            created_at: "2025-01-01T00:00:00+00:00"
            from_snapshot_version: a
            to_snapshot_version: b
            """
        )
    )
    code, _, err = project.run("migrations", "status")
    assert code == 1
    assert "20250101_000000_a.yaml: parent 20241231_000000_gone does not exist" in " ".join(err.split())


def test_a_failing_dry_run_exits_non_zero(project: Project) -> None:
    project.seed()
    migrations = project.root / ".metaxy" / "migrations"
    migrations.mkdir(parents=True)
    (migrations / "20250101_000000_a.yaml").write_text(
        textwrap.dedent(
            """\
            parent: initial
            created_at: "2025-01-01T00:00:00+00:00"
            from_snapshot_version: "0000000000000000"
            to_snapshot_version: "1111111111111111"
            ops:
              - type: metaxy_core.migrations.ops.DataVersionReconciliation
            """
        )
    )
    code, _, err = project.run("migrations", "apply", "--dry-run")
    assert code == 1
    message = " ".join(err.split())
    assert "20250101_000000_a.yaml: snapshot 1111111111111111 was never pushed" in message
    assert "run `metaxy push`" in message


def test_unlock_without_a_lock_says_so(project: Project) -> None:
    code, out, _ = project.run("migrations", "unlock")
    assert code == 0 and "not locked" in out


def test_unknown_verb_is_a_usage_error(project: Project) -> None:
    with pytest.raises(SystemExit) as exc:
        project.run("migrations", "upgrade")
    assert exc.value.code == 2
