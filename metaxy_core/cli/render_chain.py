"""Renderers of the operator verbs (``init``, ``--version``, ``migrations check``, ``validate``, ``heads``,
``stamp`` and ``baseline``), registered on :func:`metaxy_core.cli.render.render` when this module is imported.

``check`` and ``validate`` print one line per problem (``<migration>: <kind>: <message>``) so a CI log or a
deploy script shows every problem, not a table cut to the terminal's width.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

from metaxy_core import commands
from metaxy_core.cli.render import render, table


@render.register
def _version(result: commands.VersionInfo, out: Console) -> None:
    libraries = ", ".join(f"{name} {version}" for name, version in result.libraries.items())
    out.print(f"metaxy-dagster {result.version} (python {result.python}; {libraries})")


@render.register
def _init(result: commands.InitResult, out: Console) -> None:
    out.print(f"wrote {escape(str(result.path))} (project {result.project!r})")
    if result.shadows is not None:
        out.print(f"  it takes precedence here over {escape(str(result.shadows))}")
    out.print("  next: list your feature modules in `entrypoints`, then run `metaxy push`")


def _problems(problems: list[commands.Problem], out: Console) -> None:
    for p in problems:
        out.print(f"[red]{escape(p.line())}[/red]")


@render.register
def _check(result: commands.CheckReport, out: Console) -> None:
    if result.ok:
        out.print(f"ok: all {result.migrations} migration(s) applied, no applied file edited")
    _problems(result.problems, out)


@render.register
def _validation(result: commands.ValidationReport, out: Console) -> None:
    if result.ok:
        pending = f"; {len(result.pending)} pending: {', '.join(result.pending)}" if result.pending else ""
        out.print(f"ok: {result.migrations} migration(s) valid{pending}")
    _problems(result.problems, out)


@render.register
def _heads(result: commands.HeadsReport, out: Console) -> None:
    if not result.heads:
        out.print("no migrations")
        return
    out.print(
        table("Heads", ["id", "status", "file"], [[h.migration_id, h.status, h.path] for h in result.heads])
    )
    if len(result.heads) > 1:
        after = f" after {result.branch_point}" if result.branch_point else ""
        fix = "join the heads with `metaxy migrations generate --merge`"
        out.print(f"[yellow]the chain forks{after}:[/yellow] {fix}")


@render.register
def _stamps(result: commands.StampReport, out: Console) -> None:
    title = "Baseline (stamped, not run)" if result.baseline else "Stamp (not run)"
    rows = [[r.migration_id, r.status, r.previous_status] for r in result.results]
    out.print(table(title, ["migration", "status", "before"], rows))
