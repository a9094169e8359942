"""The single emitter from metaxy results to Dagster events and metadata.

Everything metaxy reports to Dagster passes through here, under ``metaxy/...`` keys: materialization metadata
(from the store's progress log), dry-run plans (observations), failure metadata and check results. Free text
that comes from operations (notes, errors) is redacted with the store's secrets first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from metaxy_core.errors import MetaxyError, redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations import Migration, MigrationResult, StepResult
from metaxy_core.migrations.results import RollbackStatus, RunStatus, StepStatus
from metaxy_core.migrations.rollback import RollbackResult
from metaxy_core.migrations.state import MigrationState, StepState
from metaxy_core.store.delta import DeltaMetadataStore

if TYPE_CHECKING:
    from metaxy_core.migrations.verify import MigrationVerification

_STEP_SCHEMA = TableSchema(
    columns=[
        TableColumn("operation", "int", description="1-based position of the operation in the migration"),
        TableColumn("op_id", "string"),
        TableColumn("feature", "string"),
        TableColumn("status", "string", description=", ".join(StepStatus)),
        TableColumn("rows", "int", description="rows written (or that would be written in a dry run)"),
        TableColumn("duration_s", "float"),
        TableColumn("note", "string"),
    ]
)


def describe_step(migration_id: str, step: StepResult, secrets: Iterable[str] = ()) -> str:
    """One log line for a finished step."""
    text = (
        f"{migration_id} operation {step.op_index + 1} ({step.op_id}) on {step.feature_key}: {step.status}, "
        f"{step.rows} row(s) in {step.duration_s:.2f}s"
    )
    if step.note:
        text += f" - {step.note}"
    if step.error:
        text += f" - {step.error}"
    return redact(text, secrets)


def step_table(steps: Sequence[StepResult], secrets: Iterable[str] = ()) -> MetadataValue:
    secrets = list(secrets)
    return MetadataValue.table(
        records=[
            TableRecord(
                {
                    "operation": s.op_index + 1,
                    "op_id": s.op_id,
                    "feature": s.feature_key,
                    "status": str(s.status),
                    "rows": s.rows,
                    "duration_s": round(s.duration_s, 3),
                    "note": redact(s.note or s.error, secrets),
                }
            )
            for s in steps
        ],
        schema=_STEP_SCHEMA,
    )


def result_metadata(result: MigrationResult, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Metadata describing a migration result (applied, planned, already applied or failed)."""
    secrets = list(secrets)
    features = list(dict.fromkeys(s.feature_key for s in result.steps))
    metadata: dict[str, Any] = {
        "metaxy/migration_id": result.migration_id,
        "metaxy/status": str(result.status),
        "metaxy/dry_run": MetadataValue.bool(result.dry_run),
        "metaxy/rows": MetadataValue.int(result.rows_total),
        "metaxy/features": MetadataValue.json(features),
        "metaxy/rows_by_feature": MetadataValue.json(result.rows_by_feature()),
        "metaxy/recompute_required": MetadataValue.json(result.recompute_required),
        "metaxy/steps": step_table(result.steps, secrets),
    }
    if result.duration_s:
        metadata["metaxy/duration_s"] = MetadataValue.float(round(result.duration_s, 3))
    notes = [redact(f"{s.feature_key}: {s.note}", secrets) for s in result.steps if s.note]
    if notes:
        metadata["metaxy/notes"] = MetadataValue.md("\n".join(f"- {n}" for n in notes))
    if result.error:
        metadata["metaxy/error"] = MetadataValue.text(redact(result.error, secrets))
    return metadata


def result_from_state(migration: Migration, state: MigrationState, *, status: RunStatus) -> MigrationResult:
    """A :class:`MigrationResult` rebuilt from the store's progress log (every operation, every process)."""
    steps = [
        StepResult(
            op_index=s.op_index,
            op_id=s.op_id,
            op_type=s.op_type,
            feature_key=s.feature_key,
            status=s.status,
            rows=s.rows,
            duration_s=s.duration_s,
            note=s.note,
            error=s.error,
        )
        for s in sorted(state.steps.values(), key=lambda s: (s.op_index, s.at))
    ]
    duration = 0.0
    if state.started_at is not None and state.finished_at is not None:
        duration = (state.finished_at - state.started_at).total_seconds()
    return MigrationResult(
        migration_id=migration.migration_id,
        kind=migration.kind,
        status=status,
        steps=steps,
        duration_s=duration,
        error=state.error,
    )


def materialization_metadata(
    migration: Migration, state: MigrationState, *, already_applied: bool, secrets: Iterable[str] = ()
) -> dict[str, Any]:
    """Metadata of the migration asset's materialization after an apply (or a no-op on an applied
    migration)."""
    status = RunStatus.ALREADY_APPLIED if already_applied else RunStatus.COMPLETED
    result = result_from_state(migration, state, status=status)
    metadata = result_metadata(result, secrets)
    metadata["metaxy/checksum"] = migration.checksum
    if state.run_id:
        metadata["metaxy/applied_by_run"] = state.run_id
    return metadata


def plan_observation(
    asset_key: AssetKey,
    migration: Migration,
    *,
    op_index: int,
    op_count: int,
    op_id: str,
    steps: Sequence[StepResult],
    status: RunStatus = RunStatus.PLANNED,
    secrets: Iterable[str] = (),
) -> AssetObservation:
    """The dry-run plan of one operation of a migration, as an observation of the migration's asset."""
    result = MigrationResult(
        migration_id=migration.migration_id,
        kind=migration.kind,
        status=status,
        dry_run=True,
        steps=list(steps),
        duration_s=sum(s.duration_s for s in steps),
    )
    metadata = result_metadata(result, secrets)
    if op_count:
        metadata["metaxy/operation"] = f"{op_index + 1}/{op_count} {op_id}"
    return AssetObservation(
        asset_key=asset_key,
        description=f"dry run of {migration.migration_id}"
        + (f", operation {op_index + 1}/{op_count} ({op_id})" if op_count else ""),
        metadata=metadata,
    )


def target_graph(
    migration: Migration, store: DeltaMetadataStore, graph: FeatureGraph | None
) -> FeatureGraph | None:
    """The graph a migration moved its features to (its target snapshot, else the code's), or ``None``."""
    try:
        return migration.resolve_graphs(store, store.project, graph)[1]
    except MetaxyError:
        return graph


def feature_facts(
    feature: str, store: DeltaMetadataStore, to_graph: FeatureGraph | None, *, count_rows: bool = True
) -> dict[str, Any]:
    """The feature's version in ``to_graph`` and its row count there (``dagster/row_count``), if known.

    The count is the rows a reader of that version sees (latest row per sample); a store error leaves it
    out rather than failing the event.
    """
    facts: dict[str, Any] = {}
    if to_graph is None or feature not in to_graph:
        return facts
    facts["metaxy/feature_version"] = to_graph.feature_version(feature)
    if not count_rows:
        return facts
    try:
        count = store.read_metadata(feature, graph=to_graph, allow_missing=True).select(pl.len()).collect()
        facts["dagster/row_count"] = MetadataValue.int(int(count.item()))
    except MetaxyError:
        pass
    return facts


def feature_materialization(
    asset_key: AssetKey,
    feature: str,
    migration: Migration,
    *,
    rows: int,
    run_id: str,
    at: datetime | None = None,
    store: DeltaMetadataStore,
    graph: FeatureGraph | None = None,
    to_graph: FeatureGraph | None = None,
    count_rows: bool = True,
    secrets: Iterable[str] = (),
) -> AssetMaterialization:
    """A feature table written by a migration: rows written, the feature's new version, the migration id."""
    to_graph = to_graph if to_graph is not None else target_graph(migration, store, graph)
    metadata: dict[str, Any] = {
        "metaxy/feature": feature,
        "metaxy/migration_id": migration.migration_id,
        "metaxy/rows_written": MetadataValue.int(rows),
        "metaxy/run_id": run_id,
        **feature_facts(feature, store, to_graph, count_rows=count_rows),
    }
    if at is not None:
        metadata["metaxy/written_at"] = MetadataValue.timestamp(at)
    return AssetMaterialization(
        asset_key=asset_key,
        description=redact(f"{rows} row(s) written by migration {migration.migration_id}", list(secrets)),
        metadata=metadata,
    )


def feature_events(
    migration: Migration,
    steps: Iterable[StepState],
    feature_key: Callable[[str], AssetKey],
    *,
    store: DeltaMetadataStore,
    graph: FeatureGraph | None = None,
    count_rows: bool = True,
    secrets: Iterable[str] = (),
) -> list[AssetMaterialization]:
    """A materialization of every feature table the given completed steps of ``migration`` wrote (what the
    steps' ``writes`` in the log say, summed per feature); features nothing was written to get none."""
    written: dict[str, tuple[int, str, datetime]] = {}
    for step in steps:
        if not step.done:
            continue
        for feature, rows in step.writes.items():
            if rows:
                before = written.get(feature, (0, step.run_id, step.at))
                written[feature] = (before[0] + rows, step.run_id, max(before[2], step.at))
    if not written:
        return []
    to_graph = target_graph(migration, store, graph)
    return [
        feature_materialization(
            feature_key(feature),
            feature,
            migration,
            rows=rows,
            run_id=run_id,
            at=at,
            store=store,
            to_graph=to_graph,
            count_rows=count_rows,
            secrets=secrets,
        )
        for feature, (rows, run_id, at) in sorted(written.items())
    ]


def feature_plan_observations(
    migration: Migration, steps: Sequence[StepResult], feature_key: Callable[[str], AssetKey]
) -> list[AssetObservation]:
    """A dry run's plan per feature: the rows the migration would write there (an observation, never a
    materialization)."""
    rows: dict[str, int] = {}
    for step in steps:
        if step.feature_key != "*":  # a CustomMigration's one step: its features are known after the apply
            rows[step.feature_key] = rows.get(step.feature_key, 0) + step.rows
    return [
        AssetObservation(
            asset_key=feature_key(feature),
            description=f"dry run of {migration.migration_id}: {count} row(s) would be written",
            metadata={
                "metaxy/feature": feature,
                "metaxy/migration_id": migration.migration_id,
                "metaxy/dry_run": True,
                "metaxy/rows_planned": MetadataValue.int(count),
            },
        )
        for feature, count in rows.items()
    ]


def describe_rollback(result: RollbackResult, secrets: Iterable[str] = ()) -> str:
    """One log line per rolled-back (or planned) migration."""
    verb = {
        RollbackStatus.PLANNED: "would hide",
        RollbackStatus.ROLLED_BACK: "hid",
        RollbackStatus.NOT_APPLIED: "is not applied;",
    }[result.status]
    parts = (
        ", ".join(f"{f.feature_key}: {f.hidden} row(s), {f.restored} restored" for f in result.features)
        or "no rows"
    )
    return redact(f"rollback of {result.migration_id} {verb} {parts}", secrets)


def rollback_metadata(result: RollbackResult) -> dict[str, Any]:
    """Observation metadata recording a rollback (or its dry-run plan) on the migration's asset."""
    return {
        "metaxy/rollback": str(result.status),
        "metaxy/dry_run": result.dry_run,
        "metaxy/rows_hidden": result.rows_hidden,
        "metaxy/rows_hidden_by_feature": {f.feature_key: f.hidden for f in result.features},
        "metaxy/rows_restored_by_feature": {f.feature_key: f.restored for f in result.features},
    }


def feature_rollback_events(
    migration_id: str,
    features: Iterable[tuple[str, int, int | None]],
    feature_key: Callable[[str], AssetKey],
    *,
    dry_run: bool,
    run_id: str,
    at: datetime | None = None,
) -> list[AssetMaterialization | AssetObservation]:
    """The rollback's effect on each feature table whose latest view it changed.

    A rollback hides the rows a migration wrote and readers see the rows from before it again: the table's
    content changed, so each feature with hidden rows gets a materialization (rows hidden, rows restored when
    known, the migration, the run). A dry run's plan is an observation, never a materialization.

    Args:
        features: ``(feature key, rows hidden, rows restored or None)`` per feature.
    """
    out: list[AssetMaterialization | AssetObservation] = []
    for feature, hidden, restored in features:
        if not hidden:
            continue
        metadata: dict[str, Any] = {
            "metaxy/feature": feature,
            "metaxy/migration_id": migration_id,
            "metaxy/rollback": str(RollbackStatus.PLANNED if dry_run else RollbackStatus.ROLLED_BACK),
            "metaxy/rows_hidden": MetadataValue.int(hidden),
            "metaxy/run_id": run_id,
        }
        if restored is not None:
            metadata["metaxy/rows_restored"] = MetadataValue.int(restored)
        if at is not None:
            metadata["metaxy/rolled_back_at"] = MetadataValue.timestamp(at)
        restored_text = "" if restored is None else f", {restored} restored"
        key = feature_key(feature)
        if dry_run:
            description = f"rollback of {migration_id} would hide {hidden} row(s){restored_text}"
            out.append(AssetObservation(asset_key=key, description=description, metadata=metadata))
        else:
            description = f"rollback of {migration_id}: {hidden} row(s) hidden{restored_text}"
            out.append(AssetMaterialization(asset_key=key, description=description, metadata=metadata))
    return out


def failure_metadata(result: MigrationResult, secrets: Iterable[str] = ()) -> dict[str, Any]:
    """Metadata attached to the Failure of an op whose operation raised."""
    return result_metadata(result, secrets)


def check_result(verification: MigrationVerification, secrets: Iterable[str] = ()) -> AssetCheckResult:
    """The result of a migration's "verified after apply" check."""
    metadata: dict[str, Any] = {
        "metaxy/migration_id": verification.migration_id,
        "metaxy/status": str(verification.status),
        "metaxy/checked_features": MetadataValue.json(verification.checked_features),
        "metaxy/left_at_old_version": MetadataValue.json(verification.left_at_old_version),
        "metaxy/needs_recompute": MetadataValue.json(verification.needs_recompute),
    }
    return AssetCheckResult(
        passed=verification.passed,
        severity=AssetCheckSeverity.ERROR,
        description=redact(verification.description, list(secrets)),
        metadata=metadata,
    )
