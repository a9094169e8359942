"""The example's main job: seed the data, then run the migration chain through Dagster, dry run first.

Run from ``example_project/`` (``bash scripts/run-example.sh`` from the repository root does it for you)::

    python -m example_project.run              # 2,000 videos
    python -m example_project.run --samples 300 --verbose

Steps:

1. start a local S3 API (moto) and PostgreSQL (pgserver) on 127.0.0.1 and export ``AWS_*`` / ``DATABASE_URL``;
2. seed S3 (videos, thumbnails), PostgreSQL (labels) and the local Delta store (``.metaxy/store``, reset
   first) with what the *old* pipeline wrote, push the history's snapshots and deploy the current code's;
3. plan the chain with Dagster's plan job (a dry run), print the plan per migration, operation and
   feature, and check that no Delta table changed;
4. apply the chain with Dagster's apply job (each migration is an asset, each operation an op, each asset
   verified by its check);
5. print what changed per feature and check that ``resolve_update`` finds nothing left to do;
6. stop the servers (always, even on failure).

Exit status 0 only when every step succeeded.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from dagster import DagsterEventType, DagsterInstance, Definitions

import example_project.features as features
from example_project import CONFIG_FILE, generate
from example_project.definitions import build_definitions
from example_project.servers import local_servers
from metaxy_core import DeltaMetadataStore, FeatureGraph, MetaxyConfig
from metaxy_core.migrations import load_chain, progress
from metaxy_dagster import APPLY_JOB_NAME, PLAN_JOB_NAME, run_config_for


# ------------------------------------------------------------------------------------------- pieces
@dataclass
class PlanRow:
    migration_id: str
    operation: str
    feature: str
    status: str
    rows: int
    note: str = ""


@dataclass
class DagsterRun:
    job: str
    success: bool
    duration_s: float
    plan: list[PlanRow] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    failure: str = ""


def _run_config(job: str, *, dry_run: bool, verbose: bool) -> dict[str, Any]:
    config = {} if job == PLAN_JOB_NAME else run_config_for(dry_run=dry_run)  # the plan job only plans
    config["loggers"] = {"console": {"config": {"log_level": "INFO" if verbose else "WARNING"}}}
    return config


def run_job(
    defs: Definitions, name: str, *, dry_run: bool, instance: DagsterInstance, verbose: bool = False
) -> DagsterRun:
    """Execute a migration job in this process and collect its plan observations and check results."""
    job = defs.resolve_job_def(name)
    started = time.perf_counter()
    result = job.execute_in_process(
        run_config=_run_config(name, dry_run=dry_run, verbose=verbose),
        instance=instance,
        raise_on_error=False,
    )
    run = DagsterRun(job=name, success=result.success, duration_s=time.perf_counter() - started)
    for event in result.all_events:
        if event.event_type == DagsterEventType.ASSET_OBSERVATION:
            observation = event.asset_observation_data.asset_observation
            metadata = observation.metadata
            migration_id = metadata["metaxy/migration_id"].value
            steps = metadata.get("metaxy/steps")  # a migration's plan (feature assets get rows only)
            for record in steps.value.records if steps is not None else []:
                data = record.data
                run.plan.append(
                    PlanRow(
                        migration_id,
                        f"{data['operation']}:{data['op_id']}",
                        data["feature"],
                        data["status"],
                        int(data["rows"] or 0),
                        data.get("note") or "",
                    )
                )
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            run.checks[evaluation.asset_key.to_user_string()] = bool(evaluation.passed)
        elif event.event_type == DagsterEventType.STEP_FAILURE and not run.failure:
            error = event.step_failure_data.error
            run.failure = f"{event.step_key}: {error.message.strip() if error else 'failed'}"
    return run


def table_versions(store: DeltaMetadataStore, graph: FeatureGraph) -> dict[str, int | None]:
    """Delta version of every feature table (None: no table yet)."""
    return {key.to_string(): store.table_version(key) for key in graph.topological_order()}


@dataclass
class FeatureChange:
    feature: str
    old_version: str | None
    new_version: str
    rows_at_new_version: int
    rows_written_by_migrations: int
    pending: dict[str, int] | None  # resolve_update counts; None for root features


def feature_changes(
    store: DeltaMetadataStore, graph: FeatureGraph, old: FeatureGraph, project: str
) -> list[FeatureChange]:
    written: dict[str, int] = {}
    for state in progress.read_states(store, project).values():
        for step in state.steps.values():
            if step.done:
                for feature, rows in step.writes.items():
                    written[feature] = written.get(feature, 0) + rows
    out = []
    for key in graph.topological_order():
        name = key.to_string()
        rows = store.read_metadata(key, allow_missing=True).select(pl.len()).collect().item()
        pending = store.resolve_update(key).counts() if graph.spec(key).deps else None
        out.append(
            FeatureChange(
                feature=name,
                old_version=old.feature_version(key) if key in old else None,
                new_version=graph.feature_version(key),
                rows_at_new_version=rows,
                rows_written_by_migrations=written.get(name, 0),
                pending=pending,
            )
        )
    return out


# ------------------------------------------------------------------------------------------ printing
def _print_plan(plan: list[PlanRow], chain_ids: list[str]) -> None:
    for migration_id in chain_ids:
        rows = [r for r in plan if r.migration_id == migration_id]
        print(f"    {migration_id}")
        if not rows:
            print("      (not planned)")
        for r in rows:
            feature = "(custom execute)" if r.feature == "*" else r.feature
            print(f"      {r.operation:<34} {feature:<18} {r.status:<19} {r.rows:>6,} rows")
            if r.note:
                print(f"        note: {r.note}")


def _print_changes(changes: list[FeatureChange]) -> None:
    print(
        f"    {'feature':<18} {'feature version (v1 -> now)':<36} {'rows now':>8} {'migrated':>9}  "
        "resolve_update (added/changed/removed)"
    )
    for c in changes:
        if c.old_version is None:
            versions = f"(new) -> {c.new_version}"
        elif c.old_version == c.new_version:
            versions = f"{c.new_version} (unchanged)"
        else:
            versions = f"{c.old_version} -> {c.new_version}"
        pending = (
            "root: provenance comes from the data"
            if c.pending is None
            else (f"{c.pending['added']}/{c.pending['changed']}/{c.pending['removed']}")
        )
        print(
            f"    {c.feature:<18} {versions:<36} {c.rows_at_new_version:>8,} "
            f"{c.rows_written_by_migrations:>9,}  {pending}"
        )


class ExampleFailed(Exception):
    pass


def run_example(*, n_samples: int = generate.N_SAMPLES, verbose: bool = False) -> list[FeatureChange]:
    """The whole main job (servers, seed, plan, apply, report); raises :class:`ExampleFailed` on a failure."""
    total = time.perf_counter()
    print("metaxy-dagster example: a multimodal video pipeline and its migration chain\n")

    t = time.perf_counter()
    print("[1/6] starting local servers (the same settings would point at production)")
    with local_servers() as servers:
        print(f"      S3 API (moto)  AWS_ENDPOINT_URL={servers.s3.endpoint}")
        print(f"      PostgreSQL 16  DATABASE_URL={servers.postgres.uri}   ({time.perf_counter() - t:.1f}s)")

        t = time.perf_counter()
        config = MetaxyConfig.load(CONFIG_FILE)
        print(f"[2/6] seeding {n_samples:,} videos; the store {config.store_root} is reset")
        s3 = generate.seed_s3(servers.s3.client(), n_samples=n_samples, direct_put=servers.s3.direct_put())
        labels = generate.seed_postgres(servers.postgres.uri, n_samples=n_samples)
        generate.reset_store(config.store_root)
        store = config.get_store()
        graph = FeatureGraph.get_active()
        report = generate.seed_store(store, n_samples=n_samples, current_graph=graph)
        print(
            f"      s3://{generate.MEDIA_BUCKET}: {s3['videos']:,} videos "
            f"(+{s3['deleted_videos']} of deleted videos, +{s3['placeholders']} zero-byte placeholders "
            f"of aborted uploads), {s3['thumbnails']:,} thumbnails"
        )
        print(
            f"      PostgreSQL {generate.ANNOTATIONS_TABLE}: {labels:,} labels (incl. {generate.ORPHANS} of "
            "deleted videos)"
        )
        print(
            f"      store: {', '.join(f'{k} {v:,}' for k, v in report.rows_by_feature.items())} rows, "
            f"written by the {generate.OLD_STAGE} pipeline"
        )
        for stage, version in report.snapshots.items():
            print(f"      pushed snapshot {version}  {stage}: {features.STAGE_NOTES[stage]}")
        print(
            f"      deployed       {report.deployed}  {features.CURRENT_STAGE}: "
            f"{features.STAGE_NOTES[features.CURRENT_STAGE]}   ({time.perf_counter() - t:.1f}s)"
        )

        chain = load_chain(config.migrations_path)
        defs = build_definitions(config)
        instance = DagsterInstance.ephemeral()

        print(
            f"[3/6] dry run through Dagster: job {PLAN_JOB_NAME}, which only plans ({len(chain)} migrations)"
        )
        before = table_versions(store, graph)
        plan = run_job(defs, PLAN_JOB_NAME, dry_run=True, instance=instance, verbose=verbose)
        if not plan.success:
            raise ExampleFailed(f"the plan job failed: {plan.failure}")
        _print_plan(plan.plan, chain.ids)
        after = table_versions(store, graph)
        if before != after:
            raise ExampleFailed(f"the dry run changed Delta tables: {before} -> {after}")
        print(
            "      each migration is planned against the store as it is now "
            "(upstreams carried over by the same"
        )
        print("      migration are estimated); a step fed by an earlier, unapplied migration shows 0 rows")
        print(f"      nothing written: every Delta table version unchanged   ({plan.duration_s:.1f}s)")

        print(f"[4/6] apply through Dagster: job {APPLY_JOB_NAME}")
        applied = run_job(defs, APPLY_JOB_NAME, dry_run=False, instance=instance, verbose=verbose)
        if not applied.success:
            raise ExampleFailed(f"the apply job failed: {applied.failure}")
        states = progress.read_states(store, config.project)
        for migration in chain:
            state = states.get(migration.migration_id)
            rows: dict[str, int] = {}
            for step in state.steps.values() if state else []:
                for feature, n in step.writes.items():
                    rows[feature] = rows.get(feature, 0) + n
            print(
                f"      {migration.migration_id:<52} {state.status if state else 'not started':<10} "
                + ", ".join(f"{k} {v:,}" for k, v in rows.items())
            )
        passed = sum(applied.checks.values())
        print(
            f"      checks (no feature left at its old version): {passed}/{len(applied.checks)} passed   "
            f"({applied.duration_s:.1f}s)"
        )
        if passed != len(applied.checks):
            raise ExampleFailed(f"migration checks failed: {applied.checks}")

        print("[5/6] what changed per feature")
        changes = feature_changes(store, graph, features.graph_at(generate.OLD_STAGE), config.project)
        _print_changes(changes)
        left = {c.feature: c.pending for c in changes if c.pending and any(c.pending.values())}
        if left:
            raise ExampleFailed(f"resolve_update still finds work after the chain: {left}")
        print("      nothing left to recompute: resolve_update finds no added, changed or removed sample")
        print("[6/6] stopping the servers")
    print(
        f"\ndone in {time.perf_counter() - total:.1f}s. Next: `dagster dev` in example_project/ "
        "(see docs/example-project.md)"
    )
    return changes


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m example_project.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--samples", type=int, default=generate.N_SAMPLES, help="number of videos (default 2000)"
    )
    parser.add_argument("--verbose", action="store_true", help="show Dagster's and the migrations' logs")
    args = parser.parse_args(argv)
    # `kill` / a CI timeout: leave like Ctrl-C, through the `finally` blocks that stop the servers.
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    for noisy in ("werkzeug", "pgserver", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        run_example(n_samples=args.samples, verbose=args.verbose)
    except ExampleFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; the servers are stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
