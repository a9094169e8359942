"""The ``metaxy`` command line: parse, call :mod:`metaxy_core.commands`, render, map errors to exit codes.

Exit codes: 0 success, 1 a :class:`MetaxyError` (printed as ``FAILED: ...``), 2 usage errors.
``--raiseerr`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from rich.markup import escape

from metaxy_core import commands
from metaxy_core.cli import render
from metaxy_core.errors import MetaxyError, redact
from metaxy_core.migrations.models import MigrationFailed, StepResult


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


def _parser() -> argparse.ArgumentParser:
    common = _common(defaults=False)
    p = argparse.ArgumentParser(
        prog="metaxy",
        description="Versioned metadata and migrations for ML pipelines.",
        parents=[_common(defaults=True)],
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add(group, name: str, **kw):  # type: ignore[no-untyped-def]
        return group.add_parser(name, parents=[common], **kw)

    add(sub, "push", help="record the code's feature graph snapshot in the store (idempotent)")
    add(sub, "graph", help="list features, fields and their versions")
    add(sub, "snapshot", help="show the code's snapshot version and the latest pushed one")
    store = add(sub, "store", help="store maintenance").add_subparsers(dest="verb", required=True)
    maintain = add(store, "maintain", help="compact and checkpoint every table; --vacuum-hours also vacuums")
    maintain.add_argument(
        "--vacuum-hours", type=float, metavar="N", help="vacuum files unreferenced for N hours"
    )
    maintain.add_argument(
        "--dry-run", action="store_true", help="change nothing: show file counts, files to vacuum"
    )

    mig = add(sub, "migrations", help="inspect and run migrations").add_subparsers(dest="verb", required=True)
    add(mig, "status", help="status of every migration in the chain")
    add(mig, "list", help="the migration chain as files (no store access)")
    apply = add(mig, "apply", help="apply pending migrations up to MIGRATION_ID (default: all)")
    apply.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
    apply.add_argument("--dry-run", action="store_true", help="plan only: write nothing, show rows per step")
    apply.add_argument("--force", action="store_true", help="continue a migration whose file was edited")
    gen = add(mig, "generate", help="write a reconciliation migration for the code's graph changes")
    gen.add_argument("--name", help="description used in the file name")
    explain = add(mig, "explain", help="details of one migration")
    explain.add_argument("migration_id", metavar="MIGRATION_ID")
    history = add(mig, "history", help="the migration log, event by event")
    history.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
    rb = add(mig, "rollback", help="undo the newest applied migration, or all down to MIGRATION_ID")
    rb.add_argument("migration_id", nargs="?", metavar="MIGRATION_ID")
    rb.add_argument(
        "--dry-run", action="store_true", help="show rows to hide/restore per feature; write nothing"
    )
    add(mig, "unlock", help="release the store's migration lock held by a dead run")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    out, err = render.console(), render.console(stderr=True)
    project: commands.Project | None = None
    try:
        project = commands.open_project(args.config)
        return _dispatch(args, project, out, err)
    except MigrationFailed as exc:
        if args.raiseerr:
            return _traceback(exc, project)
        if args.format == "json":
            render.emit_json({"error": str(exc), "result": exc.result.model_dump()})
        err.print(f"[red]FAILED:[/red] {escape(str(exc))}")
        return 1
    except MetaxyError as exc:
        if args.raiseerr:
            return _traceback(exc, project)
        err.print(f"[red]FAILED:[/red] {escape(str(exc))}")
        return 1


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


def _dispatch(args: argparse.Namespace, project: commands.Project, out, err) -> int:  # type: ignore[no-untyped-def]
    as_json = args.format == "json"
    if args.command == "push":
        result = commands.push(project)
        if as_json:
            render.emit_json(result.__dict__)
        elif result.already_pushed:
            out.print(f"snapshot {result.snapshot_version} is already the latest pushed one; nothing to do")
        else:
            out.print(
                f"pushed snapshot {result.snapshot_version} (previous: {result.previous_version or 'none'})"
            )
        return 0
    if args.command == "graph":
        rows = commands.graph_info(project)
        if as_json:
            render.emit_json(rows)
        else:
            body = [
                [
                    r["feature"],
                    r["feature_version"],
                    f["field"],
                    f["code_version"],
                    f["version"],
                    ", ".join(f["deps"]),
                ]
                for r in rows
                for f in r["fields"]
            ]
            out.print(
                render.table(
                    f"Feature graph ({project.graph.snapshot_version})",
                    ["feature", "feature version", "field", "code", "field version", "depends on"],
                    body,
                )
            )
        return 0
    if args.command == "snapshot":
        info = commands.snapshot_info(project)
        if as_json:
            render.emit_json(info)
        else:
            out.print(f"current snapshot:     {info['current_snapshot_version']}")
            out.print(
                f"latest pushed:        {info['latest_pushed_snapshot_version'] or 'none (run `metaxy push`)'}"
            )
        return 0
    if args.command == "store":
        reports = commands.store_maintain(project, vacuum_hours=args.vacuum_hours, dry_run=args.dry_run)
        if as_json:
            render.emit_json([r.as_dict() for r in reports])
        else:
            out.print(
                render.table(
                    "Store maintenance" + (" (dry run)" if args.dry_run else ""),
                    ["table", "action", "files before", "files after", "files removed", "seconds"],
                    [
                        [
                            r.table,
                            r.action,
                            r.files_before,
                            r.files_after,
                            r.files_removed,
                            f"{r.seconds:.2f}",
                        ]
                        for r in reports
                    ],
                )
            )
        return 0
    return _migrations(args, project, out, err)


def _migrations(args: argparse.Namespace, project: commands.Project, out, err) -> int:  # type: ignore[no-untyped-def]
    as_json = args.format == "json"
    if args.verb == "list":
        rows = commands.migrations_list(project)
        if as_json:
            render.emit_json(rows)
        else:
            out.print(
                render.table(
                    "Migrations",
                    ["id", "kind", "parent", "file"],
                    [[r["migration_id"], r["kind"], r["parent"], r["path"]] for r in rows],
                )
            )
        return 0
    if args.verb == "status":
        rows = commands.migrations_status(project)
        if as_json:
            render.emit_json([r.as_dict() for r in rows])
        elif not rows:
            out.print(f"no migrations in {project.config.migrations_path}")
        else:
            out.print(
                render.table(
                    "Migration status",
                    ["id", "kind", "status", "steps done", "rows", "note"],
                    [
                        [
                            r.migration_id,
                            r.kind,
                            r.status,
                            r.steps_done,
                            r.rows,
                            ("file edited since apply! " if r.edited else "") + r.error,
                        ]
                        for r in rows
                    ],
                )
            )
        return 0
    if args.verb == "apply":
        return _apply(args, project, out)
    if args.verb == "generate":
        g = commands.migrations_generate(project, args.name)
        if as_json:
            render.emit_json(
                {
                    "path": str(g.path),
                    "migration_id": g.migration_id,
                    "affected": [str(k) for k in g.affected],
                    "recompute": [str(k) for k in g.recompute],
                }
            )
        else:
            out.print(f"wrote {g.path}")
            out.print(f"  affected: {', '.join(map(str, g.affected))}")
            if g.recompute:
                out.print(
                    f"  root features to recompute with the pipeline: {', '.join(map(str, g.recompute))}"
                )
        return 0
    if args.verb == "explain":
        info = commands.migrations_explain(project, args.migration_id)
        if as_json:
            render.emit_json(info)
        else:
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
            out.print(
                f"{'operations:':24}{', '.join(o['id'] + ' (' + o['type'] + ')' for o in info['operations'])}"
            )
            out.print(
                f"{'affected features:':24}{', '.join(info['affected_features']) or info.get('affected_error', '-')}"
            )
            st = info["status"]
            out.print(f"{'status:':24}{st['status']} ({st['steps_done']} steps done, {st['rows']} rows)")
        return 0
    if args.verb == "history":
        rows = commands.migrations_history(project, args.migration_id)
        if as_json:
            render.emit_json(rows)
        else:
            out.print(
                render.table(
                    "Migration log",
                    ["at", "migration", "op", "feature", "status", "rows", "run"],
                    [
                        [
                            r["at"],
                            r["migration_id"],
                            r["op_id"] or "-",
                            r["feature_key"] or "-",
                            r["status"],
                            r["rows"],
                            r["run_id"],
                        ]
                        for r in rows
                    ],
                )
            )
        return 0
    if args.verb == "rollback":
        results = commands.migrations_rollback(project, args.migration_id, dry_run=args.dry_run)
        if as_json:
            render.emit_json([{**r.__dict__, "features": [f.__dict__ for f in r.features]} for r in results])
        elif not results:
            out.print("nothing to roll back: no migration is applied")
        else:
            title = "Rollback plan (dry run: nothing written)" if args.dry_run else "Rolled back"
            out.print(
                render.table(
                    title,
                    ["migration", "status", "feature", "rows hidden", "rows restored"],
                    [
                        [r.migration_id, r.status, f.feature_key, f.hidden, f.restored]
                        for r in results
                        for f in r.features
                    ]
                    + [[r.migration_id, r.status, "-", 0, 0] for r in results if not r.features],
                )
            )
        return 0
    if args.verb == "unlock":
        lease = commands.migrations_unlock(project)
        msg = (
            f"released the lock held by run {lease.owner} ({lease.host}, pid {lease.pid})"
            if lease
            else "the store was not locked"
        )
        render.emit_json({"released": lease.owner if lease else None}) if as_json else out.print(msg)
        return 0
    raise AssertionError(args.verb)


def _apply(args: argparse.Namespace, project: commands.Project, out) -> int:  # type: ignore[no-untyped-def]
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    as_json = args.format == "json"
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=render.console(stderr=True),
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("planning" if args.dry_run else "applying", total=None)

        def on_step(step: StepResult) -> None:
            bar.update(
                task, description=f"{step.op_id} on {step.feature_key}: {step.status} ({step.rows} rows)"
            )

        results = commands.migrations_apply(
            project, args.migration_id, dry_run=args.dry_run, force=args.force, on_step=on_step
        )
    if as_json:
        render.emit_json([r.model_dump() for r in results])
    elif not results:
        out.print("nothing to apply: every migration is completed")
    else:
        out.print(render.results_table(results, dry_run=args.dry_run))
        recompute = sorted({f for r in results for f in r.recompute_required})
        if recompute:
            out.print(f"[magenta]recompute with the pipeline:[/magenta] {', '.join(recompute)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
