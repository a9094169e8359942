"""Documentation that runs as written: every Python block marked ``<!-- runnable ... -->`` in README.md and
docs/ is executed in an empty folder, in a fresh interpreter, exactly as a reader would paste it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(r"<!--\s*runnable\b[^>]*-->\s*\n```python\n(?P<code>.*?)\n```", re.S)


def _snippets() -> list[tuple[str, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = doc.read_text()
        for n, match in enumerate(_BLOCK.finditer(text), start=1):
            line = text.count("\n", 0, match.start("code")) + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}#{n}", match.group("code")))
    return found


SNIPPETS = _snippets()


def test_the_readme_marks_its_example_runnable() -> None:
    assert any(name.startswith("README.md:") for name, _ in SNIPPETS), (
        "README's 'What it does' block is unmarked"
    )


@pytest.mark.parametrize(("name", "code"), SNIPPETS, ids=[name for name, _ in SNIPPETS])
def test_marked_snippet_runs_as_written(name: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(code + "\n")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
