"""Helpers shared by the reliability tests: a seeded project on disk, the real CLI in a subprocess, store
comparisons.

A *project* is a folder with ``metaxy.toml``, ``relfeatures.py`` (the graph at code version 2),
``relops.py`` and ``.metaxy/migrations/``; its store (``store/`` or an S3 prefix) holds version-1 rows of
four features and both pushed snapshots, so ``metaxy migrations apply`` has real work to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations import progress
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir
from metaxy_core.store.provenance import (
    COMMIT_ORDER,
    CREATED_AT,
    FEATURE_VERSION,
    PROVENANCE_BY_FIELD,
    WRITE_ID,
)

from .fixture_features import CAP, EMB, JOINT, KEYS, RAW, build_graph

HERE = Path(__file__).resolve().parent
PROJECT = "rel"
N_ROWS = 600
MIGRATION_ID = "20250101_000000_bump"
MIGRATION_FILE = f"{MIGRATION_ID}.yaml"
#: the steps of the standard two-operation migration: (operation index, feature)
STEPS = {(0, CAP), (0, EMB), (1, JOINT)}
OPS_YAML = """\
  - type: relops.SmallBatchReconciliation
    id: reconcile_upstream
    features: [video/cap, video/emb]
    batch_rows: {batch}
    sleep_s: {sleep}
  - type: relops.SmallBatchReconciliation
    id: reconcile_joint
    features: [video/joint]
    batch_rows: {batch}
    sleep_s: {sleep}
"""

G1 = build_graph("1")
G2 = build_graph("2")


# ----------------------------------------------------------------------------------------- processes
def metaxy_cmd() -> list[str]:
    """The installed ``metaxy`` console script (what users run)."""
    script = Path(sys.executable).with_name("metaxy")
    return [str(script)] if script.exists() else [sys.executable, "-m", "metaxy_core.cli.app"]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without METAXY_*/AWS_* settings (they would leak into the child)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAXY_", "AWS_"))}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "REL_CODE_VERSION": "2",
            "COLUMNS": "250",
            "NO_COLOR": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
    )
    env.update(extra or {})
    return env


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``metaxy <args>`` in ``cwd``; stdout and stderr captured as text."""
    return subprocess.run(
        metaxy_cmd() + args,
        cwd=cwd,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, *, hook: bool = False
) -> subprocess.Popen[str]:
    """Start ``metaxy <args>`` without waiting; ``hook`` runs it under ``killhook.py`` (kill/host
    injection)."""
    cmd = [sys.executable, str(HERE / "killhook.py"), *args] if hook else metaxy_cmd() + args
    return subprocess.Popen(
        cmd, cwd=cwd, env=clean_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# ------------------------------------------------------------------------------------------ projects
def migration_yaml(
    *,
    batch: int = 40,
    sleep: float = 0.0,
    ops: str | None = None,
    migration_id: str = MIGRATION_ID,
    parent: str = "initial",
) -> str:
    return (
        f"migration_id: {migration_id}\n"
        "created_at: '2025-01-01T00:00:00+00:00'\n"
        f"parent: {parent}\n"
        f"from_snapshot_version: '{G1.snapshot_version}'\n"
        f"to_snapshot_version: '{G2.snapshot_version}'\n"
        "ops:\n" + (ops if ops is not None else OPS_YAML.format(batch=batch, sleep=sleep))
    )


def write_project(
    directory: Path,
    *,
    root: str = "store",
    storage_options: dict[str, str] | None = None,
    migration: str | None = None,
    extra_toml: str = "",
) -> Path:
    """Write the project files (not the store) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    toml = f'project = "{PROJECT}"\nentrypoints = ["relfeatures"]\n{extra_toml}[store]\nroot = "{root}"\n'
    if storage_options:
        toml += "[store.storage_options]\n" + "".join(f'{k} = "{v}"\n' for k, v in storage_options.items())
    (directory / "metaxy.toml").write_text(toml)
    shutil.copy(HERE / "fixture_features.py", directory / "relfeatures.py")
    shutil.copy(HERE / "fixture_ops.py", directory / "relops.py")
    migrations = directory / ".metaxy" / "migrations"
    migrations.mkdir(parents=True, exist_ok=True)
    if migration is not None:
        (migrations / MIGRATION_FILE).write_text(migration)
        # Like `metaxy migrations generate`: the snapshots the migration names travel with the files (Dagster
        # reads them from there, never from the store).
        files = SnapshotFiles(snapshots_dir(migrations))
        for graph in (G1, G2):
            files.write(graph)
    return directory


def raw_rows(n: int = N_ROWS, start: int = 0) -> pl.DataFrame:
    i = pl.int_range(start, start + n, eager=True)
    uid = "s" + i.cast(pl.String).str.zfill(6)
    return pl.DataFrame(
        {
            "sample_uid": uid,
            "path": "s3://videos/" + uid + ".mp4",
            PROVENANCE_BY_FIELD: pl.struct(frames="f" + uid, audio="a" + uid, eager=True),
        }
    )


def seed_store(store: DeltaMetadataStore, n: int = N_ROWS) -> None:
    """Version-1 rows of every feature, snapshot 1 pushed, then snapshot 2 pushed (the deployment)."""
    store.write_metadata(RAW, raw_rows(n), graph=G1)
    users = {
        EMB: pl.lit(768).alias("dim"),
        CAP: pl.lit("a caption").alias("text"),
        JOINT: (pl.col("sample_uid").str.slice(1).cast(pl.Int64) / 7).alias("score"),
    }
    for key in (EMB, CAP, JOINT):
        added = store.resolve_update(key, graph=G1).added
        store.write_metadata(key, added.with_columns(users[key]), graph=G1)
    store.push_snapshot(G1)
    store.push_snapshot(G2)


def make_seeded_project(directory: Path, *, migration: str | None = None) -> Path:
    write_project(directory, migration=migration if migration is not None else migration_yaml())
    seed_store(DeltaMetadataStore(directory / "store", project=PROJECT))
    return directory


def copy_project(template: Path, target: Path) -> Path:
    shutil.copytree(template, target, symlinks=True)
    return target


# ------------------------------------------------------------------------------------------ checking
def store_files(root: Path) -> dict[str, int]:
    """Every file under a local store root with its size: equal before/after means nothing was written."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def table_versions(root: Path) -> dict[str, int]:
    """Delta version of every table (feature and system) under a local store root."""
    out = {}
    for log in sorted(root.rglob("_delta_log")):
        out[str(log.parent.relative_to(root))] = DeltaTable(str(log.parent)).version()
    return out


def latest_views(store: DeltaMetadataStore, graph: Any = None) -> dict[str, pl.DataFrame]:
    """Latest row per sample of every feature (current version of ``graph``), without time, write and order
    stamps (they differ between runs that wrote the same rows)."""
    graph = graph or G2
    out = {}
    for key in KEYS:
        df = store.read_metadata(key, graph=graph).collect()
        out[key] = df.drop(CREATED_AT, WRITE_ID, COMMIT_ORDER).sort("sample_uid")
    return out


def assert_frames_equal(got: dict[str, pl.DataFrame], want: dict[str, pl.DataFrame]) -> None:
    from polars.testing import assert_frame_equal

    assert set(got) == set(want)
    for key, expected in want.items():
        frame = got[key]
        assert frame.height == expected.height, f"{key}: {frame.height} rows, expected {expected.height}"
        assert_frame_equal(frame.select(sorted(frame.columns)), expected.select(sorted(expected.columns)))


def assert_no_duplicates(store: DeltaMetadataStore, views: dict[str, pl.DataFrame]) -> None:
    for key, df in views.items():
        assert df["sample_uid"].n_unique() == df.height, f"{key}: duplicate ids in the latest view"
    for key in (EMB, CAP, JOINT):  # reconciliation writes each sample once at the new version
        hist = (
            store.read_metadata(key, include_history=True, graph=G2)
            .filter(pl.col(FEATURE_VERSION) == G2.feature_version(key))
            .collect()
        )
        assert hist["sample_uid"].n_unique() == hist.height, f"{key}: a sample was written twice at v2"


def assert_log_consistent(store: DeltaMetadataStore, steps: set[tuple[int, str]] = STEPS) -> None:
    """Completed once, every step done exactly once, nothing failed, the lock free."""
    from metaxy_core.migrations.lock import StoreLock

    events = progress.read_events(store, PROJECT).filter(pl.col("migration_id") == MIGRATION_ID)
    level = events.filter(pl.col("op_index") == progress.MIGRATION_LEVEL)
    assert level.filter(pl.col("status") == progress.COMPLETED).height == 1
    assert level["status"][-1] == progress.COMPLETED
    assert events.filter(pl.col("status") == progress.FAILED).height == 0
    done = events.filter(pl.col("status").is_in(list(progress.STEP_DONE)) & (pl.col("op_index") >= 0))
    keys = [(r["op_index"], r["feature_key"]) for r in done.iter_rows(named=True)]
    assert sorted(keys) == sorted(steps), f"step events {keys} != {sorted(steps)}"
    state = progress.read_states(store, PROJECT)[MIGRATION_ID]
    assert state.status == progress.COMPLETED and all(state.step_done(i, f) for i, f in steps)
    assert StoreLock(store, "checker").holder() is None


def output(proc: subprocess.CompletedProcess[str] | Any) -> str:
    return f"{proc.stdout}\n{proc.stderr}"
