"""Migration files written the way ``metaxy migrations generate`` would, for tests that need a chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from metaxy_core.graph import FeatureGraph
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir

RECONCILE = {"type": "metaxy_core.migrations.ops.DataVersionReconciliation"}


def _snapshot(version: FeatureGraph | str) -> str:
    return version.snapshot_version if isinstance(version, FeatureGraph) else version


def write_migration(
    folder: Path,
    migration_id: str,
    *,
    parent: str = "initial",
    from_snapshot: FeatureGraph | str | None = None,
    to_snapshot: FeatureGraph | str | None = None,
    ops: list[dict[str, Any]] | None = None,
    created_at: str = "2025-01-01T00:00:00+00:00",
    **extra: Any,
) -> Path:
    """Write ``<folder>/<migration_id>.yaml`` and return its path.

    Args:
        folder: the migrations folder (created when missing).
        migration_id: ``YYYYMMDD_HHMMSS_description``; also the file name.
        parent: the previous migration's id, or ``initial``.
        from_snapshot: the graph (or snapshot version) the migration starts from; None for a migration
            without snapshots. A graph's snapshot file is written beside the folder, as ``generate`` does.
        to_snapshot: the graph (or snapshot version) it ends at.
        ops: operations as they appear in YAML; one data-version reconciliation by default.
        created_at: ISO timestamp recorded in the file.
        **extra: further top-level keys (``description``, ``kind``, ...), written after ``ops``.
    """
    data: dict[str, Any] = {"migration_id": migration_id, "created_at": created_at, "parent": parent}
    if from_snapshot is not None:
        data["from_snapshot_version"] = _snapshot(from_snapshot)
    if to_snapshot is not None:
        data["to_snapshot_version"] = _snapshot(to_snapshot)
    data["ops"] = ops if ops is not None else [dict(RECONCILE)]
    data.update(extra)
    folder.mkdir(parents=True, exist_ok=True)
    # Like `generate`: the snapshots given as graphs travel with the file (`snapshots/` beside `folder`).
    files = SnapshotFiles(snapshots_dir(folder))
    for graph in (from_snapshot, to_snapshot):
        if isinstance(graph, FeatureGraph):
            files.write(graph)
    path = folder / f"{migration_id}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
