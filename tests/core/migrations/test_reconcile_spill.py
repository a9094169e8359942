"""Reconciliation of tables whose files are not in id order (hash buckets and a spill) takes its shortcuts
when their precondition holds, falls back when it does not, and never changes the result.

* old rows holding the ids of their (one-per-sample) upstream rows in the same order need no check for
  repeated samples; a sample stored twice breaks the order and the newest row still wins;
* an input the Delta log proves small (samples already at the new version) is held in memory, a large one
  spilled;
* each bucket's spill files are deleted once the bucket is read;
* buckets are id ranges cut from a sample of the ids, so the files written are in id order and the next
  reconciliation reads them without a spill; units of work (a fixed plan from ``carry_plan``) keep hashes.

Real Delta tables on disk; every commit spreads over all ids, so files overlap. Each shortcut is checked
with sampled id ranges and with hash buckets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.reconcile import CarryOverResult, carry_over, carry_plan
from metaxy_core.store.buckets import BUCKET, MAX_COMPARED_CUTS, SPILL_DIR_ENV, Partitioning, sampled_ranges
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


def reconcile(
    store: DeltaMetadataStore,
    partition_rows: int,
    mode: str = "range",
    *,
    step: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[pl.DataFrame, CarryOverResult]:
    """Carry the embeddings over (step 1: to the refined lineage; step 2: to a new embedding version);
    ``mode="hash"`` uses the fixed plan units of work get (:func:`carry_plan`)."""
    old = (
        video_graph(transcript="1", refined=False) if step == 1 else video_graph(transcript="1", refined=True)
    )
    new = video_graph(transcript="1", refined=True, embedding=str(step))
    plan = carry_plan(store, new.spec(EMB), old_graph=old, partition_rows=partition_rows)
    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id=f"w{step}",
        snapshot_version=new.snapshot_version,
        partition_rows=partition_rows,
        partitioning=plan if mode == "hash" else None,
        on_progress=on_progress,
    )
    assert result.mode == mode or partition_rows >= N
    latest = store.read_metadata(EMB, graph=new).collect().drop(CREATED_AT, WRITE_ID, COMMIT_ORDER)
    return latest.sort("sample_uid"), result


@pytest.mark.parametrize("mode", ["range", "hash"])
def test_old_rows_in_upstream_order_are_proven_one_per_sample_by_position(tmp_path, mode):
    expected, _ = reconcile(build(tmp_path / "one"), 10**6)
    latest, result = reconcile(build(tmp_path / "many"), 100, mode)
    assert result.buckets >= 3 and result.spilled == ["old", "up0"]
    assert result.unique_by_position == result.paired == result.buckets and result.rows == N
    assert latest.equals(expected)


@pytest.mark.parametrize("mode", ["range", "hash"])
def test_a_sample_stored_twice_breaks_the_order_and_its_newest_row_wins(tmp_path, mode):
    old = video_graph(transcript="1", refined=False)
    stores = [build(tmp_path / "one"), build(tmp_path / "hash")]
    for store in stores:  # written again later: the old rows of its bucket repeat a sample
        again = pl.DataFrame({"sample_uid": ["s000005"], "dim": [99]})
        store.write_metadata(EMB, again, graph=old)
    expected, _ = reconcile(stores[0], 10**6)
    latest, result = reconcile(stores[1], 100, mode)
    assert result.unique_by_position == result.buckets - 1 and result.rows == N
    assert latest.filter(pl.col("sample_uid") == "s000005")["dim"].to_list() == [99]
    assert latest.equals(expected) and latest["sample_uid"].n_unique() == N


@pytest.mark.parametrize("mode", ["range", "hash"])
@pytest.mark.parametrize(("recomputed", "held"), [(10, True), (60, False)])
def test_samples_already_at_the_new_version_are_held_in_memory_when_few(tmp_path, recomputed, held, mode):
    """A pipeline recomputed some samples at the new version before the reconciliation: those are skipped.
    With at most a quarter bucket of them they are held in memory, with more they are spilled too."""
    new = video_graph(transcript="1", refined=True)
    stores = [build(tmp_path / "one"), build(tmp_path / "hash")]
    for store in stores:
        rows = pl.int_range(0, 6 * recomputed, 6, eager=True).alias("i").to_frame()  # spread over all ids
        store.write_metadata(EMB, rows.select(UID.alias("sample_uid"), pl.lit(-1).alias("dim")), graph=new)
    expected, _ = reconcile(stores[0], 10**6)
    latest, result = reconcile(stores[1], 100, mode)
    assert ("done" in result.spilled) is not held
    assert result.rows == N - recomputed and latest.height == N
    assert latest.filter(pl.col("dim") == -1).height == recomputed
    assert latest.equals(expected)


@pytest.mark.parametrize("mode", ["range", "hash"])
def test_each_buckets_spill_files_are_deleted_once_it_is_read(tmp_path, monkeypatch, mode):
    spill = tmp_path / "spill"
    monkeypatch.setenv(SPILL_DIR_ENV, str(spill))
    left: list[int] = []

    def buckets_on_disk(seen: int, total: int) -> None:
        left.append(sum(name.startswith(f"{BUCKET}=") for _, dirs, _ in os.walk(spill) for name in dirs))

    _, result = reconcile(build(tmp_path / "s"), 100, mode, on_progress=buckets_on_disk)
    k = result.buckets
    assert result.rows == N and result.spilled == ["old", "up0"] and k >= 3
    # two spilled inputs: bucket b's files are gone when bucket b + 1 is read (the last ones at the end)
    assert left == [2 * (k - b) for b in range(1, k)] + [2] and not any(spill.iterdir())


def test_the_files_a_reconciliation_writes_are_in_id_order_for_the_next_one(tmp_path):
    """Sampled id ranges: the second reconciliation of the feature reads the first one's files directly
    (no spill of the old rows, no check for repeated samples); hash buckets leave the next one a spill."""
    by_range, by_hash = build(tmp_path / "range"), build(tmp_path / "hash")
    reconcile(by_range, 100, "range")
    reconcile(by_hash, 100, "hash")
    after_range, second = reconcile(by_range, 100, "range", step=2)
    after_hash, second_hash = reconcile(by_hash, 100, "hash", step=2)
    assert second.spilled == ["up0"] and second.rows == N  # the upstream's files are still not in id order
    assert "old" in second_hash.spilled and second_hash.rows == N
    assert after_range.equals(after_hash)


def test_sampled_ranges_fall_back_to_hashes_when_ids_cannot_be_cut_evenly():
    ids = pl.int_range(0, 10_000, eager=True).shuffle(seed=3).cast(pl.String).str.zfill(5).alias("uid")
    part = sampled_ranges(ids.to_frame().lazy(), ["uid"], 10_000, 1_000)
    assert part is not None and part.mode == "range" and part.boundaries is not None
    assert part.boundaries.is_sorted() and part.boundaries.n_unique() == part.k - 1
    sizes = ids.to_frame().select(part.key({"uid": pl.String}).value_counts())
    assert sizes.unnest(sizes.columns[0])["count"].max() <= 1_500
    # one sample stored 6000 times: its bucket would hold 6 buckets' rows
    heavy = pl.concat([ids.head(4_000), pl.Series("uid", ["00042"] * 6_000)]).to_frame().lazy()
    assert sampled_ranges(heavy, ["uid"], 10_000, 1_000) is None
    pair = pl.DataFrame({"video": ["a"] * 10, "frame": list(range(10))}).lazy()
    assert sampled_ranges(pair, ["video", "frame"], 10, 2) is None  # several id columns: hashes
    assert sampled_ranges(ids.to_frame().lazy(), ["uid"], 10_000, 10_000) is None  # one bucket
    # more buckets than cuts that key a spill by streaming comparisons
    assert sampled_ranges(ids.to_frame().lazy(), ["uid"], 10_000, 10_000 // (MAX_COMPARED_CUTS + 2)) is None


def test_range_keys_by_comparisons_equal_the_search_in_the_cuts():
    """Up to MAX_COMPARED_CUTS cuts a row's range bucket is counted by comparisons (a spill streams);
    beyond, searched in the cuts: both give every id (nulls included) the same bucket."""
    uid = pl.Series("uid", [None, "", "a", "b", "b0", "c", "zz", "b", None], dtype=pl.String)
    for n in (3, MAX_COMPARED_CUTS + 5):
        cuts = pl.Series("boundaries", sorted({"b", "c", *[f"b{i:03d}" for i in range(n - 2)]}))
        part = Partitioning(cuts.len() + 1, ("uid",), cuts)
        keys = uid.to_frame().select(part.key({"uid": pl.String})).to_series()
        searched = uid.to_frame().select(pl.lit(cuts).search_sorted(pl.col("uid"), side="right")).to_series()
        assert keys.to_list() == searched.fill_null(0).to_list()
        assert keys[0] == 0 and keys[1] == 0 and keys[6] == part.k - 1
