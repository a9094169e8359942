"""Terminal rendering: one renderer per result type for people, one JSON encoder for machines.

:func:`show` prints a result of :mod:`metaxy_core.commands` as ``--format`` asks: ``json`` is the result's
``as_dict()`` (or its ``model_dump`` / dataclass fields) through :func:`emit_json`; ``table`` is the renderer
registered for the result's type.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from enum import Enum
from functools import singledispatch
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from metaxy_core import commands
from metaxy_core.migrations.generator import GeneratedMigration
from metaxy_core.migrations.import016 import Import016Report
from metaxy_core.migrations.results import (
    MigrationResult,
    MigrationStatus,
    RunStatus,
    StepStatus,
)
from metaxy_core.store.system import PushResult

_STATUS_STYLE = {
    RunStatus.COMPLETED: "green",
    RunStatus.PLANNED: "cyan",
    RunStatus.ALREADY_APPLIED: "dim",
    StepStatus.ALREADY_DONE: "dim",
    MigrationStatus.IN_PROGRESS: "yellow",
    MigrationStatus.ROLLING_BACK: "red",
    RunStatus.FAILED: "red",
    MigrationStatus.NOT_STARTED: "white",
    StepStatus.RECOMPUTE_REQUIRED: "magenta",
}


#: the width of piped output: wide enough that no table cell is cut or folded (full ids and feature keys for
#: grep and scripts); rich would otherwise assume 80 columns whenever the output is not a terminal
PIPED_WIDTH = 100_000


def console(stderr: bool = False) -> Console:
    """stdout (or stderr) for the CLI: colours only on a terminal and never with ``NO_COLOR`` set (rich reads
    it), tables at their full width when piped."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out = Console(stderr=stderr, highlight=False, soft_wrap=True, width=PIPED_WIDTH)
    return out


# ------------------------------------------------------------------------- JSON
def _jsonable(value: Any) -> Any:
    """What ``json`` cannot encode by itself, as plain data."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def emit_json(data: Any) -> None:
    """Print ``data`` (a result, or plain data) as indented JSON on stdout: the one JSON encoder."""
    if hasattr(data, "as_dict"):
        data = data.as_dict()
    sys.stdout.write(json.dumps(data, indent=2, default=_jsonable) + "\n")


# ------------------------------------------------------------------------ tables
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
    style = _STATUS_STYLE.get(text)  # type: ignore[call-overload]
    return f"[{style}]{text}[/{style}]" if style else text


def show(result: Any, out: Console, *, as_json: bool) -> None:
    """Print ``result`` as JSON or with the renderer of its type."""
    if as_json:
        emit_json(result)
    else:
        render(result, out)


@singledispatch
def render(result: Any, out: Console) -> None:
    raise TypeError(f"no renderer for {type(result).__name__}")


@render.register
def _push(result: PushResult, out: Console) -> None:
    if result.already_pushed:
        out.print(f"snapshot {result.snapshot_version} is already the latest pushed one; nothing to do")
    else:
        out.print(
            f"pushed snapshot {result.snapshot_version} (previous: {result.previous_version or 'none'})"
        )
    for path in getattr(result, "snapshot_files", ()):  # commit them with the migrations
        out.print(f"wrote snapshot file {path}")


@render.register
def _graph(result: commands.GraphInfo, out: Console) -> None:
    body = [
        [r.feature, r.feature_version, f.field, f.code_version, f.version, ", ".join(f.deps)]
        for r in result.features
        for f in r.fields
    ]
    columns = ["feature", "feature version", "field", "code", "field version", "depends on"]
    out.print(table(f"Feature graph ({result.snapshot_version})", columns, body))


@render.register
def _snapshot(result: commands.SnapshotInfo, out: Console) -> None:
    out.print(f"current snapshot:     {result.current_snapshot_version}")
    out.print(f"latest pushed:        {result.latest_pushed_snapshot_version or 'none (run `metaxy push`)'}")


@render.register
def _maintenance(result: commands.MaintenanceReport, out: Console) -> None:
    out.print(
        table(
            "Store maintenance" + (" (dry run)" if result.dry_run else ""),
            ["table", "action", "files before", "files after", "files removed", "seconds"],
            [
                [r.table, r.action, r.files_before, r.files_after, r.files_removed, f"{r.seconds:.2f}"]
                for r in result.tables
            ],
        )
    )


@render.register
def _listing(result: commands.ChainListing, out: Console) -> None:
    rows = [[m.migration_id, m.kind, parents_text(m.parent), m.path] for m in result.migrations]
    out.print(table("Migrations", ["id", "kind", "parent", "file"], rows))


def parents_text(parent: str | list[str]) -> str:
    """A migration's parent as a table cell: ``a``, or ``merge of a, b`` for a merge migration."""
    return parent if isinstance(parent, str) else f"merge of {', '.join(parent)}"


@render.register
def _status(result: commands.StatusReport, out: Console) -> None:
    if not result.migrations:
        out.print(f"no migrations in {result.migrations_dir}")
        return
    rows = [
        [
            r.migration_id,
            r.kind,
            r.status,
            r.steps_done,
            r.rows,
            ("file edited since apply! " if r.edited else "")
            + ("stamped (not run) " if r.stamped else "")
            + ("" if isinstance(r.parent, str) else f"{parents_text(r.parent)} ")
            + r.error
            + (f"cannot be loaded: {r.load_error}" if r.load_error else ""),
        ]
        for r in result.migrations
    ]
    out.print(table("Migration status", ["id", "kind", "status", "steps done", "rows", "note"], rows))


@render.register
def _apply(result: commands.ApplyReport, out: Console) -> None:
    if not result.results:
        out.print("nothing to apply: every migration is completed")
        return
    out.print(results_table(result.results, dry_run=result.dry_run))
    if result.recompute_required:
        out.print(f"[magenta]recompute with the pipeline:[/magenta] {', '.join(result.recompute_required)}")


def results_table(results: list[MigrationResult], *, dry_run: bool) -> Table:
    rows = []
    for r in results:
        if not r.steps:
            rows.append([r.migration_id, "-", "-", r.status, 0, ""])
        for s in r.steps:
            rows.append([r.migration_id, s.op_id, s.feature_key, s.status, s.rows, s.note or s.error])
    title = "Plan (dry run: nothing written)" if dry_run else "Applied"
    return table(title, ["migration", "operation", "feature", "status", "rows", "note"], rows)


@render.register
def _generated(result: GeneratedMigration, out: Console) -> None:
    out.print(f"wrote {result.path}")
    out.print(f"  affected: {', '.join(map(str, result.affected))}")
    if result.recompute:
        out.print(f"  root features to recompute with the pipeline: {', '.join(map(str, result.recompute))}")


@render.register
def _explanation(result: commands.MigrationExplanation, out: Console) -> None:
    info = result.as_dict()
    for k in (
        "migration_id",
        "kind",
        "path",
        "parent",
        "description",
        "from_snapshot_version",
        "to_snapshot_version",
        "checksum",
    ):
        if info.get(k):
            out.print(f"{k + ':':24}{info[k]}")
    operations = ", ".join(f"{o['id']} ({o['type']})" for o in result.operations)
    out.print(f"{'operations:':24}{operations}")
    affected = ", ".join(result.affected_features) or result.affected_error or "-"
    out.print(f"{'affected features:':24}{affected}")
    st = result.status
    out.print(f"{'status:':24}{st.status} ({st.steps_done} steps done, {st.rows} rows)")


@render.register
def _history(result: commands.MigrationHistory, out: Console) -> None:
    rows = [
        [e.at, e.migration_id, e.op_id or "-", e.feature_key or "-", e.status, e.rows, e.run_id]
        for e in result.events
    ]
    out.print(table("Migration log", ["at", "migration", "op", "feature", "status", "rows", "run"], rows))


@render.register
def _verification(result: commands.VerificationReport, out: Console) -> None:
    if not result.migrations:
        out.print("no migrations to verify")
        return
    rows = [
        [
            v.migration_id,
            v.status,
            "passed" if v.passed else "FAILED",
            ", ".join(f"{k}: {n}" for k, n in v.left_at_old_version.items()) or "-",
            ", ".join(f"{k}: {n}" for k, n in v.needs_recompute.items()) or "-",
        ]
        for v in result.migrations
    ]
    columns = ["migration", "status", "verified", "left at old version", "to recompute"]
    out.print(table("Migration verification", columns, rows))
    for v in result.failed:
        out.print(f"[red]{v.migration_id}:[/red] {v.description}")


@render.register
def _rollback(result: commands.RollbackReport, out: Console) -> None:
    if not result.results:
        out.print("nothing to roll back: no migration is applied")
        return
    title = "Rollback plan (dry run: nothing written)" if result.dry_run else "Rolled back"
    rows = [
        [r.migration_id, r.status, f.feature_key, f.hidden, f.restored]
        for r in result.results
        for f in r.features
    ] + [[r.migration_id, r.status, "-", 0, 0] for r in result.results if not r.features]
    out.print(table(title, ["migration", "status", "feature", "rows hidden", "rows restored"], rows))


@render.register
def _unlock(result: commands.UnlockResult, out: Console) -> None:
    lease = result.released
    if lease is None:
        out.print("the store was not locked")
    else:
        out.print(f"released the lock held by run {lease.owner} ({lease.host}, pid {lease.pid})")


@render.register
def _imported_016(result: Import016Report, out: Console) -> None:
    out.print(
        table(
            f"Metaxy 0.1.6 snapshots of {result.project} (from {result.source})",
            ["0.1.6 id", "snapshot version", "pushed now"],
            [[theirs, ours, ours in result.pushed] for theirs, ours in result.snapshots.items()],
        )
    )
    out.print(
        table(
            "Rows carried over",
            ["feature", "rows", "already there"],
            [[f, n, result.skipped.get(f, 0)] for f, n in result.rows.items()],
        )
    )
    out.print(f"snapshot ids mapped in {result.ids_file}; commit it with the migrations, then apply them")
