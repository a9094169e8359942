"""The ``metaxy`` command line: parse, call :mod:`metaxy_core.commands`, render, map errors to exit codes.

Exit codes (docs/cli.md): 0 success; 1 a :class:`MetaxyError` (printed as one ``FAILED: ...`` line), a
migration that fails verification, problems found by ``check``/``validate``, or migration files ``status``
cannot load; 2 usage errors; 3 an apply that completed but left features to recompute with the pipeline (a
root feature changed: its rows could not be carried over); 4 a rollback of several migrations that was not
confirmed (nothing changed). ``--raiseerr`` shows the traceback instead.
A verb's help is the first line of its command's docstring. Results go to stdout; progress, prompts and
``FAILED:`` lines to stderr.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from metaxy_core.startup import collection_paused

with collection_paused():  # loading the CLI's modules: no garbage-collector passes (see collection_paused)
    from rich.console import Console
    from rich.markup import escape

    from metaxy_core import commands
    from metaxy_core.cli import render, render_chain
    from metaxy_core.cli.progress import ProgressView
    from metaxy_core.errors import MetaxyError, redact
    from metaxy_core.migrations.results import MigrationFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RECOMPUTE, EXIT_NOT_CONFIRMED = 0, 1, 2, 3, 4
assert render_chain  # imported for its renderers


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
        epilog=(
            "Exit codes: 0 ok, 1 failed or problems found, 2 usage error, 3 applied but features left to "
            "recompute, 4 rollback not confirmed."
        ),
        parents=[_common(defaults=True)],
    )
    p.add_argument("--version", action="store_true", help=_help(commands.version_info))
    sub = p.add_subparsers(dest="command")

    def add(group, name: str, command: Callable[..., Any] | None = None, **kw):  # type: ignore[no-untyped-def]
        if command is not None:
            kw["help"] = _help(command)
        return group.add_parser(name, parents=[common], **kw)

    init = add(sub, "init", commands.init_project)
    init.add_argument("--project", help="project name (default: this folder's name)")
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
    apply.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run reconciliation buckets in N local processes (default: the `workers` setting, 1)",
    )
    gen = add(mig, "generate", commands.migrations_generate)
    gen.add_argument("--name", help="description used in the file name")
    gen.add_argument("--merge", action="store_true", help="write a merge migration joining the chain's heads")
    add(mig, "heads", commands.migrations_heads)
    add(mig, "check", commands.migrations_check)
    add(mig, "validate", commands.migrations_validate)
    stamp = add(mig, "stamp", commands.migrations_stamp)
    stamp.add_argument("migration_id", metavar="MIGRATION_ID")
    base = add(mig, "baseline", commands.migrations_baseline)
    base.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
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
    rb.add_argument(
        "-y", "--yes", action="store_true", help="roll back several migrations without asking (scripts, CI)"
    )
    unlock = add(mig, "unlock", commands.migrations_unlock)
    unlock.add_argument("--force", action="store_true", help="release a lease even if its heartbeat is fresh")
    imported = add(mig, "import-016", commands.migrations_import_016)
    imported.add_argument(
        "source", nargs="?", metavar="SOURCE", help="the 0.1.6 store's root (default: ours)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None and not args.version:
        parser.error("a command is required (see `metaxy --help`)")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    out, err = render.console(), render.console(stderr=True)
    project: commands.Project | None = None
    try:
        if args.version:
            result: Any = commands.version_info()
        elif args.command == "init":
            result = commands.init_project(project=args.project)
        else:  # every other verb works on a project (never a silent default outside one)
            project = commands.open_project(args.config)
            result = _run(args, project, err)
    except commands.NotConfirmed as exc:
        err.print(f"[red]FAILED:[/red] {escape(str(exc))}")
        return EXIT_NOT_CONFIRMED
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
        return EXIT_FAILED
    if isinstance(result, commands.CheckReport | commands.ValidationReport) and not result.ok:
        verb = "check" if isinstance(result, commands.CheckReport) else "validate"
        err.print(f"[red]FAILED:[/red] migrations {verb} found {len(result.problems)} problem(s)")
        return EXIT_FAILED
    if isinstance(result, commands.StatusReport) and result.unloadable:
        paths = ", ".join(r.path for r in result.unloadable)
        err.print(
            f"[red]FAILED:[/red] {len(result.unloadable)} migration file(s) cannot be loaded "
            f"({escape(paths)}); their rows show why"
        )
        return EXIT_FAILED
    if isinstance(result, commands.ApplyReport) and result.recompute_required and not result.dry_run:
        features = ", ".join(result.recompute_required)
        err.print(
            f"[magenta]RECOMPUTE REQUIRED:[/magenta] {escape(features)}: a root feature changed, so these "
            "rows were not carried over; recompute them with the pipeline, then run "
            "`metaxy migrations verify`"
        )
        return EXIT_RECOMPUTE
    return EXIT_OK


def entry() -> NoReturn:
    """The ``metaxy`` console script: :func:`main`, then an exit that skips the interpreter's teardown.

    Why: after an apply the process holds every module and hundreds of MiB of polars/jemalloc memory, and
    Python's finalization (module teardown, a last garbage collection over all of it) took 0.1-0.2 s of a
    ~1.2 s command, work the operating system does anyway when the process ends. Everything of a normal exit
    that has an effect still happens, in the same order: threads are waited for (``threading._shutdown``,
    which also stops idle executor workers), ``atexit`` handlers run (logging's flush, a project's own), the
    standard streams are flushed. An exception out of :func:`main` (argparse's usage errors and ``--help``
    included) exits the usual way. :func:`main` itself stays a plain function returning the exit code, for
    tests and for programs that embed the CLI.
    """
    code = main()
    shutdown = getattr(threading, "_shutdown", None)  # what Py_FinalizeEx runs first (CPython)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


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


def _run(args: argparse.Namespace, project: commands.Project, err: Console) -> Any:
    """Call the command of the parsed verb; returns its result."""
    if args.command == "push":
        return commands.push(project)
    if args.command == "graph":
        return commands.graph_info(project)
    if args.command == "snapshot":
        return commands.snapshot_info(project)
    if args.command == "store":
        with ProgressView(err, "maintaining the store") as view:
            return commands.store_maintain(
                project, vacuum_hours=args.vacuum_hours, dry_run=args.dry_run, on_progress=view.progress
            )
    verb = args.verb
    if verb == "status":
        return commands.migrations_status(project)
    if verb == "list":
        return commands.migrations_list(project)
    if verb == "apply":
        return _apply(args, project)
    if verb == "generate":
        return commands.migrations_generate(project, args.name, merge=args.merge)
    if verb == "heads":
        return commands.migrations_heads(project)
    if verb == "check":
        return commands.migrations_check(project)
    if verb == "validate":
        return commands.migrations_validate(project)
    if verb == "stamp":
        return commands.migrations_stamp(project, args.migration_id)
    if verb == "baseline":
        return commands.migrations_baseline(project, args.migration_id)
    if verb == "explain":
        return commands.migrations_explain(project, args.migration_id)
    if verb == "history":
        return commands.migrations_history(project, args.migration_id)
    if verb == "verify":
        return commands.migrations_verify(project, args.migration_id)
    if verb == "rollback":
        confirm = None if args.yes else _confirm(err)
        return commands.migrations_rollback(project, args.migration_id, dry_run=args.dry_run, confirm=confirm)
    if verb == "unlock":
        return commands.migrations_unlock(project, force=args.force)
    if verb == "import-016":
        return commands.migrations_import_016(project, args.source)
    raise AssertionError(verb)


def _apply(args: argparse.Namespace, project: commands.Project) -> commands.ApplyReport:
    """``migrations apply`` with progress on stderr while steps run (see :class:`ProgressView`)."""
    with ProgressView(render.console(stderr=True), "planning" if args.dry_run else "applying") as view:
        return commands.migrations_apply(
            project,
            args.migration_id,
            dry_run=args.dry_run,
            force=args.force,
            on_step=view.step,
            on_progress=view.progress,
            workers=args.workers,
        )


def _confirm(err: Console) -> Callable[[list[str]], bool]:
    """Ask on the terminal before several migrations are rolled back; refuse without one (pass --yes)."""

    def ask(ids: list[str]) -> bool:
        if not sys.stdin.isatty():
            raise commands.NotConfirmed(
                f"rolling back {len(ids)} migrations ({', '.join(ids)}) needs confirmation and there is no "
                "terminal to ask on; pass --yes to roll them back (nothing changed)"
            )
        err.print(f"This rolls back {len(ids)} migrations, newest first: {escape(', '.join(ids))}")
        try:
            answer = err.input("Roll them back? [y/N] ", markup=False)
        except EOFError:
            answer = ""
        return answer.strip().lower() in ("y", "yes")

    return ask


if __name__ == "__main__":  # pragma: no cover
    entry()
