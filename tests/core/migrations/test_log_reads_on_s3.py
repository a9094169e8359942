"""The lock table and the migration log are not re-read when this process knows they did not change (on a real
S3 API, moto's server): a lease holder checks its fence with one request while nobody else committed to the
lock table, and the migration log's cache follows its own commits; anything another writer commits, or a log
re-created under the same URI, is still seen."""

from __future__ import annotations

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations import lock as lock_module
from metaxy_core.migrations import progress
from metaxy_core.migrations.lock import LockLostError, StoreLock
from metaxy_core.migrations.results import EventStatus
from metaxy_core.store.system import LOCK, MIGRATION_EVENTS, MIGRATION_EVENTS_SCHEMA, append_system
from metaxy_core.testing import S3Location, video_graph

PROJECT = "logs"


@pytest.fixture
def store(s3: S3Location) -> DeltaMetadataStore:
    return DeltaMetadataStore(s3.root, s3.storage_options, project=PROJECT)


def _count_lock_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the system tables the lock module reads from now on (the real reader, counted)."""
    reads: list[str] = []
    real = lock_module.read_system

    def counted(store: DeltaMetadataStore, name: str, **kwargs: object) -> pl.DataFrame | None:
        reads.append(name)
        return real(store, name, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lock_module, "read_system", counted)
    return reads


def test_a_holder_checks_its_fence_without_reading_the_lock_table_until_someone_else_commits_to_it(
    store: DeltaMetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    StoreLock(store, "earlier", heartbeat=False).__enter__().release()  # the lock table exists
    holder = StoreLock(store, "holder", heartbeat=False)
    holder.acquire()
    reads = _count_lock_reads(monkeypatch)
    for _ in range(3):
        holder.fence.check(None)
    holder.renew()  # renews on the table of its own last commit
    holder.fence.check(None)
    assert reads == []

    released = StoreLock(store, "operator").force_release(force=True)  # `unlock --force`: a later commit
    assert released is not None and released.owner == "holder"
    with pytest.raises(LockLostError, match="run holder lost the migration lock"):
        holder.fence.check(None)
    assert LOCK in reads


def test_a_holder_taken_over_after_its_last_commit_is_refused_at_its_next_write(
    store: DeltaMetadataStore,
) -> None:
    holder = StoreLock(store, "holder", heartbeat=False, ttl_seconds=5)
    holder.acquire()
    holder.renew()
    StoreLock(store, "operator").force_release(force=True)
    taker = StoreLock(store, "taker", heartbeat=False)
    taker.acquire()
    with pytest.raises(LockLostError, match="took over"):
        holder.renew()
    taker.fence.check(None)  # the new holder is unaffected
    taker.release()


def _event(migration_id: str, status: str = "started") -> pl.DataFrame:
    row = {name: "" for name in MIGRATION_EVENTS_SCHEMA}
    row.update(
        project=PROJECT, migration_id=migration_id, op_index=-1, status=status, rows=0, duration_s=0.0, pid=1
    )
    row["at"] = None
    return pl.DataFrame([row], schema=MIGRATION_EVENTS_SCHEMA)


def _ids(store: DeltaMetadataStore) -> list[str]:
    return progress.read_events(store, PROJECT)["migration_id"].to_list()


def test_the_migration_log_cache_takes_own_events_and_still_sees_other_writers_and_a_recreated_log(
    store: DeltaMetadataStore, s3: S3Location
) -> None:
    for migration_id in ("m1", "m2"):
        progress.record(
            store, project=PROJECT, migration_id=migration_id, status=EventStatus.STARTED, run_id="r"
        )
        assert _ids(store)[-1] == migration_id
    append_system(store, MIGRATION_EVENTS, _event("by-another-process"))  # not through this process's cache
    assert _ids(store) == ["m1", "m2", "by-another-process"]
    assert progress.read_states(store, PROJECT)["m2"].status == "in_progress"

    # the log is deleted and written again by someone else up to the same version: other content, same name
    client = s3.client()
    prefix = f"{s3.prefix}/_metaxy_system/{MIGRATION_EVENTS}/"
    for item in client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", []):
        client.delete_object(Bucket=s3.bucket, Key=item["Key"])
    for migration_id in ("x1", "x2", "x3"):
        append_system(store, MIGRATION_EVENTS, _event(migration_id))
    assert _ids(store) == ["x1", "x2", "x3"]


def test_pushed_snapshots_are_read_once_per_change_and_a_push_after_the_read_is_seen(
    store: DeltaMetadataStore,
) -> None:
    first, second = video_graph(), video_graph(embedding="2")
    assert first.snapshot_version != second.snapshot_version
    store.push_snapshot(first, project=PROJECT)
    assert store.latest_snapshot(project=PROJECT).snapshot_version == first.snapshot_version
    assert store.latest_snapshot(project=PROJECT).snapshot_version == first.snapshot_version  # cached
    DeltaMetadataStore(store.root_uri, store.storage_options, project=PROJECT).push_snapshot(
        second, project=PROJECT
    )
    assert store.latest_snapshot(project=PROJECT).snapshot_version == second.snapshot_version
