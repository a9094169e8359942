"""The Delta commit order decides which row is the latest, never a writer's clock; a fenced commit is refused
when a newer lease wrote the table; damaged tables and columns that change type are refused with one clear
message."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from metaxy_core import DeltaMetadataStore
from metaxy_core._process import CLOCK_OFFSET_ENV
from metaxy_core.errors import MetadataSchemaError, StoreError
from metaxy_core.store import bulk
from metaxy_core.store.provenance import COMMIT_ORDER, CREATED_AT, SYSTEM_COLUMNS, WRITE_ID
from metaxy_core.store.scope import Fence, fenced
from metaxy_core.testing import video_features, video_raw_rows

TWO_HOURS = 2 * 3600
F = video_features()
RAW = F.Raw


@pytest.fixture
def store(tmp_path: Path) -> DeltaMetadataStore:
    return DeltaMetadataStore(tmp_path / "store")


def _write(store: DeltaMetadataStore, uids: list[int], tag: str, monkeypatch: pytest.MonkeyPatch, offset=0):
    """Write raw rows whose ``path`` says which write they came from, with this process's clock shifted."""
    monkeypatch.setenv(CLOCK_OFFSET_ENV, str(offset))
    store.write_metadata(RAW, video_raw_rows(uids, path=[f"{tag}-{u}" for u in uids]), graph=F.graph)
    monkeypatch.delenv(CLOCK_OFFSET_ENV)


def _paths(store: DeltaMetadataStore) -> dict[int, str]:
    df = store.read_metadata(RAW, graph=F.graph).collect()
    return dict(zip(df["sample_uid"].to_list(), df["path"].to_list(), strict=True))


def test_every_write_is_stamped_with_twice_the_delta_version_it_committed_at(store, monkeypatch):
    for i in range(3):
        _write(store, [i], f"w{i}", monkeypatch)
    history = store.read_metadata(RAW, graph=F.graph, include_history=True).collect()
    assert history.columns[-1] == COMMIT_ORDER == SYSTEM_COLUMNS[-1]
    assert dict(zip(history["sample_uid"], history[COMMIT_ORDER], strict=True)) == {0: 0, 1: 2, 2: 4}
    table = DeltaTable(store.table_uri(RAW))
    for version in range(3):  # the rows added by commit V carry 2*V
        added = pl.read_delta(table.table_uri, version=version).filter(pl.col(COMMIT_ORDER) == 2 * version)
        assert added["sample_uid"].to_list() == [version]


@pytest.mark.parametrize("skew", [0, TWO_HOURS, -TWO_HOURS])
def test_the_latest_row_is_the_last_committed_whatever_the_writers_clocks(store, monkeypatch, skew):
    """The first writer's clock is ``skew`` ahead of the second's: the result is the same as with equal
    clocks (the second write wins), and resolve_update agrees."""
    _write(store, [1, 2, 3], "first", monkeypatch, offset=skew)
    _write(store, [2, 3], "second", monkeypatch, offset=-skew)
    assert _paths(store) == {1: "first-1", 2: "second-2", 3: "second-3"}
    history = store.read_metadata(RAW, graph=F.graph, include_history=True).collect()
    second_at = history.filter(pl.col("path") == "second-2")[CREATED_AT][0]
    first_at = history.filter(pl.col("path") == "first-2")[CREATED_AT][0]
    if skew > 0:
        assert first_at - second_at > timedelta(hours=3)  # the older row looks 4 h newer by its clock
    samples = video_raw_rows([1, 2, 3], path=["first-1", "second-2", "second-3"])
    increment = store.resolve_update(RAW, samples=samples, graph=F.graph).collect()
    assert increment.added.height == increment.changed.height == increment.removed.height == 0


def test_concurrent_writers_get_distinct_orders_equal_to_their_commit_versions(store, monkeypatch):
    _write(store, [0], "seed", monkeypatch)
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for b in range(5):
                uids = [1000 * (w + 1) + b]
                store.write_metadata(RAW, video_raw_rows(uids, path=[f"w{w}"]), graph=F.graph)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    history = store.read_metadata(RAW, graph=F.graph, include_history=True).collect()
    orders = sorted(history[COMMIT_ORDER].to_list())
    assert orders == [2 * v for v in range(21)]  # one commit per write, no version skipped or shared


def test_a_table_written_before_commit_order_reads_as_before_and_ranks_below_new_rows(store, monkeypatch):
    """Rows without metaxy_commit_order (earlier versions of this project) keep the created_at rule among
    themselves, and every stamped row ranks after them, even one whose writer's clock is behind."""
    _write(store, [1, 2], "legacy-old", monkeypatch)
    uri = store.table_uri(RAW)
    history = pl.read_delta(uri)
    newer = history.with_columns(
        pl.col("path").str.replace("legacy-old", "legacy-new"),
        pl.col(CREATED_AT) + pl.duration(seconds=1),
        pl.lit("a-later-write").alias(WRITE_ID),
    )
    # the table as an earlier version wrote it: no commit-order column, two writes ordered by created_at
    legacy = pl.concat([newer, history]).drop(COMMIT_ORDER)
    DeltaTable(uri).delete()
    write_deltalake(uri, legacy, mode="overwrite", schema_mode="overwrite")
    assert COMMIT_ORDER not in pl.read_delta(uri).columns
    assert _paths(store) == {1: "legacy-new-1", 2: "legacy-new-2"}
    _write(store, [2], "stamped", monkeypatch, offset=-TWO_HOURS)  # older timestamp, later commit
    assert _paths(store) == {1: "legacy-new-1", 2: "stamped-2"}


def test_compaction_keeps_the_commit_order(store, monkeypatch):
    for i, offset in enumerate([TWO_HOURS, 0, -TWO_HOURS]):
        _write(store, [1, 2], f"w{i}", monkeypatch, offset=offset)
    before = _paths(store)
    store.optimize(RAW)
    assert len(DeltaTable(store.table_uri(RAW)).file_uris()) == 1
    assert _paths(store) == before == {1: "w2-1", 2: "w2-2"}


def _damage(store: DeltaMetadataStore, version: int, how: str) -> str:
    path = os.path.join(store.table_uri(RAW), "_delta_log", f"{version:020d}.json")
    data = Path(path).read_bytes()
    Path(path).write_bytes(b"" if how == "empty" else data[: len(data) // 2])
    return path


@pytest.mark.parametrize("how", ["empty", "truncated"])
@pytest.mark.parametrize("which", ["newest", "middle"])
def test_a_damaged_commit_file_is_named_with_the_fix_never_read_around(tmp_path, monkeypatch, how, which):
    store = DeltaMetadataStore(tmp_path / "store")  # a fresh process-level view of a fresh table
    for i in range(3):
        _write(store, [i], f"w{i}", monkeypatch)
    path = _damage(store, 2 if which == "newest" else 1, how)
    want = f"the Delta log of {store.table_uri(RAW)} is damaged: commit file {path} " + (
        "is empty (0 bytes)" if how == "empty" else "is truncated or not valid JSON (line "
    )
    for attempt in (
        lambda: store.read_metadata(RAW, graph=F.graph).collect(),
        lambda: store.write_metadata(RAW, video_raw_rows([9]), graph=F.graph),
        lambda: store.resolve_update(RAW, samples=video_raw_rows([9]), graph=F.graph),
    ):
        with pytest.raises(StoreError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith(want), message
        assert "Restore that file from a backup" in message and "\n" not in message
        assert "<unknown>" not in message and "backtrace" not in message.lower()


def test_a_user_column_whose_type_changed_is_refused_naming_both_types_and_the_fix(store, monkeypatch):
    _write(store, [1], "first", monkeypatch)
    version = store.table_version(RAW)
    for value, dtype in ((7, "Int64"), (1.5, "Float64"), (True, "Boolean"), ([1], "List(Int64)")):
        with pytest.raises(MetadataSchemaError) as info:
            store.write_metadata(RAW, video_raw_rows([2], path=[value]), graph=F.graph)
        assert str(info.value) == (
            f"rows for feature video/raw: column 'path' is String in the table but {dtype} in the rows "
            "written; a Delta column keeps the type it was first written with (the values would be silently "
            "converted). Cast it back before writing (pl.col('path').cast(pl.String)), or write the new "
            "values under a new column name"
        )
    assert store.table_version(RAW) == version  # nothing was written
    store.write_metadata(RAW, video_raw_rows([3], path=[None]), graph=F.graph)  # all null: fine
    assert _paths(store)[3] is None


def test_timestamps_follow_the_injected_clock_and_nothing_else(store, monkeypatch):
    _write(store, [1], "ahead", monkeypatch, offset=TWO_HOURS)
    at = store.read_metadata(RAW, graph=F.graph).collect()[CREATED_AT][0]
    assert at - datetime.now(UTC) > timedelta(hours=1, minutes=59)


def _derived(store: DeltaMetadataStore, uid: int) -> pl.DataFrame:
    """One row shaped like the table's, as a bulk writer derives it from a read (commit order 2*R+1)."""
    row = pl.read_delta(store.table_uri(RAW)).head(1)
    read_at = DeltaTable(store.table_uri(RAW)).version()
    return row.with_columns(pl.lit(uid).cast(row.schema["sample_uid"]).alias("sample_uid")).with_columns(
        pl.lit(2 * read_at + 1, pl.Int64).alias(COMMIT_ORDER)
    )


@pytest.mark.parametrize("concurrent", ["a newer lease", "a pipeline"])
def test_delta_refuses_a_fenced_commit_when_a_newer_lease_commits_between_its_check_and_its_commit(
    store, monkeypatch, concurrent
):
    """The bulk writer's commit may be retried by delta-rs past other commits; only a commit carrying a
    newer token of the same lease (app transaction) makes Delta refuse it."""
    _write(store, [1], "seed", monkeypatch)
    app = "metaxy-lease/test"
    checks: list[int | None] = []

    def check(table_token: int | None) -> None:
        checks.append(table_token)
        if table_token is not None and table_token > 5:
            raise MetadataSchemaError(f"fenced out by token {table_token}")
        if len(checks) == 1:  # another writer commits right after this check, before this commit
            newer = Fence(root=store.root_uri, app_id=app, token=9, check=lambda _: None)
            with fenced(newer if concurrent == "a newer lease" else None):
                store.write_metadata(RAW, video_raw_rows([2], path=["concurrent"]), graph=F.graph)

    old = Fence(root=store.root_uri, app_id=app, token=5, check=check)
    frame = _derived(store, 3)
    if concurrent == "a pipeline":
        bulk.append_frames(
            store.table_uri(RAW), [frame], store.storage_options, ids=["sample_uid"], fence=old
        )
        assert set(_paths(store)) == {1, 2, 3}  # delta-rs retried the append past the pipeline's commit
        return
    with pytest.raises(MetadataSchemaError, match="fenced out by token 9"):
        bulk.append_frames(
            store.table_uri(RAW), [frame], store.storage_options, ids=["sample_uid"], fence=old
        )
    assert checks == [
        None,
        9,
    ]  # passed before the newer commit; Delta refused the commit; the re-check says why
    assert set(_paths(store)) == {1, 2}  # nothing of the fenced-out writer
    assert DeltaTable(store.table_uri(RAW)).transaction_version(app) == 9
