"""Reconciliation of tables whose files are not in id order (hash buckets and a spill) takes its shortcuts
when their precondition holds, falls back when it does not, and never changes the result.

* old rows holding the ids of their (one-per-sample) upstream rows in the same order need no check for
  repeated samples; a sample stored twice breaks the order and the newest row still wins;
* an input the Delta log proves small (samples already at the new version) is held in memory, a large one
  spilled;
* each bucket's spill files are deleted once the bucket is read.

Real Delta tables on disk; every commit spreads over all ids, so files overlap and buckets are hashes.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.reconcile import CarryOverResult, carry_over
from metaxy_core.store.buckets import BUCKET, SPILL_DIR_ENV
from metaxy_core.store.provenance import COMMIT_ORDER, CREATED_AT, PROVENANCE_BY_FIELD, WRITE_ID
from metaxy_core.testing import video_graph

EMB, RAW = "video/embeddings", "video/raw"
N, CHUNKS = 400, 4
UID = pl.format("s{}", pl.col("i").cast(pl.String).str.zfill(6))


def interleaved(chunk: int) -> pl.DataFrame:
    """Sample numbers of one commit: spread over all ids (commit c holds c, c + 4, c + 8, ...)."""
    return pl.int_range(chunk, N, CHUNKS, eager=True).alias("i").to_frame()


def build(root: Path) -> DeltaMetadataStore:
    """Upstream and downstream rows written in the same (interleaved) order, one commit per chunk each."""
    old = video_graph(transcript="1", refined=False)
    store = DeltaMetadataStore(root, project="p")
    for chunk in range(CHUNKS):
        raw = interleaved(chunk).select(
            UID.alias("sample_uid"),
            pl.format("p{}", "i").alias("path"),
            pl.struct(pl.format("f{}", "i").alias("frames"), pl.format("a{}", "i").alias("audio")).alias(
                PROVENANCE_BY_FIELD
            ),
        )
        store.write_metadata(RAW, raw, graph=old)
    for chunk in range(CHUNKS):
        emb = interleaved(chunk).select(UID.alias("sample_uid"), (pl.col("i") % 7).alias("dim"))
        store.write_metadata(EMB, emb, graph=old)
    return store


def reconcile(store: DeltaMetadataStore, partition_rows: int) -> tuple[pl.DataFrame, CarryOverResult]:
    old, new = video_graph(transcript="1", refined=False), video_graph(transcript="1", refined=True)
    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id="w",
        snapshot_version=new.snapshot_version,
        partition_rows=partition_rows,
    )
    latest = store.read_metadata(EMB, graph=new).collect().drop(CREATED_AT, WRITE_ID, COMMIT_ORDER)
    return latest.sort("sample_uid"), result


def test_old_rows_in_upstream_order_are_proven_one_per_sample_by_position(tmp_path):
    expected, _ = reconcile(build(tmp_path / "one"), 10**6)
    latest, result = reconcile(build(tmp_path / "hash"), 100)
    assert result.mode == "hash" and result.buckets == 4 and result.spilled == ["old", "up0"]
    assert result.unique_by_position == result.paired == result.buckets and result.rows == N
    assert latest.equals(expected)


def test_a_sample_stored_twice_breaks_the_order_and_its_newest_row_wins(tmp_path):
    old = video_graph(transcript="1", refined=False)
    stores = [build(tmp_path / "one"), build(tmp_path / "hash")]
    for store in stores:  # written again later: the old rows of its bucket repeat a sample
        again = pl.DataFrame({"sample_uid": ["s000005"], "dim": [99]})
        store.write_metadata(EMB, again, graph=old)
    expected, _ = reconcile(stores[0], 10**6)
    latest, result = reconcile(stores[1], 100)
    assert result.mode == "hash" and result.unique_by_position == result.buckets - 1 and result.rows == N
    assert latest.filter(pl.col("sample_uid") == "s000005")["dim"].to_list() == [99]
    assert latest.equals(expected) and latest["sample_uid"].n_unique() == N


@pytest.mark.parametrize(("recomputed", "held"), [(10, True), (60, False)])
def test_samples_already_at_the_new_version_are_held_in_memory_when_few(tmp_path, recomputed, held):
    """A pipeline recomputed some samples at the new version before the reconciliation: those are skipped.
    With at most a quarter bucket of them they are held in memory, with more they are spilled too."""
    new = video_graph(transcript="1", refined=True)
    stores = [build(tmp_path / "one"), build(tmp_path / "hash")]
    for store in stores:
        rows = pl.int_range(0, recomputed, eager=True).alias("i").to_frame()
        store.write_metadata(EMB, rows.select(UID.alias("sample_uid"), pl.lit(-1).alias("dim")), graph=new)
    expected, _ = reconcile(stores[0], 10**6)
    latest, result = reconcile(stores[1], 100)
    assert result.mode == "hash" and ("done" in result.spilled) is not held
    assert result.rows == N - recomputed and latest.height == N
    assert latest.filter(pl.col("dim") == -1).height == recomputed
    assert latest.equals(expected)


def test_each_buckets_spill_files_are_deleted_once_it_is_read(tmp_path, monkeypatch):
    spill = tmp_path / "spill"
    monkeypatch.setenv(SPILL_DIR_ENV, str(spill))
    store = build(tmp_path / "s")
    left: list[int] = []

    def buckets_on_disk(seen: int, total: int) -> None:
        left.append(sum(name.startswith(f"{BUCKET}=") for _, dirs, _ in os.walk(spill) for name in dirs))

    old, new = video_graph(transcript="1", refined=False), video_graph(transcript="1", refined=True)
    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id="w",
        snapshot_version=new.snapshot_version,
        partition_rows=100,
        on_progress=buckets_on_disk,
    )
    assert result.mode == "hash" and result.rows == N
    # two spilled inputs of four buckets: bucket b's files are gone when bucket b + 1 is read
    assert left == [6, 4, 2, 2] and not any(spill.iterdir())
