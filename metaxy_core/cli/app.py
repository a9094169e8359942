"""The ``metaxy`` command line: parse, call :mod:`metaxy_core.commands`, render, map errors to exit codes.

Exit codes: 0 success, 1 a :class:`MetaxyError` (printed as ``FAILED: ...``) or a migration that fails
verification, 2 usage errors. ``--raiseerr`` shows the traceback instead. A verb's help is the first line of
its command's docstring.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.markup import escape

from metaxy_core import commands
from metaxy_core.cli import render
from metaxy_core.errors import MetaxyError, redact
from metaxy_core.migrations.results import MigrationFailed, StepResult


def _common(defaults: bool) -> argparse.ArgumentParser:
    """Global options, accepted before or after the verb (``metaxy migrations status --format json``)."""
    p = argparse.ArgumentParser(add_help=False)
    d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
    p.add_argument(
        "--config", default=d(None), help="metaxy.toml or pyproject.toml to use (default: walk up)"
    )
    p.add_argument("--format", choices=["table", "json"], default=d("table"), help="output format")
    p.add_argument(
        "--raiseerr", action="store_true", default=d(False), help="show the full traceback on errors"
    )
    p.add_argument("-v", "--verbose", action="store_true", default=d(False), help="log every step")
    return p


def _help(command: Callable[..., Any]) -> str:
    """The first line of ``command``'s docstring, as argparse help (``Apply ...`` -> ``apply ...``)."""
    line = (command.__doc__ or "").strip().split("\n")[0].rstrip(".")
    return line[:1].lower() + line[1:]


def _parser() -> argparse.ArgumentParser:
    common = _common(defaults=False)
    p = argparse.ArgumentParser(
        prog="metaxy",
        description="Versioned metadata and migrations for ML pipelines.",
        parents=[_common(defaults=True)],
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add(group, name: str, command: Callable[..., Any] | None = None, **kw):  # type: ignore[no-untyped-def]
        if command is not None:
            kw["help"] = _help(command)
        return group.add_parser(name, parents=[common], **kw)

    add(sub, "push", commands.push)
    add(sub, "graph", commands.graph_info)
    add(sub, "snapshot", commands.snapshot_info)
    store = add(sub, "store", help="store maintenance").add_subparsers(dest="verb", required=True)
    maintain = add(store, "maintain", commands.store_maintain)
    maintain.add_argument(
        "--vacuum-hours", type=float, metavar="N", help="vacuum files unreferenced for N hours"
    )
    maintain.add_argument(
        "--dry-run", action="store_true", help="change nothing: show file counts, files to vacuum"
    )

    mig = add(sub, "migrations", help="inspect and run migrations").add_subparsers(dest="verb", required=True)
    add(mig, "status", commands.migrations_status)
    add(mig, "list", commands.migrations_list)
    apply = add(mig, "apply", commands.migrations_apply)
    apply.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
    apply.add_argument("--dry-run", action="store_true", help="plan only: write nothing, show rows per step")
    apply.add_argument("--force", action="store_true", help="continue a migration whose file was edited")
    gen = add(mig, "generate", commands.migrations_generate)
    gen.add_argument("--name", help="description used in the file name")
    explain = add(mig, "explain", commands.migrations_explain)
    explain.add_argument("migration_id", metavar="MIGRATION_ID")
    history = add(mig, "history", commands.migrations_history)
    history.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
    verify = add(mig, "verify", commands.migrations_verify)
    verify.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
    rb = add(mig, "rollback", commands.migrations_rollback)
    rb.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
    rb.add_argument(
        "--dry-run", action="store_true", help="show rows to hide/restore per feature; write nothing"
    )
    add(mig, "unlock", commands.migrations_unlock)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    out, err = render.console(), render.console(stderr=True)
    project: commands.Project | None = None
    try:
        project = commands.open_project(args.config)
        result = _run(args, project)
    except MigrationFailed as exc:
        if args.raiseerr:
            return _traceback(exc, project)
        if args.format == "json":
            render.emit_json({"error": str(exc), "result": exc.result})
        err.print(f"[red]FAILED:[/red] {escape(str(exc))}")
        return 1
    except MetaxyError as exc:
        if args.raiseerr:
            return _traceback(exc, project)
        err.print(f"[red]FAILED:[/red] {escape(str(exc))}")
        return 1
    render.show(result, out, as_json=args.format == "json")
    if isinstance(result, commands.VerificationReport) and not result.passed:
        failed = ", ".join(v.migration_id for v in result.failed)
        err.print(
            f"[red]FAILED:[/red] {len(result.failed)} migration(s) failed verification: {escape(failed)}"
        )
        return 1
    return 0


def _traceback(exc: BaseException, project: commands.Project | None) -> int:
    """``--raiseerr``: the whole traceback, chained causes included, with credentials redacted (a cause's
    message may quote a storage option or a database URL)."""
    import traceback

    secrets: list[str] = []
    try:
        if project is not None and "store" in vars(project):  # only a store already built: no new I/O here
            secrets = project.store.secrets
    except Exception:  # noqa: BLE001 - the traceback matters more than a perfect secret list
        pass
    sys.stderr.write(redact("".join(traceback.format_exception(exc)), secrets))
    return 1


def _run(args: argparse.Namespace, project: commands.Project) -> Any:
    """Call the command of the parsed verb; returns its result."""
    if args.command == "push":
        return commands.push(project)
    if args.command == "graph":
        return commands.graph_info(project)
    if args.command == "snapshot":
        return commands.snapshot_info(project)
    if args.command == "store":
        return commands.store_maintain(project, vacuum_hours=args.vacuum_hours, dry_run=args.dry_run)
    verb = args.verb
    if verb == "status":
        return commands.migrations_status(project)
    if verb == "list":
        return commands.migrations_list(project)
    if verb == "apply":
        return _apply(args, project)
    if verb == "generate":
        return commands.migrations_generate(project, args.name)
    if verb == "explain":
        return commands.migrations_explain(project, args.migration_id)
    if verb == "history":
        return commands.migrations_history(project, args.migration_id)
    if verb == "verify":
        return commands.migrations_verify(project, args.migration_id)
    if verb == "rollback":
        return commands.migrations_rollback(project, args.migration_id, dry_run=args.dry_run)
    if verb == "unlock":
        return commands.migrations_unlock(project)
    raise AssertionError(verb)


def _apply(args: argparse.Namespace, project: commands.Project) -> commands.ApplyReport:
    """``migrations apply`` with a progress line on stderr while steps run (none with ``--format json``)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=render.console(stderr=True),
        transient=True,
        disable=args.format == "json",
    ) as bar:
        task = bar.add_task("planning" if args.dry_run else "applying", total=None)

        def on_step(step: StepResult) -> None:
            bar.update(
                task, description=f"{step.op_id} on {step.feature_key}: {step.status} ({step.rows} rows)"
            )

        return commands.migrations_apply(
            project, args.migration_id, dry_run=args.dry_run, force=args.force, on_step=on_step
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
