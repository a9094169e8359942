"""A sensor that follows the store's latest pushed snapshot.

Its cursor is a typed, JSON-serialised :class:`SnapshotCursor` (latest snapshot version + chain head). When
either changes it requests a run of the pending migrations, with a run key derived from both (so a tick never
launches the same run twice); otherwise it says why it skipped: nothing changed, nothing is pending, or the
new snapshot has no migration leading to it yet (run ``metaxy migrations generate``). A cursor it cannot read
is logged and reset.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from metaxy_core.migrations import Migration, MigrationChain
from metaxy_core.migrations.progress import read_states
from metaxy_core.migrations.state import pending
from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_dagster._compat import AnyJob, is_asset_job
from metaxy_dagster._runtime import open_run
from metaxy_dagster.jobs import RUN_KIND_TAG, run_config_for, takes_dry_run
from metaxy_dagster.resources import RUN_RESOURCE_KEY, STORE_RESOURCE_KEY, MetaxyStoreResource
from metaxy_dagster.translator import MetaxyMigrationTranslator

DEFAULT_SENSOR_NAME = "metaxy_snapshot_sensor"


class SnapshotCursor(BaseModel):
    """What the sensor saw last: the store's latest snapshot and the chain head it handled it with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    snapshot_version: str
    chain_head: str | None = None

    def serialize(self) -> str:
        return self.model_dump_json()

    @classmethod
    def parse(cls, raw: str | None, log: logging.Logger | None = None) -> SnapshotCursor | None:
        """The cursor in ``raw``; ``None`` (with a warning) when it is missing or unreadable."""
        if not raw:
            return None
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            if log is not None:
                log.warning(
                    f"ignoring unreadable sensor cursor {raw[:200]!r} ({exc.error_count()} problem(s)); it "
                    "is reset and the store's latest snapshot is handled as new"
                )
            return None


@dataclass
class SnapshotTick:
    """What one evaluation decided (see :func:`evaluate_snapshot_tick`)."""

    cursor: SnapshotCursor | None
    pending: list[Migration] = field(default_factory=list)
    skip_reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def run_key(self) -> str | None:
        if self.cursor is None or not self.pending:
            return None
        return f"{self.cursor.snapshot_version}:{self.cursor.chain_head}"


def evaluate_snapshot_tick(
    store: DeltaMetadataStore, chain: MigrationChain, previous: SnapshotCursor | None
) -> SnapshotTick:
    """Decide a tick: compare the store's latest snapshot and the chain head with ``previous``."""
    latest = store.latest_snapshot()
    if latest is None:
        return SnapshotTick(
            cursor=previous,
            skip_reason=(
                f"no snapshot has been pushed to {store.root_uri} for project {store.project!r} yet; run "
                "`metaxy push` when a deployment goes live"
            ),
        )
    head = chain.head.migration_id if chain.head is not None else None
    current = SnapshotCursor(snapshot_version=latest.snapshot_version, chain_head=head)
    if previous == current:
        return SnapshotTick(
            cursor=current,
            skip_reason=(
                f"unchanged: the store's latest snapshot is still {current.snapshot_version} and the "
                "migration "
                f"chain head is still {head or '(no migrations)'}; both were handled by an earlier tick"
            ),
        )
    tick = SnapshotTick(cursor=current)
    tick.pending = pending(chain, read_states(store, store.project))
    leads_to_latest = any(getattr(m, "to_snapshot_version", None) == current.snapshot_version for m in chain)
    missing = not leads_to_latest and len(store.list_snapshots()) > 1
    missing_text = (
        f"the store's latest snapshot {current.snapshot_version} has no migration leading to it yet "
        f"(no migration has to_snapshot_version {current.snapshot_version}); if stored metadata must move to "
        "it, run `metaxy migrations generate`, commit the file and reload the code location"
    )
    if tick.pending:
        if missing:
            tick.warnings.append(missing_text)
        return tick
    if missing:
        tick.skip_reason = missing_text
    else:
        tick.skip_reason = (
            f"nothing pending: all {len(chain)} migration(s) are applied in {store.root_uri} "
            f"(latest snapshot {current.snapshot_version})"
        )
    return tick


def build_snapshot_sensor(
    *,
    job: AnyJob,
    chain: MigrationChain,
    translator: MetaxyMigrationTranslator | None = None,
    name: str = DEFAULT_SENSOR_NAME,
    dry_run: bool = False,
    store_resource_key: str = STORE_RESOURCE_KEY,
    run_resource_key: str = RUN_RESOURCE_KEY,
    minimum_interval_seconds: int = 60,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
    description: str | None = None,
) -> SensorDefinition:
    """A sensor requesting a run of ``job`` for the pending migrations when the store's snapshot changes.

    Args:
        job: the apply job (the request selects the pending migrations' assets) or the plan job.
        chain: the migration chain the definitions were built from.
        translator: maps migrations to asset keys (must match the one used for the assets).
        dry_run: request plans instead of applies.

    Example:
        >>> build_snapshot_sensor(job=apply_job, chain=chain)
    """
    translator = translator or MetaxyMigrationTranslator()
    select_assets = is_asset_job(job)

    @sensor(
        name=name,
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={store_resource_key},
        description=description
        or "Requests a run of the pending metaxy migrations when the store's latest pushed snapshot (or the "
        "migration chain) changes; says why it skips otherwise.",
    )
    def _snapshot_sensor(context: SensorEvaluationContext) -> SensorResult:
        resource: MetaxyStoreResource = getattr(context.resources, store_resource_key)
        previous = SnapshotCursor.parse(context.cursor, context.log)
        run = open_run(resource)
        with run.errors():
            tick = evaluate_snapshot_tick(run.store, chain, previous)
        for warning in tick.warnings:
            context.log.warning(warning)
        cursor = tick.cursor.serialize() if tick.cursor is not None else context.cursor
        if tick.skip_reason is not None:
            context.log.info(tick.skip_reason)
            return SensorResult(skip_reason=SkipReason(tick.skip_reason), cursor=cursor)
        assert tick.cursor is not None and tick.run_key is not None
        ids = [m.migration_id for m in tick.pending]
        context.log.info(
            f"snapshot {tick.cursor.snapshot_version}: requesting {len(ids)} pending migration(s): {ids}"
        )
        request = RunRequest(
            run_key=("plan:" if dry_run else "") + tick.run_key,
            # the plan job always plans and takes no dry_run
            run_config=(
                run_config_for(dry_run=dry_run, run_resource_key=run_resource_key)
                if takes_dry_run(job)
                else {}
            ),
            asset_selection=[translator.get_asset_key(m) for m in tick.pending] if select_assets else None,
            tags={
                RUN_KIND_TAG: "plan" if dry_run else "apply",
                "metaxy/snapshot_version": tick.cursor.snapshot_version,
                "metaxy/chain_head": tick.cursor.chain_head or "",
            },
        )
        return SensorResult(run_requests=[request], cursor=cursor)

    return _snapshot_sensor
