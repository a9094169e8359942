"""Test kit of the operator-verb tests (their ``cli`` fixture is in ``conftest.py``): a project folder with
``metaxy.toml``, a features module whose embedding code version comes from ``EMB_VERSION``, and a real Delta
store holding 20 samples at v1 with snapshots v1..v3 pushed.

``run`` calls the CLI in this process (fast); ``spawn`` runs it as users do, in a child process whose stdin,
stdout and stderr are pipes (or a pseudo-terminal, see ``test_cli_terminal.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import metaxy_core
from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.cli.app import main
from metaxy_core.testing import VideoFeatures, seed_video_store, video_features, write_migration

PROJECT = "ops"
MODULE = "cliop_features"
#: the folder holding metaxy_core: child processes import this checkout, whatever is installed
CODE_ROOT = str(Path(metaxy_core.__file__).resolve().parents[1])
FEATURES = """
import os

from metaxy_core.testing import declare_video_features

declare_video_features(embedding=os.environ.get("EMB_VERSION", "1"), prefix=os.environ.get("PREFIX", "video"))
"""
M1, M2, M3 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3", "20250103_000000_emb_v3_to_v4"


class CliProject:
    def __init__(
        self, root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.root, self.monkeypatch, self.capsys = root, monkeypatch, capsys
        self.store = DeltaMetadataStore(str(root / ".metaxy" / "store"), project=PROJECT)
        self.versions: dict[int, VideoFeatures] = {v: video_features(embedding=str(v)) for v in (1, 2, 3, 4)}

    @property
    def migrations_dir(self) -> Path:
        return self.root / ".metaxy" / "migrations"

    def seed(self, samples: int = 20, pushed: tuple[int, ...] = (1, 2, 3)) -> CliProject:
        seed_video_store(self.store, self.versions[1], [f"s{i}" for i in range(samples)])
        for v in pushed:
            self.store.push_snapshot(self.versions[v].graph, project=PROJECT)
        return self

    def migration(self, migration_id: str, parent: str | list[str], start: int, **kwargs: Any) -> Path:
        """A reconciliation from embedding ``start`` to ``start + 1`` (or what ``write_migration`` takes)."""
        kwargs.setdefault("from_snapshot", self.versions[start].graph)
        kwargs.setdefault("to_snapshot", self.versions[start + 1].graph)
        return write_migration(self.migrations_dir, migration_id, parent=parent, **kwargs)

    def chain(self, count: int = 2) -> CliProject:
        ids = [M1, M2, M3][:count]
        for i, mid in enumerate(ids):
            self.migration(mid, ids[i - 1] if i else "initial", i + 1)
        return self

    def run(self, *args: str, emb: int = 3) -> tuple[int, str, str]:
        """``metaxy ARGS`` in this process with the code at embedding ``emb`` and a fresh feature graph."""
        self.monkeypatch.setenv("EMB_VERSION", str(emb))
        sys.modules.pop(MODULE, None)
        with FeatureGraph().use():
            code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def spawn(
        self, *args: str, emb: int = 3, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``metaxy ARGS`` in a child process, stdin/stdout/stderr pipes (not terminals)."""
        return subprocess.run(
            [sys.executable, "-m", "metaxy_core.cli.app", *args],
            cwd=self.root,
            env=child_env(emb, env),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def state(self, migration_id: str) -> str:
        code, out, _ = self.run("migrations", "status", "--format", "json")
        assert code == 0, out
        return next(r["status"] for r in json_rows(out) if r["migration_id"] == migration_id)


def child_env(emb: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAXY_", "COLUMNS", "NO_COLOR"))}
    env.update({"EMB_VERSION": str(emb), "PYTHONPATH": CODE_ROOT, "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def json_rows(out: str) -> list[dict[str, Any]]:
    return json.loads(out)


def make_cli_project(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> CliProject:
    """A project folder in ``root`` (created), the working directory for the test."""
    root.mkdir()
    (root / "metaxy.toml").write_text(f'project = "{PROJECT}"\nentrypoints = ["{MODULE}"]\n')
    (root / f"{MODULE}.py").write_text(FEATURES)
    monkeypatch.chdir(root)
    for name in ("METAXY_CONFIG", "METAXY_STORE_ROOT", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    return CliProject(root, monkeypatch, capsys)
