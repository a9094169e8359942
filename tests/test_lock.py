"""uv.lock must match pyproject.toml: a dependency changed without refreshing the lock fails here (and in CI).

``scripts/bootstrap.sh`` installs with ``uv sync --locked``; this test says the same thing earlier and more
plainly. Refresh the lock with ``.tools/bin/uv lock``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = ROOT / ".tools" / "bin" / "uv"


def test_the_lock_file_matches_pyproject() -> None:
    if not UV.is_file():
        pytest.skip(f"{UV.relative_to(ROOT)} is missing: `bash scripts/bootstrap.sh` installs uv there")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    proc = subprocess.run(
        [str(UV), "lock", "--check", "--offline"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, (
        "uv.lock does not match pyproject.toml; refresh it with `.tools/bin/uv lock` and commit both:\n"
        + proc.stdout
        + proc.stderr
    )
