"""Fixtures of the CLI tests: ``cli`` is a project folder with a real Delta store (see ``cli_testkit.py``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_testkit import MODULE, CliProject, make_cli_project


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[CliProject]:
    yield make_cli_project(tmp_path / "proj", monkeypatch, capsys)
    sys.modules.pop(MODULE, None)
