"""Reads share one open table per version, and never serve a stale one: a commit by another writer, by this
process, or a table written again from scratch under the same URI is seen by the next open; a scan keeps the
version it was opened at while this process commits; writers get tables of their own. Event tables are
compacted at the same fill level when the process skips opening them (S3, moto's server, and local)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake

from metaxy_core import DeltaMetadataStore
from metaxy_core.store import _io, bulk
from metaxy_core.store._io import delta_options, open_table, scan_table
from metaxy_core.store._storage import resolve_storage_options
from metaxy_core.store.provenance import COMMIT_ORDER
from metaxy_core.testing import S3Location


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """(table URI, storage options) of a fresh table location, on disk or on the test S3 server."""
    if request.param == "local":
        return str(tmp_path / "t"), {}
    s3: S3Location = request.getfixturevalue("s3")
    return f"{s3.root}/t", _options(s3)


def _options(s3: S3Location) -> dict[str, str]:
    """The options a store on ``s3`` uses (timeouts, plain HTTP to the test server...)."""
    return resolve_storage_options(s3.root, s3.storage_options)


def _rows(ids: range, order: int = 1) -> pl.DataFrame:
    return pl.DataFrame({"id": list(ids), COMMIT_ORDER: [order] * len(ids)})


def _write(uri: str, options: dict[str, str], frame: pl.DataFrame, mode: str = "append") -> None:
    """A commit by another writer: delta-rs on its own, nothing this process's cache knows of."""
    write_deltalake(uri, frame, mode=mode, storage_options=delta_options(options))  # type: ignore[arg-type]


def test_readers_share_one_open_while_the_table_is_unchanged_and_writers_get_their_own(
    where: tuple[str, dict[str, str]],
) -> None:
    uri, options = where
    _write(uri, options, _rows(range(3)))
    first = open_table(uri, options)
    assert first is not None and open_table(uri, options) is first
    own = open_table(uri, options, for_commit=True)
    assert own is not None and own is not first and open_table(uri, options, for_commit=True) is not own


def test_a_commit_by_another_writer_is_seen_by_the_next_open(where: tuple[str, dict[str, str]]) -> None:
    uri, options = where
    _write(uri, options, _rows(range(3)))
    before = open_table(uri, options)
    assert before is not None and before.version() == 0
    _write(uri, options, _rows(range(3, 5)))
    after = open_table(uri, options)
    assert after is not None and after.version() == 1
    assert scan_table(after, options).collect().height == 5
    assert scan_table(before, options).collect().height == 3  # the earlier reader keeps its version


def test_a_table_created_after_this_process_found_none_is_opened(where: tuple[str, dict[str, str]]) -> None:
    uri, options = where
    assert open_table(uri, options) is None and open_table(uri, options) is None
    _write(uri, options, _rows(range(2)))  # another writer creates it
    created = open_table(uri, options)
    assert created is not None and scan_table(created, options).collect().height == 2


def test_a_scan_keeps_the_version_it_opened_while_this_process_commits_to_the_table(
    where: tuple[str, dict[str, str]],
) -> None:
    uri, options = where
    _write(uri, options, _rows(range(3)))
    table = open_table(uri, options)
    assert table is not None
    pinned = scan_table(table, options)  # read lazily, after the commit below
    assert bulk.append_frames(uri, [_rows(range(3, 10))], options, ids=["id"]) == 7
    assert pinned.collect().height == 3 and table.version() == 0
    latest = open_table(uri, options)
    assert latest is not None and latest.version() == 1 and scan_table(latest, options).collect().height == 10


def test_the_next_bulk_commit_starts_from_the_latest_version_after_another_writers_commit(
    where: tuple[str, dict[str, str]],
) -> None:
    uri, options = where
    _write(uri, options, _rows(range(3)))
    assert bulk.append_frames(uri, [_rows(range(3, 6))], options, ids=["id"]) == 3  # v1, its table kept
    _write(uri, options, _rows(range(6, 8)))  # v2 by another writer
    assert bulk.append_frames(uri, [_rows(range(8, 10))], options, ids=["id"]) == 2
    table = open_table(uri, options)
    assert table is not None and table.version() == 3
    assert sorted(scan_table(table, options).collect()["id"]) == list(range(10))


def test_a_table_written_again_from_scratch_under_the_same_uri_is_opened_again(s3: S3Location) -> None:
    uri, options = f"{s3.root}/t", _options(s3)
    _write(uri, options, _rows(range(3)))
    old = open_table(uri, options)
    assert old is not None and old.version() == 0
    client = s3.client()
    for item in client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}/t/").get("Contents", []):
        client.delete_object(Bucket=s3.bucket, Key=item["Key"])
    _write(uri, options, pl.DataFrame({"id": [7], "other": ["x"]}), mode="overwrite")  # version 0 again
    new = open_table(uri, options)
    assert new is not None and new is not old and new.version() == 0
    assert scan_table(new, options).collect().to_dicts() == [{"id": 7, "other": "x"}]


def test_a_table_deleted_after_it_was_opened_is_gone_for_the_next_open(s3: S3Location) -> None:
    uri, options = f"{s3.root}/t", _options(s3)
    _write(uri, options, _rows(range(3)))
    assert open_table(uri, options) is not None
    client = s3.client()
    for item in client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}/t/").get("Contents", []):
        client.delete_object(Bucket=s3.bucket, Key=item["Key"])
    assert open_table(uri, options) is None and not _io.table_exists(uri, options)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "s3"])
def test_event_tables_are_compacted_at_64_files_also_when_the_process_skips_opening_them(
    remote: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from metaxy_core.migrations import progress
    from metaxy_core.store.maintenance import compact_fragmented_system_tables

    if remote:
        s3: S3Location = request.getfixturevalue("s3")
        store = DeltaMetadataStore(s3.root, s3.storage_options, project="m")
    else:
        store = DeltaMetadataStore(tmp_path / "store", project="m")

    def events(n: int) -> None:
        for i in range(n):
            progress.record(
                store, project="m", migration_id=f"20250101_000000_m{i % 5}", status="started", run_id="r"
            )

    def files() -> int:
        table = open_table(store.system_table_uri(progress.EVENTS), store.storage_options)
        assert table is not None
        return len(table.file_uris())

    assert compact_fragmented_system_tables(store) == []  # no event table yet
    events(63)
    assert compact_fragmented_system_tables(store) == [] and files() == 63
    events(1)
    [report] = compact_fragmented_system_tables(store)
    assert (report.files_before, report.files_after) == (64, 1)
    states = progress.read_states(store, "m")
    events(62)  # 63 files: not yet, whatever this process remembers of the last count
    assert compact_fragmented_system_tables(store) == [] and files() == 63
    events(1)
    [again] = compact_fragmented_system_tables(store)
    assert (again.files_before, again.files_after) == (64, 1)
    assert set(progress.read_states(store, "m")) == set(states)


WRITER = """
import json, sys
import polars as pl
from deltalake import write_deltalake
from metaxy_core.store._io import delta_options

uri, options, commits = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
for i in range(1, commits):
    write_deltalake(uri, pl.DataFrame({"id": [i], "metaxy_commit_order": [1]}), mode="append",
                    storage_options=delta_options(options))
"""


def test_a_reader_polling_while_another_process_commits_never_sees_a_stale_or_torn_table(
    where: tuple[str, dict[str, str]],
) -> None:
    """Another process commits one row at a time while this one keeps opening the table through the cache:
    the versions it gets never go back, each table object's scan holds exactly its version's rows, and once
    the writer is done the next open is its last commit."""
    import json
    import subprocess
    import sys
    import time

    uri, options = where
    commits = 25
    _write(uri, options, _rows(range(1)))  # version 0: one row; the writer adds one row per commit
    writer = subprocess.Popen([sys.executable, "-c", WRITER, uri, json.dumps(options), str(commits)])
    seen: list[int] = []
    deadline = time.monotonic() + 120
    while writer.poll() is None or not seen or seen[-1] < commits - 1:
        assert time.monotonic() < deadline, f"the last commit was never seen: {seen[-5:]}"
        table = open_table(uri, options)
        assert table is not None
        version = table.version()
        assert not seen or version >= seen[-1], seen[-5:] + [version]  # never an older table
        assert scan_table(table, options).collect().height == version + 1  # its own version, whole
        seen.append(version)
        assert writer.poll() in (None, 0), "the writer failed"
    assert writer.wait(60) == 0
    assert seen[-1] == commits - 1 and len(set(seen)) > 2, seen  # it saw the table move, up to the end
