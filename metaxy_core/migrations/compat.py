"""Metaxy 0.1.x shapes: the map from a 0.1.6 project's snapshot ids to this project's snapshot versions.

Metaxy 0.1.6 names snapshots by an 8-hex "project version" computed by its own hash; its migration files
(``from_project_version: 656e3f9f``) name those. ``metaxy migrations import-016`` rebuilds each of its
snapshots as this project's feature graph, pushes it, and writes the map in the migrations folder
(:data:`SNAPSHOT_IDS_FILE`, committed with the migrations). The loader then reads every migration's snapshot
versions through the map, so the 0.1.6 files apply unchanged; a 0.1.6 id without the map is reported with
the command that writes it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from metaxy_core.errors import FileError

#: the map's file name, in the migrations folder (not a migration: the loader only reads .yaml/.yml/.py)
SNAPSHOT_IDS_FILE = "metaxy016_snapshot_ids.json"
#: how Metaxy 0.1.6 spells a snapshot ("project version")
METAXY016_ID = re.compile(r"^[0-9a-f]{8}$")
#: the command that writes the map, named by errors about a missing one
IMPORT_COMMAND = "metaxy migrations import-016"
#: the migration fields that name snapshots
SNAPSHOT_FIELDS = ("from_snapshot_version", "to_snapshot_version", "snapshot_version")


def read_snapshot_ids(migrations_dir: Path) -> dict[str, str]:
    """The map {0.1.6 id: snapshot version} in ``migrations_dir`` (empty when there is none).

    Raises:
        FileError: the file exists but is not a JSON object of strings (naming it and the fix).
    """
    path = Path(migrations_dir) / SNAPSHOT_IDS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileError(path, f"cannot be read as JSON ({exc}); run `{IMPORT_COMMAND}` again") from None
    snapshots = data.get("snapshots") if isinstance(data, dict) else None
    if not isinstance(snapshots, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in snapshots.items()
    ):
        raise FileError(
            path, f'must hold {{"snapshots": {{"<0.1.6 id>": "<version>"}}}}; run `{IMPORT_COMMAND}` again'
        )
    return dict(snapshots)


def write_snapshot_ids(migrations_dir: Path, ids: dict[str, str], *, source: str) -> Path:
    """Write the map (merged with an existing one) and return its path."""
    path = Path(migrations_dir) / SNAPSHOT_IDS_FILE
    merged = {**read_snapshot_ids(migrations_dir), **ids}
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "about": f"Metaxy 0.1.6 snapshot ids -> this project's snapshot versions (`{IMPORT_COMMAND}`)",
        "source": source,
        "snapshots": dict(sorted(merged.items())),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def map_snapshot_ids(data: dict[str, object], ids: dict[str, str]) -> dict[str, object]:
    """A migration file's fields with every 0.1.6 snapshot id replaced by the snapshot version it maps to."""
    out = dict(data)
    for name in SNAPSHOT_FIELDS:
        value = out.get(name)
        if isinstance(value, str) and value in ids:
            out[name] = ids[value]
    return out


def unmapped_ids(data: dict[str, object], ids: dict[str, str]) -> list[str]:
    """0.1.6-looking snapshot ids the map does not cover (for the error that names the import command)."""
    return [
        value
        for name in SNAPSHOT_FIELDS
        if isinstance(value := data.get(name), str) and METAXY016_ID.fullmatch(value) and value not in ids
    ]
