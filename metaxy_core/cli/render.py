"""Terminal rendering: rich tables for people, JSON for machines (``--format json``)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from metaxy_core.migrations.models import MigrationResult

_STATUS_STYLE = {
    "completed": "green",
    "planned": "cyan",
    "already_applied": "dim",
    "already_done": "dim",
    "in_progress": "yellow",
    "failed": "red",
    "not_started": "white",
    "recompute_required": "magenta",
}


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[_cell(v) for v in r])
    return t


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    style = _STATUS_STYLE.get(text)
    return f"[{style}]{text}[/{style}]" if style else text


def results_table(results: list[MigrationResult], *, dry_run: bool) -> Table:
    rows = []
    for r in results:
        if not r.steps:
            rows.append([r.migration_id, "-", "-", r.status, 0, ""])
        for s in r.steps:
            rows.append([r.migration_id, s.op_id, s.feature_key, s.status, s.rows, s.note or s.error])
    title = "Plan (dry run: nothing written)" if dry_run else "Applied"
    return table(title, ["migration", "operation", "feature", "status", "rows", "note"], rows)
