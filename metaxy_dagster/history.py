"""The store's migration log, mirrored into Dagster's asset state by a sensor.

The log in the store is the truth about which migration is applied: the CLI, a script, another code location
or another Dagster deployment may apply, stamp or roll back a migration without this instance seeing a run.
Each tick of the history sensor compares, for every migration, the log's newest migration-level event with
the newest event Dagster holds for the migration's asset, and reports what Dagster has not seen as runless
events (``SensorResult(asset_events=...)``):

* applied or stamped -> a materialization of the migration asset (the same metadata an apply run records,
  plus the original run id and time), and a materialization of every feature asset a step of another run
  wrote (rows written, the feature's new version, the migration id);
* rolled back -> an observation of the migration asset (rows hidden and restored, run id, time), and a
  materialization of every feature asset whose rows it hid (its latest view changed).

Dagster's own runs record their events as they go, so the sensor skips log entries of runs of this instance
that are still running (their events are on the way) and entries whose run id Dagster already shows: ticks
are idempotent, and re-running the apply job on applied migrations records nothing new for feature assets.
The cursor is the log's Delta version (plus the chain), so a tick with nothing new costs one version check.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    DagsterInstance,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)
from pydantic import BaseModel, ConfigDict, ValidationError

from metaxy_core.errors import redact
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.migrations import Migration, MigrationChain
from metaxy_core.migrations.progress import read_events, read_states
from metaxy_core.migrations.results import EventStatus
from metaxy_core.migrations.state import MIGRATION_LEVEL, MigrationState, state_of
from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_core.store.system import MIGRATION_EVENTS
from metaxy_dagster import events
from metaxy_dagster._runtime import open_run
from metaxy_dagster.resources import STORE_RESOURCE_KEY, MetaxyStoreResource

DEFAULT_HISTORY_SENSOR_NAME = "metaxy_history_sensor"
#: the log's event statuses that leave a migration applied (a stamp records it as applied without running)
APPLIED = frozenset({str(EventStatus.COMPLETED), "stamped"})
ROLLED_BACK = str(EventStatus.ROLLED_BACK)
#: observations searched for a migration's rollback (plans observe migration assets as well)
_RECENT_OBSERVATIONS = 50


class HistoryCursor(BaseModel):
    """What the history sensor mirrored last: the log's Delta version, for the chain and keys it had."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    log_version: int | None
    chain: str

    def serialize(self) -> str:
        return self.model_dump_json()

    @classmethod
    def parse(cls, raw: str | None, log: logging.Logger | None = None) -> HistoryCursor | None:
        if not raw:
            return None
        try:
            return cls.model_validate_json(raw)
        except ValidationError:
            if log is not None:
                log.warning(
                    f"ignoring unreadable history cursor {raw[:200]!r}; the whole log is compared again"
                )
            return None


@dataclass(frozen=True)
class LogEntry:
    """The newest migration-level event of one migration in the store's log."""

    migration_id: str
    status: str
    run_id: str
    at: datetime
    note: str = ""
    #: rows the event changed per feature (for a rollback: rows hidden; empty in logs older than that)
    writes: dict[str, int] = field(default_factory=dict)


@dataclass
class HistoryTick:
    """What one evaluation decided (see :func:`evaluate_history_tick`)."""

    cursor: HistoryCursor | None
    asset_events: list[AssetMaterialization | AssetObservation] = field(default_factory=list)
    skip_reason: str | None = None
    waiting_for: list[str] = field(default_factory=list)


def latest_entries(log: pl.DataFrame) -> dict[str, LogEntry]:
    """The newest migration-level event of every migration in ``log`` (rows in log order)."""
    last = (
        log.filter(pl.col("op_index") == MIGRATION_LEVEL)
        .group_by("migration_id", maintain_order=True)
        .last()
        .select("migration_id", "status", "run_id", "at", "note", "writes")
    )
    return {
        row["migration_id"]: LogEntry(
            row["migration_id"],
            row["status"],
            row["run_id"] or "",
            row["at"],
            row["note"] or "",
            json.loads(row["writes"] or "{}"),
        )
        for row in last.iter_rows(named=True)
    }


def chain_digest(keys: Mapping[str, AssetKey], feature_keys: Mapping[str, AssetKey]) -> str:
    """Identifies the chain and the asset keys a cursor was computed for (a reload may change either)."""
    text = "\n".join(f"{m}={k.to_user_string()}" for m, k in keys.items())
    text += "\n" + "\n".join(f"{f}={k.to_user_string()}" for f, k in feature_keys.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _text(metadata: Mapping[str, Any], key: str) -> str | None:
    value = metadata.get(key)
    value = getattr(value, "value", value)
    return None if value is None else str(value)


class _Runs:
    """Run lookups of one tick (cached): is a run id one of this instance's runs, and is it still going?"""

    def __init__(self, instance: DagsterInstance) -> None:
        self.instance = instance
        self._runs: dict[str, Any] = {}

    def get(self, run_id: str) -> Any:
        if run_id not in self._runs:
            self._runs[run_id] = self.instance.get_run_by_id(run_id) if run_id else None
        return self._runs[run_id]

    def in_flight(self, run_id: str) -> bool:
        run = self.get(run_id)
        return run is not None and not run.is_finished

    def is_dagster_run(self, run_id: str) -> bool:
        return self.get(run_id) is not None


def evaluate_history_tick(
    store: DeltaMetadataStore,
    chain: MigrationChain,
    instance: DagsterInstance,
    *,
    keys: Mapping[str, AssetKey],
    feature_keys: Mapping[str, AssetKey],
    previous: HistoryCursor | None,
    graph: FeatureGraph | None = None,
    count_rows: bool = True,
    secrets: Sequence[str] = (),
) -> HistoryTick:
    """Compare the store's log with Dagster's asset state and return the events Dagster lacks.

    Args:
        keys: migration id -> its asset key.
        feature_keys: feature key -> its asset key (ours or the user's asset standing for it).
        previous: the cursor of the last tick.
        graph: the code's graph (the new feature versions of migrations that have no snapshot files).
        count_rows: report each written feature's row count (``dagster/row_count``).
    """
    digest = chain_digest(keys, feature_keys)
    version = store.table_version(system=MIGRATION_EVENTS)
    current = HistoryCursor(log_version=version, chain=digest)
    if version is None:
        return HistoryTick(cursor=current, skip_reason=f"no migration was ever applied in {store.root_uri}")
    if previous == current:
        return HistoryTick(
            cursor=current,
            skip_reason=f"the migration log in {store.root_uri} is unchanged (Delta version {version})",
        )
    entries = latest_entries(read_events(store, store.project))
    states = read_states(store, store.project)
    runs = _Runs(instance)
    tick = HistoryTick(cursor=current)
    applied = [m for m in chain if m.migration_id in entries and entries[m.migration_id].status in APPLIED]
    records = {
        r.asset_entry.asset_key: r.asset_entry
        for r in instance.get_asset_records([keys[m.migration_id] for m in applied])
    }
    for migration in chain:
        entry = entries.get(migration.migration_id)
        if entry is None:
            continue
        key = keys[migration.migration_id]
        state = state_of(states, migration.migration_id)
        if entry.status in APPLIED:
            applied_by = state.run_id or entry.run_id
            if runs.in_flight(entry.run_id) or runs.in_flight(applied_by):
                tick.waiting_for.append(migration.migration_id)
                continue
            record = records.get(key)
            last = record.last_materialization if record is not None else None
            mat = last.asset_materialization if last is not None else None
            if mat is not None and _text(mat.metadata, "metaxy/applied_by_run") == applied_by:
                continue
            tick.asset_events.append(_applied_event(key, migration, state, entry, applied_by, secrets))
            tick.asset_events.extend(  # the steps of this instance's runs recorded their own events
                events.feature_events(
                    migration,
                    [s for s in state.steps.values() if not runs.is_dagster_run(s.run_id)],
                    lambda feature: feature_keys.get(feature) or AssetKey(feature.split("/")),
                    store=store,
                    graph=graph,
                    count_rows=count_rows,
                    secrets=secrets,
                )
            )
        elif entry.status == ROLLED_BACK:
            if runs.in_flight(entry.run_id):
                tick.waiting_for.append(migration.migration_id)
                continue
            # plans (dry runs) observe the asset too: look for the rollback among the recent observations
            recent = instance.fetch_observations(key, limit=_RECENT_OBSERVATIONS).records
            if any(
                _text(r.asset_observation.metadata, "metaxy/rollback") == ROLLED_BACK  # type: ignore[union-attr]
                and entry.run_id in (r.run_id, _text(r.asset_observation.metadata, "metaxy/run_id"))  # type: ignore[union-attr]
                for r in recent
            ):
                continue
            tick.asset_events.append(_rolled_back_event(key, migration, entry, secrets))
            tick.asset_events.extend(
                events.feature_rollback_events(
                    migration.migration_id,
                    [(feature, hidden, None) for feature, hidden in sorted(entry.writes.items())],
                    lambda feature: feature_keys.get(feature) or AssetKey(feature.split("/")),
                    dry_run=False,
                    run_id=entry.run_id,
                    at=entry.at,
                )
            )
    if tick.waiting_for:
        tick.cursor = previous  # those runs' events are on the way: compare again next tick
    if not tick.asset_events:
        tick.skip_reason = (
            f"Dagster already shows every applied and rolled-back migration of {store.root_uri}"
            + (f" (waiting for the runs applying {', '.join(tick.waiting_for)})" if tick.waiting_for else "")
        )
    return tick


def catch_up_features(
    instance: DagsterInstance,
    key: AssetKey,
    migration: Migration,
    state: MigrationState,
    feature_key: Callable[[str], AssetKey],
    *,
    store: DeltaMetadataStore,
    graph: FeatureGraph | None = None,
    count_rows: bool = True,
    secrets: Sequence[str] = (),
) -> list[AssetMaterialization]:
    """The feature events of a migration applied outside this instance that Dagster has not seen yet.

    An apply run that finds a migration already applied (e.g. by the CLI) materializes its asset, which
    would hide that application from the history sensor; so the run reports the feature tables the other run
    wrote itself, unless Dagster already shows that application (its latest materialization names the same
    applying run).
    """
    record = instance.fetch_materializations(key, limit=1).records
    shown = record[0].asset_materialization.metadata if record else {}  # type: ignore[union-attr]
    if state.run_id and _text(shown, "metaxy/applied_by_run") == state.run_id:
        return []
    runs = _Runs(instance)
    return events.feature_events(
        migration,
        [s for s in state.steps.values() if not runs.is_dagster_run(s.run_id)],
        feature_key,
        store=store,
        graph=graph,
        count_rows=count_rows,
        secrets=secrets,
    )


def _applied_event(
    key: AssetKey,
    migration: Migration,
    state: MigrationState,
    entry: LogEntry,
    applied_by: str,
    secrets: Sequence[str],
) -> AssetMaterialization:
    metadata = events.materialization_metadata(migration, state, already_applied=False, secrets=secrets)
    metadata["metaxy/applied_by_run"] = applied_by
    metadata["metaxy/run_id"] = entry.run_id
    metadata["metaxy/applied_at"] = MetadataValue.timestamp(entry.at)
    metadata["metaxy/stamped"] = MetadataValue.bool(entry.status != str(EventStatus.COMPLETED))
    metadata["metaxy/recorded_from"] = "the store's migration log (applied outside this Dagster instance)"
    verb = "stamped as applied" if entry.status != str(EventStatus.COMPLETED) else "applied"
    return AssetMaterialization(
        asset_key=key,
        description=f"{migration.migration_id} {verb} by run {entry.run_id} at {entry.at.isoformat()}",
        metadata=metadata,
    )


def _rolled_back_event(
    key: AssetKey, migration: Migration, entry: LogEntry, secrets: Sequence[str]
) -> AssetObservation:
    return AssetObservation(
        asset_key=key,
        description=f"{migration.migration_id} rolled back by run {entry.run_id} at {entry.at.isoformat()}",
        metadata={
            "metaxy/rollback": ROLLED_BACK,
            "metaxy/run_id": entry.run_id,
            "metaxy/rolled_back_at": MetadataValue.timestamp(entry.at),
            "metaxy/note": redact(entry.note, list(secrets)),
            "metaxy/recorded_from": "the store's migration log",
        },
    )


def build_history_sensor(
    *,
    chain: MigrationChain,
    keys: Mapping[str, AssetKey],
    feature_keys: Mapping[str, AssetKey],
    name: str = DEFAULT_HISTORY_SENSOR_NAME,
    store_resource_key: str = STORE_RESOURCE_KEY,
    minimum_interval_seconds: int = 30,
    default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    count_rows: bool = True,
) -> SensorDefinition:
    """A sensor that keeps Dagster's view of migrations and feature tables in line with the store's log.

    It launches no runs: it reports runless materializations and observations (see the module docstring).
    It starts running by default, so a deployment converges without anyone turning it on.

    Example:
        >>> keys = {m.migration_id: translator.get_asset_key(m) for m in chain}
        >>> build_history_sensor(chain=chain, keys=keys, feature_keys={})
    """

    @sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        required_resource_keys={store_resource_key},
        description="Mirrors the store's migration log into Dagster: migrations applied, stamped or rolled "
        "back outside this instance (CLI, scripts, other code locations) show on their assets, with the rows "
        "each wrote on the feature assets. Launches no runs.",
    )
    def _history_sensor(context: SensorEvaluationContext) -> SensorResult:
        resource: MetaxyStoreResource = getattr(context.resources, store_resource_key)
        previous = HistoryCursor.parse(context.cursor, context.log)
        run = open_run(resource)
        with run.errors():
            graph = run.graph
            tick = evaluate_history_tick(
                run.store,
                chain,
                context.instance,
                keys=keys,
                feature_keys=feature_keys,
                previous=previous,
                graph=graph,
                count_rows=count_rows,
                secrets=run.secrets,
            )
        cursor = tick.cursor.serialize() if tick.cursor is not None else context.cursor
        if tick.skip_reason is not None:
            context.log.info(tick.skip_reason)
            return SensorResult(skip_reason=SkipReason(tick.skip_reason), cursor=cursor)
        context.log.info(f"reporting {len(tick.asset_events)} event(s) from the store's migration log")
        return SensorResult(asset_events=tick.asset_events, cursor=cursor)

    return _history_sensor


__all__ = [
    "DEFAULT_HISTORY_SENSOR_NAME",
    "HistoryCursor",
    "HistoryTick",
    "LogEntry",
    "build_history_sensor",
    "catch_up_features",
    "evaluate_history_tick",
    "latest_entries",
]
