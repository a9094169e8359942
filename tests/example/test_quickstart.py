"""The README's quick start, followed literally on a fresh clone of this repository's HEAD.

Slow (it builds a virtual environment and installs the package from the package index; pip's cache may be
reused): marked ``slow``, and run in CI by ``scripts/run-tests.sh``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _quick_start_commands(readme: str) -> list[str]:
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S)
    assert block, "README.md has no code block under '## Quick start'"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def _clean_env() -> dict[str, str]:
    """The caller's environment without this checkout's virtual environment (the clone must build its own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    for name in list(env):
        if name.startswith(("METAXY_", "AWS_", "DAGSTER_")) or name == "DATABASE_URL":
            env.pop(name)
    return env


@pytest.fixture
def clone_parent() -> Iterator[Path]:
    """A folder outside pytest's base temp: run as root, pgserver starts PostgreSQL as the `pgserver` user,
    which must traverse to the clone's .venv, and concurrent pytest sessions reset /tmp/pytest-of-<user>
    to mode 0700."""
    path = Path(tempfile.mkdtemp(prefix="metaxy-quickstart-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_readme_quick_start_runs_the_example_on_a_fresh_clone(clone_parent: Path) -> None:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
    clone = clone_parent / "metaxy-dagster"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    cloned = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    )
    # HEAD of this checkout at clone time (others may commit meanwhile: the clone is at least that recent)
    ancestor = ["git", "merge-base", "--is-ancestor", head.stdout.strip(), cloned.stdout.strip()]
    assert subprocess.run(ancestor, cwd=REPO).returncode == 0
    assert not (clone / ".venv").exists()

    first = _quick_start_commands((clone / "README.md").read_text())[0]
    assert first == "bash scripts/run-example.sh"
    started = time.perf_counter()
    result = subprocess.run(
        first, shell=True, cwd=clone, env=_clean_env(), capture_output=True, text=True, timeout=900
    )
    duration = time.perf_counter() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert (clone / ".venv" / "bin" / "python").exists()  # its own environment, not this checkout's
    assert "nothing written: every Delta table version unchanged" in result.stdout
    assert "checks (no feature left at its old version): 5/5 passed" in result.stdout
    assert "nothing left to recompute" in result.stdout
    assert (clone / "example_project" / ".metaxy" / "store" / "video__raw").is_dir()
    print(f"quick start on a fresh clone: {duration:.0f}s")
