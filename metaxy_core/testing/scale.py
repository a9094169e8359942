"""A project at scale, for the Dagster load benchmark and test: many features, a long chain of migrations.

``N`` features form a binary tree (``scale/f0`` is the root, ``scale/f<i>`` depends on ``scale/f<(i-1)//2>``),
and migration ``i`` bumps the code version of feature ``i``, so the chain walks through ``M + 1`` snapshots,
each with its snapshot file beside the migrations, exactly as ``metaxy migrations generate`` leaves them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from metaxy_core.graph import FeatureDep, FeatureGraph, FeatureSpec, FieldDep, FieldSpec
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir
from metaxy_core.testing.migrations import write_migration

PREFIX = "scale"


def scale_specs(features: int, bumped: int) -> list[FeatureSpec]:
    """The specs of the tree of ``features`` features, the first ``bumped`` of them at code version 2."""
    specs = []
    for i in range(features):
        parent = f"{PREFIX}/f{(i - 1) // 2}" if i else None
        specs.append(
            FeatureSpec(
                key=f"{PREFIX}/f{i}",
                id_columns=["sample_uid"],
                deps=[FeatureDep(feature=parent)] if parent else [],
                fields=[
                    FieldSpec(
                        key="value",
                        code_version="2" if i < bumped else "1",
                        deps=[FieldDep(feature=parent, fields=["value"])] if parent else None,
                    )
                ],
            )
        )
    return specs


def declare_scale_features(features: int, bumped: int) -> FeatureGraph:
    """Add the tree to the active graph (what the scale project's entrypoint module does)."""
    graph = FeatureGraph.get_active()
    for spec in scale_specs(features, bumped):
        graph.add(spec)
    return graph


def write_scale_project(root: Path, *, features: int = 200, migrations: int = 200) -> Path:
    """Write ``metaxy.toml``, the entrypoint, ``migrations`` diff migrations and every snapshot file under
    ``root``; return the config file. The code is at the last snapshot (every migration's feature bumped)."""
    if migrations > features:
        raise ValueError("each migration bumps one feature: migrations <= features")
    root.mkdir(parents=True, exist_ok=True)
    module = f"scale_features_{features}_{migrations}"
    (root / f"{module}.py").write_text(
        "from metaxy_core.testing.scale import declare_scale_features\n\n"
        f"declare_scale_features({features}, bumped={migrations})\n"
    )
    config = root / "metaxy.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            project = "scale"
            entrypoints = ["{module}"]
            migrations_dir = "migrations"
            [store]
            root = "store"
            """
        )
    )
    graphs = []
    for bumped in range(migrations + 1):
        graph = FeatureGraph()
        for spec in scale_specs(features, bumped):
            graph.add(spec)
        graphs.append(graph)
    files = SnapshotFiles(snapshots_dir(root / "migrations"))
    for graph in graphs:
        files.write(graph)
    parent = "initial"
    for i in range(migrations):
        mid = f"2025{i // 28 + 1:02d}{i % 28 + 1:02d}_000000_bump_f{i}"
        write_migration(  # versions, not graphs: the snapshot files are written above, once each
            root / "migrations",
            mid,
            parent=parent,
            from_snapshot=graphs[i].snapshot_version,
            to_snapshot=graphs[i + 1].snapshot_version,
        )
        parent = mid
    return config


__all__ = ["declare_scale_features", "scale_specs", "write_scale_project"]
