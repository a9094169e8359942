"""A project for scale-out tests and benchmarks: a reconciliation with independent units in two layers.

``wide/raw`` (root, field ``frames``) feeds two independent features, ``wide/left`` and ``wide/right``;
``wide/below`` depends on ``wide/left``. Version 2 bumps the code version of ``left`` and ``right`` (and so
the version of ``below``): a migration from 1 to 2 reconciles ``left`` and ``right`` (layer 0, independent)
and then ``below`` (layer 1), each split into buckets of ``bucket_rows`` samples. Every downstream feature
has a user column, which reconciliation must keep.
"""

from __future__ import annotations

import os
import signal
import textwrap
import uuid
from pathlib import Path
from typing import Any, Literal

import polars as pl

from metaxy_core.graph import FeatureDep, FeatureGraph, FeatureSpec, FieldDep, FieldSpec
from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD
from metaxy_core.testing.migrations import write_migration

RAW, LEFT, RIGHT, BELOW = "wide/raw", "wide/left", "wide/right", "wide/below"
DOWNSTREAM = (LEFT, RIGHT, BELOW)
#: the environment variable the project's entrypoint reads its code version from (default 2)
VERSION_ENV = "METAXY_SCALEOUT_VERSION"
#: a file path: the first process of the project to reach a bulk commit creates it and SIGKILLs itself
KILL_ENV = "METAXY_SCALEOUT_KILL_MARKER"
MIGRATION_ID = "20250101_000000_wide_v1_to_v2"
#: the type of the projects' id column, ``sample_uid``
IdType = Literal["int", "string", "date", "datetime"]


def scaleout_specs(version: int) -> list[FeatureSpec]:
    """The four specs at code ``version`` (1 or 2)."""

    def child(key: str, parent: str, field: str, code: str) -> FeatureSpec:
        upstream = "frames" if parent == RAW else parent.rsplit("/", 1)[-1]
        return FeatureSpec(
            key=key,
            id_columns=["sample_uid"],
            deps=[FeatureDep(feature=parent)],
            fields=[
                FieldSpec(key=field, code_version=code, deps=[FieldDep(feature=parent, fields=[upstream])])
            ],
        )

    return [
        FeatureSpec(key=RAW, id_columns=["sample_uid"], fields=[FieldSpec(key="frames", code_version="1")]),
        child(LEFT, RAW, "left", str(version)),
        child(RIGHT, RAW, "right", str(version)),
        child(BELOW, LEFT, "below", "1"),
    ]


def declare_scaleout_features(version: int) -> FeatureGraph:
    """Add the features at ``version`` to the active graph (what the project's entrypoint does)."""
    graph = FeatureGraph.get_active()
    for spec in scaleout_specs(version):
        graph.add(spec)
    return graph


def install_fault_hooks() -> None:
    """What the project's entrypoint calls: with ``METAXY_SCALEOUT_KILL_MARKER`` set, the first process to
    reach a bulk commit (a worker, mid-unit: its bucket is computed, not committed) claims the marker file
    and SIGKILLs itself. Patches the public ``metaxy_core.store.bulk.append_frames``; the engine has no test
    paths."""
    marker = os.environ.get(KILL_ENV)
    if not marker:
        return
    from metaxy_core.store import bulk

    real = bulk.append_frames

    def append_frames(*args: Any, **kwargs: Any) -> Any:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    bulk.append_frames = append_frames


def scaleout_graph(version: int) -> FeatureGraph:
    """A fresh graph holding the features at ``version``."""
    graph = FeatureGraph()
    for spec in scaleout_specs(version):
        graph.add(spec)
    return graph


def seed_scaleout_store(
    store: DeltaMetadataStore, samples: int, *, chunk: int = 1_000_000, id_type: IdType = "int"
) -> None:
    """Write ``samples`` rows of every feature at version 1, all up to date (in chunks of ``chunk`` rows,
    each one commit per feature: several chunks give files clustered on the id, so range buckets).

    ``id_type`` is the type of ``sample_uid``: ``"int"`` (0, 1, ...), ``"string"`` (``"000000001"``...),
    ``"date"`` (1970-01-01 plus that many days) or ``"datetime"`` (microseconds after the epoch, UTC)."""
    graph = scaleout_graph(1)
    for start in range(0, samples, chunk):
        uid = pl.int_range(start, min(samples, start + chunk), dtype=pl.Int64, eager=True).alias("sample_uid")
        if id_type == "date":
            uid = uid.cast(pl.Int32).cast(pl.Date)
        elif id_type == "datetime":
            uid = uid.cast(pl.Datetime("us", "UTC"))
        elif id_type == "string":
            uid = uid.cast(pl.String).str.zfill(9)
        raw = pl.DataFrame([uid]).with_columns(
            pl.struct(frames=pl.format("frames-{}", "sample_uid")).alias(PROVENANCE_BY_FIELD)
        )
        store.write_metadata(RAW, raw, graph=graph)
        for key in (LEFT, RIGHT, BELOW):
            added = store.resolve_update(key, graph=graph).collect().added
            column = key.rsplit("/", 1)[-1] + "_value"
            value = pl.col("sample_uid").to_physical().cast(pl.Int64) * 2
            rows = pl.DataFrame(added).with_columns(value.alias(column))
            store.write_metadata(key, rows, graph=graph)


def write_scaleout_project(
    root: Path,
    *,
    samples: int = 400,
    bucket_rows: int = 50,
    seed_chunk: int = 1_000_000,
    id_type: IdType = "int",
) -> Path:
    """Write a project under ``root``: ``metaxy.toml`` (``bucket_rows``), the entrypoint (code at version 2
    unless ``METAXY_SCALEOUT_VERSION`` says otherwise), both snapshots pushed, ``samples`` rows at version 1
    (see :func:`seed_scaleout_store` for ``seed_chunk`` and ``id_type``) and the reconciliation migration
    1 -> 2. Returns the config file."""
    root.mkdir(parents=True, exist_ok=True)
    module = f"scaleout_features_{uuid.uuid4().hex[:10]}"
    (root / f"{module}.py").write_text(
        "import os\n\nfrom metaxy_core.testing import scaleout\n\n"
        "scaleout.declare_scaleout_features(int(os.environ.get(scaleout.VERSION_ENV, '2')))\n"
        "scaleout.install_fault_hooks()\n"
    )
    config = root / "metaxy.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            project = "wide"
            entrypoints = ["{module}"]
            migrations_dir = "migrations"
            bucket_rows = {bucket_rows}
            [store]
            root = "store"
            """
        )
    )
    store = DeltaMetadataStore(str(root / "store"), project="wide")
    old, new = scaleout_graph(1), scaleout_graph(2)
    store.push_snapshot(old)
    seed_scaleout_store(store, samples, chunk=seed_chunk, id_type=id_type)
    store.push_snapshot(new)
    write_migration(root / "migrations", MIGRATION_ID, from_snapshot=old, to_snapshot=new)
    return config


__all__ = [
    "BELOW",
    "DOWNSTREAM",
    "KILL_ENV",
    "LEFT",
    "MIGRATION_ID",
    "RAW",
    "RIGHT",
    "VERSION_ENV",
    "declare_scaleout_features",
    "install_fault_hooks",
    "scaleout_graph",
    "scaleout_specs",
    "seed_scaleout_store",
    "write_scaleout_project",
]


#: columns that differ between two runs that computed the same rows
VOLATILE = ["metaxy_created_at", "metaxy_write_id", "metaxy_commit_order"]


def latest_views(config: Path) -> dict[str, pl.DataFrame]:
    """Every downstream feature's latest view at the new version, without timestamps, write ids and order
    (what two runs that did the same work must agree on)."""
    from metaxy_core.config import MetaxyConfig

    store = MetaxyConfig.load(config).get_store()
    graph = scaleout_graph(2)
    return {
        key: store.read_metadata(key, graph=graph).collect().drop(VOLATILE, strict=False).sort("sample_uid")
        for key in DOWNSTREAM
    }


def data_commits(config: Path) -> dict[str, int]:
    """Appends to each downstream feature's table (seeding made one; every carried bucket makes one more)."""
    from deltalake import DeltaTable

    from metaxy_core.config import MetaxyConfig

    store = MetaxyConfig.load(config).get_store()
    return {
        key: sum(
            1
            for h in DeltaTable(store.table_uri(key)).history()
            if h.get("operation") in ("WRITE", "CREATE TABLE")
        )
        for key in DOWNSTREAM
    }
