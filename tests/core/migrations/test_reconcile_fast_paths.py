"""Reconciliation's shortcuts are taken when their precondition holds, skipped when it does not, and never
change the result: rows paired by position with their upstream rows when both sides hold the same ids in the
same order (else the join)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.reconcile import CarryOverResult, carry_over
from metaxy_core.store.provenance import COMMIT_ORDER, CREATED_AT, PROVENANCE_BY_FIELD, WRITE_ID
from metaxy_core.testing import video_graph

EMB, RAW = "video/embeddings", "video/raw"
N = 400


def build(root: Path | str, *, emb_order: str, options: dict[str, str] | None = None) -> DeltaMetadataStore:
    """Upstream rows in id order; downstream rows in id order (``sorted``) or not (``shuffled``)."""
    old = video_graph(transcript="1", refined=False)
    store = DeltaMetadataStore(root, options, project="p")
    uid = pl.format("s{}", pl.col("i").cast(pl.String).str.zfill(6))
    for chunk in range(4):
        i = pl.int_range(chunk * N // 4, (chunk + 1) * N // 4, eager=True).alias("i").to_frame()
        raw = i.select(
            uid.alias("sample_uid"),
            pl.format("p{}", "i").alias("path"),
            pl.struct(pl.format("f{}", "i").alias("frames"), pl.format("a{}", "i").alias("audio")).alias(
                PROVENANCE_BY_FIELD
            ),
        )
        store.write_metadata(RAW, raw, graph=old)
        emb = i.select(uid.alias("sample_uid"), (pl.col("i") % 7).alias("dim"))
        if emb_order == "shuffled":
            emb = emb.sample(fraction=1.0, shuffle=True, seed=chunk)
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


def test_rows_in_the_same_id_order_are_paired_by_position_with_the_joins_result(tmp_path):
    # range buckets of one file per table: each bucket reads its rows in the order they were written
    paired, fast = reconcile(build(tmp_path / "sorted", emb_order="sorted"), 100)
    joined, slow = reconcile(build(tmp_path / "shuffled", emb_order="shuffled"), 100)
    assert fast.mode == "range" and fast.paired == fast.buckets > 1 and fast.rows == N
    assert slow.paired == 0 and slow.rows == N  # rows out of order: the join
    assert paired.equals(joined)


def test_rows_missing_upstream_fall_back_to_the_join(tmp_path):
    store = build(tmp_path / "s", emb_order="sorted")
    old = video_graph(transcript="1", refined=False)
    extra = pl.DataFrame({"sample_uid": ["s999999"], "dim": [1]}).with_columns(
        pl.struct(pl.lit("x").alias("embedding"), pl.lit("y").alias("transcript")).alias(PROVENANCE_BY_FIELD)
    )
    store.write_metadata(EMB, extra, graph=old)  # a sample whose upstream row is gone
    latest, result = reconcile(store, 10**6)
    assert result.paired == 0 and result.rows == N and result.missing == 1
    assert "s999999" not in latest["sample_uid"].to_list()


def test_on_s3_buckets_are_written_as_zstd_parquet_by_the_bulk_writer_with_the_local_result(tmp_path, s3):
    """The same bulk path as locally: polars' zstd Parquet uploaded, one Delta commit per bucket."""
    local, _ = reconcile(build(tmp_path / "local", emb_order="sorted"), 100)
    store = build(s3.root, emb_order="sorted", options=s3.storage_options)
    remote, result = reconcile(store, 100)
    assert result.commits == result.buckets > 1 and result.rows == N and result.paired == result.buckets
    assert remote.equals(local)
    table = DeltaTable(store.table_uri(EMB), storage_options=store.storage_options)
    paths = table.get_add_actions(flatten=True).column("path").to_pylist()
    assert len([p for p in paths if p.endswith(".zstd.parquet")]) == result.buckets
