"""The metaxy-dagster example: a multimodal video pipeline, its history and its migrations.

Start with ``python -m example_project.run`` (or ``bash scripts/run-example.sh`` from the repository root);
see ``docs/example-project.md``.
"""

from pathlib import Path

#: the project folder (the one holding ``metaxy.toml``)
PROJECT_DIR = Path(__file__).resolve().parent.parent
CONFIG_FILE = PROJECT_DIR / "metaxy.toml"
