"""Blocking asset checks: a migration is verified after it is applied.

A migration passes when its progress in the store is complete and, for a migration between two snapshots,
no affected feature still has samples stored only at the old feature version although they could be carried
over (their upstream rows exist at the new version). Samples that cannot be carried over (a changed root
feature, missing upstream rows) need a recompute by the pipeline; they are reported, not failed, because the
migration cannot fix them. The check is blocking, so a failure stops the migrations that follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl
from dagster import AssetChecksDefinition, asset_check

from metaxy_core.errors import redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import Migration, MigrationChain, MigrationExecutor
from metaxy_core.migrations.progress import COMPLETED
from metaxy_core.store.delta import DeltaMetadataStore, MetadataNotFoundError
from metaxy_dagster import events
from metaxy_dagster._runtime import MigrationRef, definition_errors, metaxy_errors
from metaxy_dagster.resources import STORE_RESOURCE_KEY, MetaxyStoreResource
from metaxy_dagster.translator import MetaxyMigrationTranslator


@dataclass
class MigrationVerification:
    """Outcome of :func:`verify_migration`."""

    migration_id: str
    status: str
    passed: bool
    description: str
    checked_features: list[str] = field(default_factory=list)
    left_at_old_version: dict[str, int] = field(default_factory=dict)
    needs_recompute: dict[str, int] = field(default_factory=dict)


def verify_migration(
    store: DeltaMetadataStore,
    migration: Migration,
    *,
    graph: FeatureGraph | None = None,
    project: str | None = None,
) -> MigrationVerification:
    """Check that ``migration`` is applied and left nothing behind at the old feature versions."""
    executor = MigrationExecutor(store, project=project, graph=graph)
    state = executor.state(migration.migration_id)
    mid = migration.migration_id
    if state.status != COMPLETED:
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
        counts = _left_behind(store, feature, ctx.from_graph, ctx.to_graph)
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
            f"although they could be carried over ({detail}); the store changed after the apply or the apply was "
            f"incomplete: roll the migration back and apply it again (`metaxy migrations apply {mid}`)"
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


def _left_behind(
    store: DeltaMetadataStore, feature: FeatureKey, from_graph: FeatureGraph, to_graph: FeatureGraph
) -> tuple[int, int] | None:
    """(samples only at the old version that could be carried over, samples that need a recompute)."""
    if feature not in from_graph or feature not in to_graph:
        return None
    old_version, new_version = from_graph.feature_version(feature), to_graph.feature_version(feature)
    if old_version == new_version:
        return None
    spec = to_graph.spec(feature)
    ids = list(spec.id_columns)
    old = store.read_metadata(
        feature, feature_version=old_version, graph=from_graph, allow_missing=True
    ).select(ids)
    new = store.read_metadata(
        feature, feature_version=new_version, graph=to_graph, allow_missing=True
    ).select(ids)
    lacking = old.join(new, on=ids, how="anti", nulls_equal=True)
    if not spec.deps:
        return 0, lacking.select(pl.len()).collect().item()
    try:
        expected = store.expected_provenance(spec, to_graph).select(ids)
    except MetadataNotFoundError:
        return 0, lacking.select(pl.len()).collect().item()
    carryable, unreachable = pl.collect_all(
        [
            lacking.join(expected, on=ids, how="semi", nulls_equal=True).select(pl.len()),
            lacking.join(expected, on=ids, how="anti", nulls_equal=True).select(pl.len()),
        ]
    )
    return carryable.item(), unreachable.item()


def build_migration_checks(
    *,
    chain: MigrationChain,
    translator: MetaxyMigrationTranslator | None = None,
    store_resource_key: str = STORE_RESOURCE_KEY,
) -> list[AssetChecksDefinition]:
    """One blocking "verified" check per migration (none when the translator disables checks)."""
    translator = translator or MetaxyMigrationTranslator()
    checks = []
    for migration in chain:
        with definition_errors(migration):
            spec = translator.get_asset_check_spec(migration, chain)
            if spec is not None:
                checks.append(
                    _build_check(
                        MigrationRef.of(migration),
                        spec.asset_key,
                        spec.name,
                        spec.description,
                        store_resource_key,
                    )
                )
    return checks


def _build_check(
    ref: MigrationRef, asset_key: object, name: str, description: str | None, store_resource_key: str
) -> AssetChecksDefinition:
    @asset_check(
        asset=asset_key,  # type: ignore[arg-type]
        name=name,
        description=description,
        blocking=True,
        required_resource_keys={store_resource_key},
    )
    def _check(context):  # noqa: ANN001 - Dagster inspects the annotation; leave it blank
        resource: MetaxyStoreResource = getattr(context.resources, store_resource_key)
        with metaxy_errors():
            store = resource.get_store()
        secrets = store.secrets
        with metaxy_errors(secrets):
            graph = resource.load_graph()
            migration = ref.load()
            verification = verify_migration(store, migration, graph=graph)
        context.log.info(redact(verification.description, secrets))
        return events.check_result(verification, secrets)

    return _check


__all__: Sequence[str] = ["MigrationVerification", "build_migration_checks", "verify_migration"]
