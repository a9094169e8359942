"""Every example migration end to end, through Dagster, against real local servers (moto S3, PostgreSQL).

For each migration in chain order: a dry run (writes nothing: every Delta table version unchanged, nothing
recorded), then the apply, then the rows it wrote are checked against the sources (the old rows, S3 objects,
PostgreSQL rows). After the chain, ``resolve_update`` finds nothing to do for any downstream feature.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from dagster import AssetKey, DagsterInstance
from example_project.definitions import build_definitions
from example_project.run import feature_changes, run_job, table_versions
from example_testkit import CHAIN, EXAMPLE_DIR, EXAMPLE_GRAPH, N_TEST, WRITES

from example_project import features, generate
from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.migrations import progress
from metaxy_core.store.delta import SYSTEM_DIR
from metaxy_dagster import APPLY_JOB_NAME, PLAN_JOB_NAME, run_config_for

VIDEOS = {v.sample_uid: v for v in generate.videos(N_TEST)}
USER_COLUMNS = {
    "video/audio": ["sample_rate", "channels", "audio_duration_s"],
    "text/transcript": ["text", "language", "n_words"],
    "video/frames": ["n_frames", "frame_width", "frame_height"],
    "video/embeddings": ["model", "clip"],
}


def all_table_versions(store: DeltaMetadataStore, graph: FeatureGraph) -> dict[str, int | None]:
    """Delta versions of every feature table and every system table (progress log, lock, snapshots)."""
    versions = {f"feature:{k}": v for k, v in table_versions(store, graph).items()}
    system = Path(store.root_uri) / SYSTEM_DIR
    for table in sorted(p.name for p in system.iterdir()) if system.exists() else []:
        versions[f"system:{table}"] = store.table_version(system=table)
    return versions


def materialize(defs: Any, migration_id: str, *, dry_run: bool, instance: DagsterInstance) -> Any:
    """Run the apply job on one migration's asset (what "Materialize" on that asset in the UI does)."""
    job = defs.resolve_job_def(APPLY_JOB_NAME)
    return job.execute_in_process(
        run_config=run_config_for(dry_run=dry_run),
        instance=instance,
        raise_on_error=False,
        asset_selection=[AssetKey(["metaxy", "migrations", migration_id])],
    )


def plan_rows(result: Any) -> dict[str, int]:
    rows: dict[str, int] = {}
    for event in result.get_asset_observation_events():
        table = event.asset_observation_data.asset_observation.metadata.get("metaxy/steps")
        for record in table.value.records if table is not None else []:  # feature assets: no step table
            rows[record.data["feature"]] = rows.get(record.data["feature"], 0) + int(record.data["rows"])
    return rows


def written_rows(store: DeltaMetadataStore, project: str, migration_id: str) -> dict[str, int]:
    state = progress.read_states(store, project)[migration_id]
    assert state.status == progress.COMPLETED
    out: dict[str, int] = {}
    for step in state.steps.values():
        for feature, n in step.writes.items():
            out[feature] = out.get(feature, 0) + n
    return out


def current(store: DeltaMetadataStore, feature: str, graph: FeatureGraph | None = None) -> pl.DataFrame:
    return store.read_metadata(feature, graph=graph).collect().sort("sample_uid")


# ------------------------------------------------------------------------------ what each migration wrote
def check_audio_refactor(store: DeltaMetadataStore, old: dict[str, pl.DataFrame]) -> None:
    v2 = features.graph_at("v2")
    for feature in ("video/audio", "text/transcript"):
        rows = current(store, feature, v2)
        assert rows.height == N_TEST
        assert rows["metaxy_snapshot_version"].unique().to_list() == [v2.snapshot_version]
        assert rows["metaxy_feature_version"].unique().to_list() == [EXAMPLE_GRAPH.feature_version(feature)]
        # user columns carried over unchanged, provenance recomputed
        cols = ["sample_uid", *USER_COLUMNS[feature]]
        assert rows.select(cols).equals(old[feature].select(cols))
        assert (rows["metaxy_provenance"] != old[feature]["metaxy_provenance"]).all()


def check_thumbnails_and_embeddings(store: DeltaMetadataStore, old: dict[str, pl.DataFrame]) -> None:
    v3 = features.graph_at("v3")
    thumbs = current(store, "video/thumbnails", v3)
    assert thumbs["sample_uid"].to_list() == sorted(VIDEOS)
    for row in thumbs.iter_rows(named=True):
        video = VIDEOS[row["sample_uid"]]
        assert row["thumbnail_uri"] == f"s3://{generate.MEDIA_BUCKET}/{video.thumbnail_key}"
        assert row["thumbnail_bytes"] == len(video.thumbnail())
        assert row["thumbnail_etag"] == hashlib.md5(video.thumbnail()).hexdigest()
    assert thumbs["metaxy_snapshot_version"].unique().to_list() == [v3.snapshot_version]
    emb = current(store, "video/embeddings", v3)
    assert emb["metaxy_feature_version"].unique().to_list() == [v3.feature_version("video/embeddings")]
    assert emb.select("sample_uid", "model", "clip").equals(
        old["video/embeddings"].select("sample_uid", "model", "clip")
    )


def check_frame_decoder(store: DeltaMetadataStore, old: dict[str, pl.DataFrame]) -> None:
    for feature in ("video/frames", "video/embeddings", "video/thumbnails"):
        rows = current(store, feature)
        assert rows.height == N_TEST
        assert rows["metaxy_snapshot_version"].unique().to_list() == [EXAMPLE_GRAPH.snapshot_version]
    cols = ["sample_uid", *USER_COLUMNS["video/frames"]]
    assert current(store, "video/frames").select(cols).equals(old["video/frames"].select(cols))


def check_video_files(store: DeltaMetadataStore, old: dict[str, pl.DataFrame]) -> None:
    files = current(store, "video/files")
    assert files["sample_uid"].to_list() == sorted(VIDEOS)  # no deleted videos, one row per sample
    for row in files.iter_rows(named=True):
        video = VIDEOS[row["sample_uid"]]
        assert (
            row["object_uri"] == f"s3://{generate.MEDIA_BUCKET}/{video.key}"
        )  # never the 0-byte placeholder
        assert row["size_bytes"] == video.attrs["size_bytes"] > 0
        assert row["etag"] == hashlib.md5(video.body()).hexdigest()
    # provenance joined from the store: the same as resolve_update expects for video/raw's current rows
    assert store.resolve_update("video/files").counts() == {"added": 0, "changed": 0, "removed": 0}


def check_annotations(store: DeltaMetadataStore, old: dict[str, pl.DataFrame]) -> None:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        source = conn.execute(
            f"SELECT sample_uid, label, annotator, confidence FROM {generate.ANNOTATIONS_TABLE}"
            " ORDER BY sample_uid"
        ).fetchall()
    expected = pl.DataFrame(source, schema=["sample_uid", "label", "annotator", "confidence"], orient="row")
    expected = expected.filter(pl.col("sample_uid").is_in(list(VIDEOS)))
    got = current(store, "video/annotations").select("sample_uid", "label", "annotator", "confidence")
    assert got.equals(expected)


CHECKS = [
    check_audio_refactor,
    check_thumbnails_and_embeddings,
    check_frame_decoder,
    check_video_files,
    check_annotations,
]
#: features whose dry-run count is exact while the migration's parent is applied (the other features are
#: computed from an upstream written by an earlier operation of the same migration: 0 in a dry run)
EXACT_PLAN = {
    CHAIN[0][0]: {"video/audio"},
    CHAIN[1][0]: {"video/thumbnails", "video/embeddings"},
    CHAIN[2][0]: {"video/frames"},
    CHAIN[3][0]: {"*"},
    CHAIN[4][0]: {"*"},
}


def test_every_migration_end_to_end_through_dagster(seeded) -> None:
    store, project = seeded.store, seeded.config.project
    defs = build_definitions(seeded.config)
    instance = DagsterInstance.ephemeral()
    v1 = features.graph_at("v1")
    old = {f: current(store, f, v1) for f in USER_COLUMNS}
    for (migration_id, *_), check in zip(CHAIN, CHECKS, strict=True):
        before = all_table_versions(store, EXAMPLE_GRAPH)
        planned = materialize(defs, migration_id, dry_run=True, instance=instance)
        assert planned.success, migration_id
        assert all_table_versions(store, EXAMPLE_GRAPH) == before, (
            f"dry run of {migration_id} wrote something"
        )
        assert migration_id not in progress.read_states(store, project)
        assert not planned.get_asset_materialization_events()
        plan = plan_rows(planned)

        applied = materialize(defs, migration_id, dry_run=False, instance=instance)
        assert applied.success, migration_id
        wrote = written_rows(store, project, migration_id)
        assert wrote == {f: N_TEST for f in WRITES[migration_id]}, migration_id
        for feature in EXACT_PLAN[migration_id]:
            expected = N_TEST if feature == "*" else wrote[feature]
            assert plan[feature] == expected, (migration_id, feature, plan)
        evaluations = applied.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations), migration_id
        check(store, old)

    for key in EXAMPLE_GRAPH.topological_order():
        if EXAMPLE_GRAPH.spec(key).deps:
            assert store.resolve_update(key).counts() == {"added": 0, "changed": 0, "removed": 0}, key


def test_plan_job_then_apply_job_like_the_main_job(seeded) -> None:
    store, project = seeded.store, seeded.config.project
    defs = build_definitions(seeded.config)
    instance = DagsterInstance.ephemeral()
    before = all_table_versions(store, EXAMPLE_GRAPH)
    plan = run_job(defs, PLAN_JOB_NAME, dry_run=True, instance=instance)
    assert plan.success, plan.failure
    assert all_table_versions(store, EXAMPLE_GRAPH) == before
    assert {r.migration_id for r in plan.plan} == {c[0] for c in CHAIN}
    assert progress.read_states(store, project) == {}

    applied = run_job(defs, APPLY_JOB_NAME, dry_run=False, instance=instance)
    assert applied.success, applied.failure
    assert len(applied.checks) == len(CHAIN) and all(applied.checks.values())
    changes = {c.feature: c for c in feature_changes(store, EXAMPLE_GRAPH, features.graph_at("v1"), project)}
    for name, change in changes.items():
        assert change.rows_at_new_version == N_TEST, name
        if change.pending is not None:
            assert change.pending == {"added": 0, "changed": 0, "removed": 0}, name
    assert changes["video/raw"].rows_written_by_migrations == 0  # the root never moved

    # Applying again is a no-op; planning again says everything is applied.
    features_before = table_versions(store, EXAMPLE_GRAPH)
    again = run_job(defs, APPLY_JOB_NAME, dry_run=False, instance=instance)
    assert again.success and table_versions(store, EXAMPLE_GRAPH) == features_before
    replan = run_job(defs, PLAN_JOB_NAME, dry_run=True, instance=instance)
    assert replan.success and all(r.rows == 0 for r in replan.plan)


def test_database_problems_stop_the_migration_before_any_work(
    seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apply-phase validation: a wrong DATABASE_URL fails the op with the validator's message; no writes."""
    store, project = seeded.store, seeded.config.project
    defs = build_definitions(seeded.config)
    instance = DagsterInstance.ephemeral()
    for migration_id, *_ in CHAIN[:-1]:
        assert materialize(defs, migration_id, dry_run=False, instance=instance).success
    good = os.environ["DATABASE_URL"]
    monkeypatch.setenv("DATABASE_URL", good.replace("/postgres?", "/no_such_db?"))
    before = table_versions(store, EXAMPLE_GRAPH)
    result = materialize(defs, CHAIN[-1][0], dry_run=False, instance=instance)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "validation failed before any work" in message and "cannot connect to DATABASE_URL" in message
    assert "no_such_db" in message  # the server's own explanation is kept
    assert table_versions(store, EXAMPLE_GRAPH) == before
    assert progress.read_states(store, project).get(CHAIN[-1][0]) is None or (
        progress.read_states(store, project)[CHAIN[-1][0]].status != progress.COMPLETED
    )
    # Fixed configuration: the same run succeeds.
    monkeypatch.setenv("DATABASE_URL", good)
    assert materialize(defs, CHAIN[-1][0], dry_run=False, instance=instance).success


def test_cli_runs_the_same_chain(seeded) -> None:
    """`metaxy migrations status | apply --dry-run | apply` from the project folder, same settings."""
    metaxy = Path(sys.executable).with_name("metaxy")
    env = {**os.environ}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(metaxy), *args], cwd=EXAMPLE_DIR, env=env, capture_output=True, text=True, timeout=300
        )

    status = cli("--format", "json", "migrations", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    rows = json.loads(status.stdout)
    assert [(r["migration_id"], r["status"]) for r in rows] == [(c[0], "not_started") for c in CHAIN]
    before = table_versions(seeded.store, EXAMPLE_GRAPH)
    dry = cli("migrations", "apply", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert table_versions(seeded.store, EXAMPLE_GRAPH) == before
    applied = cli("migrations", "apply")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    for key in EXAMPLE_GRAPH.topological_order():
        if EXAMPLE_GRAPH.spec(key).deps:
            assert seeded.store.resolve_update(key).counts() == {"added": 0, "changed": 0, "removed": 0}, key
    status = cli("--format", "json", "migrations", "status")
    assert [r["status"] for r in json.loads(status.stdout)] == ["completed"] * len(CHAIN)


def test_the_chain_with_the_store_on_s3(example_env, servers, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/s3.md: the same project with `METAXY_STORE_ROOT=s3://...`; credentials and endpoint from AWS_*."""
    import uuid

    from example_project import CONFIG_FILE
    from metaxy_core import MetaxyConfig

    bucket = "example-metadata"
    client = servers.s3.client()
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    monkeypatch.setenv("METAXY_STORE_ROOT", f"s3://{bucket}/{uuid.uuid4().hex[:8]}/store")
    config = MetaxyConfig.load(CONFIG_FILE)
    store = config.get_store()
    assert store.is_remote and "AWS_SECRET_ACCESS_KEY" not in repr(store)
    generate.seed_store(store, n_samples=N_TEST, current_graph=EXAMPLE_GRAPH)
    defs = build_definitions(config)
    instance = DagsterInstance.ephemeral()
    before = table_versions(store, EXAMPLE_GRAPH)
    plan = run_job(defs, PLAN_JOB_NAME, dry_run=True, instance=instance)
    assert plan.success, plan.failure
    assert table_versions(store, EXAMPLE_GRAPH) == before
    applied = run_job(defs, APPLY_JOB_NAME, dry_run=False, instance=instance)
    assert applied.success, applied.failure
    for key in EXAMPLE_GRAPH.topological_order():
        if EXAMPLE_GRAPH.spec(key).deps:
            assert store.resolve_update(key).counts() == {"added": 0, "changed": 0, "removed": 0}, key
    listed = client.list_objects_v2(
        Bucket=bucket, Prefix=store.root_uri.split(f"{bucket}/", 1)[1] + "/video__files/"
    )
    assert listed["KeyCount"] > 0  # the Delta tables really live in the bucket


def test_the_design_notes_yaml_operation_backfills_video_files(seeded) -> None:
    """The reusable S3 operation of the design notes' YAML example, run as a YAML migration would run it."""
    from metaxy_core.migrations.ops import build_operation

    op = build_operation(
        {
            "type": "example_project.ops.S3VideoBackfillOperation",
            "id": "backfill_videos",
            "feature_key": ["video", "files"],
            "s3_bucket": generate.MEDIA_BUCKET,
            "reason": "Initial backfill",
        }
    )
    store, target = seeded.store, EXAMPLE_GRAPH.snapshot_version
    before = table_versions(store, EXAMPLE_GRAPH)
    with store.write_scope("test/dry", dry_run=True):
        assert (
            op.execute(store, from_snapshot_version=None, to_snapshot_version=target, dry_run=True) == N_TEST
        )
    assert table_versions(store, EXAMPLE_GRAPH) == before
    assert op.execute(store, from_snapshot_version=None, to_snapshot_version=target) == N_TEST
    assert op.execute(store, from_snapshot_version=None, to_snapshot_version=target) == 0  # idempotent
    check_video_files(store, {})
