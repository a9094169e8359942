"""System tables kept next to the feature tables, under ``<root>/_metaxy_system/``.

* ``snapshots``: every pushed graph snapshot (project, version, time, the snapshot as JSON) so an old graph
  can be rebuilt without the code that declared it;
* ``retracted_writes``: write ids hidden from reads (rollback), append-only so nothing is ever lost.

The migration log and the apply lock live in :mod:`metaxy_core.migrations.progress` and
:mod:`metaxy_core.migrations.lock`; they use the same helpers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from metaxy_core.errors import SnapshotNotFoundError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.store import _io

if TYPE_CHECKING:
    from metaxy_core.store.delta import DeltaMetadataStore

SNAPSHOTS = "snapshots"
RETRACTED = "retracted_writes"


@dataclass(frozen=True)
class SnapshotRecord:
    """A pushed snapshot."""

    project: str
    snapshot_version: str
    pushed_at: datetime
    feature_count: int
    snapshot: dict[str, Any]


@dataclass(frozen=True)
class PushResult:
    snapshot_version: str
    already_pushed: bool
    previous_version: str | None


def read_system(store: DeltaMetadataStore, name: str) -> pl.DataFrame | None:
    uri = store.system_table_uri(name)
    lf = _io.scan(uri, store.storage_options)
    return None if lf is None else _io.collect(lf, uri, store.storage_options)


def append_system(store: DeltaMetadataStore, name: str, rows: pl.DataFrame) -> None:
    _io.append(store.system_table_uri(name), rows, store.storage_options)


def _snapshot_rows(store: DeltaMetadataStore, project: str) -> pl.DataFrame | None:
    df = read_system(store, SNAPSHOTS)
    if df is None:
        return None
    df = df.filter(pl.col("project") == project).sort("pushed_at")
    return df if df.height else None


def _record(row: dict[str, Any]) -> SnapshotRecord:
    return SnapshotRecord(
        project=row["project"],
        snapshot_version=row["snapshot_version"],
        pushed_at=row["pushed_at"],
        feature_count=row["feature_count"],
        snapshot=json.loads(row["snapshot"]),
    )


def push_snapshot(store: DeltaMetadataStore, graph: FeatureGraph, *, project: str) -> PushResult:
    """Record ``graph`` as the deployed snapshot unless it already is the latest one (idempotent)."""
    latest = latest_snapshot(store, project=project)
    version = graph.snapshot_version
    if latest is not None and latest.snapshot_version == version:
        return PushResult(
            version, already_pushed=True, previous_version=_previous_version(store, project, version)
        )
    row = pl.DataFrame(
        {
            "project": [project],
            "snapshot_version": [version],
            "pushed_at": [datetime.now(UTC)],
            "feature_count": [len(graph)],
            "snapshot": [json.dumps(graph.to_snapshot(), sort_keys=True)],
        },
        schema_overrides={"pushed_at": pl.Datetime("us", "UTC"), "feature_count": pl.Int64},
    )
    append_system(store, SNAPSHOTS, row)
    return PushResult(
        version, already_pushed=False, previous_version=latest.snapshot_version if latest else None
    )


def _previous_version(store: DeltaMetadataStore, project: str, version: str) -> str | None:
    df = _snapshot_rows(store, project)
    if df is None:
        return None
    others = df.filter(pl.col("snapshot_version") != version)
    return others["snapshot_version"][-1] if others.height else None


def latest_snapshot(store: DeltaMetadataStore, *, project: str) -> SnapshotRecord | None:
    df = _snapshot_rows(store, project)
    return None if df is None else _record(df.row(-1, named=True))


def list_snapshots(store: DeltaMetadataStore, *, project: str) -> list[SnapshotRecord]:
    df = _snapshot_rows(store, project)
    return [] if df is None else [_record(r) for r in df.iter_rows(named=True)]


def get_snapshot(store: DeltaMetadataStore, snapshot_version: str, *, project: str) -> SnapshotRecord:
    df = _snapshot_rows(store, project)
    match = None if df is None else df.filter(pl.col("snapshot_version") == snapshot_version)
    if match is None or match.height == 0:
        known = [] if df is None else df["snapshot_version"].unique(maintain_order=True).to_list()
        raise SnapshotNotFoundError(
            f"snapshot {snapshot_version} was never pushed to {store.root_uri} for project {project!r} "
            f"(pushed: {', '.join(known) or 'none'}); run `metaxy push` from the code that defines it"
        )
    return _record(match.row(-1, named=True))


def load_snapshot_graph(store: DeltaMetadataStore, snapshot_version: str, *, project: str) -> FeatureGraph:
    return FeatureGraph.from_snapshot(get_snapshot(store, snapshot_version, project=project).snapshot)


def retracted_write_ids(store: DeltaMetadataStore, key: FeatureKey) -> list[str]:
    """Write ids hidden from reads for ``key``: the newest retract/restore event per write id wins."""
    df = read_system(store, RETRACTED)
    if df is None:
        return []
    latest = (
        df.filter(pl.col("feature_key") == key.to_string())
        .sort("at")
        .unique(subset=["write_id"], keep="last")
        .filter(pl.col("retracted"))
    )
    return latest["write_id"].to_list()


def retract_writes(
    store: DeltaMetadataStore, key: FeatureKey, write_ids: list[str], *, retracted: bool, reason: str
) -> None:
    """Hide (``retracted=True``) or show again the rows written under ``write_ids``."""
    if not write_ids:
        return
    now = datetime.now(UTC)
    rows = pl.DataFrame(
        {
            "feature_key": [key.to_string()] * len(write_ids),
            "write_id": write_ids,
            "retracted": [retracted] * len(write_ids),
            "reason": [reason] * len(write_ids),
            "at": [now] * len(write_ids),
        },
        schema_overrides={"at": pl.Datetime("us", "UTC")},
    )
    append_system(store, RETRACTED, rows)
