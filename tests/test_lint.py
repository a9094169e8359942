"""``ruff check`` and ``ruff format --check`` over the repository, so that CI's one test command runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")  # installed with the test extras, next to this interpreter


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    if not RUFF.is_file():
        pytest.fail(f"{RUFF} is missing: install the test extras (`bash scripts/bootstrap.sh`)")
    return subprocess.run(
        [str(RUFF), *args, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_ruff_check_passes() -> None:
    proc = ruff("check", "--output-format", "concise")
    assert proc.returncode == 0, (
        f"`ruff check .` found problems (fix them or run `ruff check --fix .`):\n{proc.stdout}{proc.stderr}"
    )


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    proc = ruff("format", "--check")
    assert proc.returncode == 0, (
        f"`ruff format --check .` would reformat (run `ruff format .`):\n{proc.stdout}{proc.stderr}"
    )
