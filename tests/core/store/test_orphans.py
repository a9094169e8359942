"""A step's re-run removes the files its failed attempt left uncommitted (staging files of its local writes
included, read or not), and nothing else: not committed files, not files a compaction replaced (time
travel), not another writer's files, not files of the current lease (sibling units), not data files that
cannot be read."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake

from metaxy_core.store import orphans
from metaxy_core.store.provenance import WRITE_ID
from metaxy_core.store.scope import Fence

STEP = "20250101_000000_bump/0/video__cap"
TOKEN = 7


def _rows(write_id: str, ids: range) -> pl.DataFrame:
    return pl.DataFrame({"sample_uid": list(ids), WRITE_ID: [write_id] * len(ids)})


def _stray(table: Path, name: str, frame: pl.DataFrame | None, mtime: float) -> str:
    """A Parquet file in the table folder that no commit references (as a failed upload leaves it)."""
    path = table / name
    if frame is None:
        path.write_bytes(b"PAR1 cut short")
    else:
        frame.write_parquet(path)
    os.utime(path, (mtime, mtime))
    return name


def test_the_rerun_removes_only_its_own_uncommitted_files_from_before_the_lease(tmp_path: Path) -> None:
    root = tmp_path / "store"
    table = root / "video__cap"
    write_deltalake(str(table), _rows("seed", range(0, 3)))  # committed
    write_deltalake(str(table), _rows(STEP, range(3, 6)), mode="append")  # committed by an earlier attempt
    write_deltalake(str(table), _rows(STEP, range(6, 9)), mode="append")
    DeltaTable(str(table)).optimize.compact()  # the step's two files are now replaced, kept for time travel
    lease = root / "_metaxy_system" / "lock" / "_delta_log" / f"{TOKEN:020d}.json"
    lease.parent.mkdir(parents=True)
    lease.write_text("{}\n")
    acquired = lease.stat().st_mtime + 120  # the current lease: acquired after every file above
    os.utime(lease, (acquired, acquired))
    before = acquired - 60
    staged = orphans.staging_path("part-00000-dddd-c000.lz4.parquet", STEP)  # a local write killed midway
    leftovers = [
        _stray(table, "part-00000-aaaa-c000.zstd.parquet", _rows(STEP, range(9, 12)), before),
        _stray(table, "part-00000-bbbb-c000.zstd.parquet", _rows(STEP, range(12, 15)), before - 3600),
        _stray(table, staged, None, before),
    ]
    kept = [
        _stray(table, orphans.staging_path("part-00000-eeee-c000.lz4.parquet", "other/0/step"), None, before),
        _stray(table, orphans.staging_path("part-00000-ffff-c000.lz4.parquet", STEP), None, acquired + 5),
        _stray(table, "part-00000-other-c000.parquet", _rows("someone-else", range(20, 22)), before),
        _stray(
            table, "part-00000-mixed-c000.parquet", pl.concat([_rows(STEP, [1]), _rows("x", [2])]), before
        ),
        _stray(table, "part-00000-sibling-c000.parquet", _rows(STEP, range(30, 33)), acquired + 5),
        _stray(table, "part-00000-cut-c000.parquet", None, before),
    ]
    dt = DeltaTable(str(table))
    files_before = set(os.listdir(table))
    size = sum((table / name).stat().st_size for name in leftovers)
    fence = Fence(root=str(root), app_id="metaxy-test", token=TOKEN, check=lambda _: None)

    removed = orphans.clean_before_write(str(table), {}, dt, _rows(STEP, range(40, 41)), fence)

    assert removed == (3, size)
    files_after = set(os.listdir(table))
    assert files_before - files_after == set(leftovers)
    assert set(kept) <= files_after
    assert pl.read_delta(str(table)).height == 9  # the table reads as before
    for version in range(dt.version() + 1):  # and so does every earlier version (time travel intact)
        assert pl.read_delta(str(table), version=version).height == [3, 6, 9, 9][version]
    # once per step, table and lease: a second call does not look again
    _stray(table, "part-00000-cccc-c000.zstd.parquet", _rows(STEP, range(50, 51)), before)
    assert orphans.clean_before_write(str(table), {}, dt, _rows(STEP, range(40, 41)), fence) == (0, 0)


def test_nothing_is_removed_without_a_lease_or_for_rows_of_several_writes(tmp_path: Path) -> None:
    table = tmp_path / "store" / "t"
    write_deltalake(str(table), _rows("seed", range(3)))
    _stray(table, "part-00000-dddd-c000.zstd.parquet", _rows(STEP, range(3, 6)), 0)
    dt = DeltaTable(str(table))
    fence = Fence(root=str(tmp_path / "store"), app_id="a", token=1, check=lambda _: None)
    assert orphans.clean_before_write(str(table), {}, dt, _rows(STEP, range(1)), None) == (0, 0)
    mixed = pl.concat([_rows(STEP, [1]), _rows("other", [2])])
    assert orphans.clean_before_write(str(table), {}, dt, mixed, fence) == (0, 0)
    # no lock commit for the token (its log file is gone): no safe bound, nothing removed
    assert orphans.clean_before_write(str(table), {}, dt, _rows(STEP, range(1)), fence) == (0, 0)
    assert "part-00000-dddd-c000.zstd.parquet" in os.listdir(table)
