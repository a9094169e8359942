"""Verifying an applied migration: its progress is complete and it left nothing behind.

A migration passes when its progress in the store is complete and, for a migration between two snapshots,
no affected feature still has samples stored only at the old feature version although they could be carried
over (their upstream rows exist at the new version). Samples that cannot be carried over (a changed root
feature, missing upstream rows) need a recompute by the pipeline; they are reported, not failed, because the
migration cannot fix them.

``metaxy migrations verify`` and Dagster's blocking "verified" asset checks both ask :func:`verify_migration`,
so they always reach the same verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations.executor import MigrationExecutor
from metaxy_core.migrations.reconcile import left_behind
from metaxy_core.migrations.results import MigrationStatus
from metaxy_core.migrations.state import MigrationState, state_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from metaxy_core.migrations.models import Migration
    from metaxy_core.store.delta import DeltaMetadataStore


@dataclass
class MigrationVerification:
    """Outcome of :func:`verify_migration`.

    Attributes:
        status: where the migration stands in the log.
        passed: the verdict (a Dagster check passes, ``metaxy migrations verify`` exits 0).
        description: the verdict in words, with the fix when it failed.
        checked_features: affected features whose version changed (those that can leave rows behind).
        left_at_old_version: per feature, samples only at the old version that could have been carried over.
        needs_recompute: per feature, samples only at the old version that the pipeline must recompute.
    """

    migration_id: str
    status: MigrationStatus
    passed: bool
    description: str
    checked_features: list[str] = field(default_factory=list)
    left_at_old_version: dict[str, int] = field(default_factory=dict)
    needs_recompute: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_migration(
    store: DeltaMetadataStore,
    migration: Migration,
    *,
    graph: FeatureGraph | None = None,
    project: str | None = None,
    states: Mapping[str, MigrationState] | None = None,
) -> MigrationVerification:
    """Check that ``migration`` is applied and left nothing behind at the old feature versions.

    Args:
        store: the metadata store.
        migration: the migration to verify.
        graph: the code's feature graph (default: the active one).
        project: default: the store's.
        states: the migration log already read (:func:`metaxy_core.migrations.progress.read_states`); read
            from the store when not given.
    """
    executor = MigrationExecutor(store, project=project, graph=graph)
    mid = migration.migration_id
    state = state_of(executor.states() if states is None else states, mid)
    if not state.completed:
        return MigrationVerification(
            migration_id=mid,
            status=state.status,
            passed=False,
            description=(
                f"migration {mid} is {state.status.replace('_', ' ')} in {store.root_uri}, not applied; "
                f"materialize its asset (or run `metaxy migrations apply {mid}`)"
                + (f". Last error: {state.error}" if state.error else "")
            ),
        )
    if not getattr(migration, "from_snapshot_version", None):
        return MigrationVerification(
            migration_id=mid,
            status=state.status,
            passed=True,
            description=f"migration {mid} is applied (progress complete; it has no snapshot diff to verify)",
        )
    ctx = executor.context(migration, 0, dry_run=True)
    assert ctx.from_graph is not None
    result = MigrationVerification(migration_id=mid, status=state.status, passed=True, description="")
    for feature in ctx.affected:
        counts = left_behind(store, feature, ctx.from_graph, ctx.to_graph)
        if counts is None:
            continue
        carryable, unreachable = counts
        result.checked_features.append(str(feature))
        if carryable:
            result.left_at_old_version[str(feature)] = carryable
        if unreachable:
            result.needs_recompute[str(feature)] = unreachable
    if result.left_at_old_version:
        result.passed = False
        detail = ", ".join(f"{k}: {v}" for k, v in result.left_at_old_version.items())
        result.description = (
            f"migration {mid} is recorded as applied but samples are still only at the old feature version "
            f"although they could be carried over ({detail}); the store changed after the apply or the apply "
            f"was incomplete: roll the migration back and apply it again (`metaxy migrations apply {mid}`)"
        )
    else:
        result.description = (
            f"migration {mid} is applied; {len(result.checked_features)} affected feature(s) have no samples "
            "left at the old version that could be carried over"
        )
    if result.needs_recompute:
        detail = ", ".join(f"{k}: {v}" for k, v in result.needs_recompute.items())
        result.description += f". Samples that need a recompute by the pipeline: {detail}"
    return result
