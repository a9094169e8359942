"""Reconciliation's shortcuts are taken when their precondition holds, skipped when it does not, and never
change the result: rows paired by position with their upstream rows when both sides hold the same ids in the
same order (else the join); the old rows' provenance and data versions left unread when the Delta log proves
them defaults (else read and checked); the bulk path on S3."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from deltalake import DeltaTable, write_deltalake

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.reconcile import CarryOverResult, carry_over
from metaxy_core.store.provenance import (
    COMMIT_ORDER,
    CREATED_AT,
    DATA_VERSION,
    DATA_VERSION_BY_FIELD,
    FEATURE_VERSION,
    PROVENANCE,
    PROVENANCE_BY_FIELD,
    WRITE_ID,
)
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


def reconcile(
    store: DeltaMetadataStore, partition_rows: int, *, embedding: str = "1", refined_before: bool = False
) -> tuple[pl.DataFrame, CarryOverResult]:
    """Carry the embeddings over from the graph before (coarse lineage) to the refined one."""
    old = video_graph(transcript="1", refined=refined_before)
    new = video_graph(transcript="1", refined=True, embedding=embedding)
    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id=f"w{embedding}",
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


def test_upstream_rows_hashed_in_the_read_query_give_the_rows_of_the_separate_hashing(tmp_path):
    # one dependency with one row per sample: the new provenance is computed in the query that reads the
    # old rows; a table that may hold a sample twice (a chunk of it written again, the same rows) keeps the
    # newest row first, then hashes: the same carried rows either way
    fused, fast = reconcile(build(tmp_path / "once", emb_order="sorted"), 100)
    store = build(tmp_path / "twice", emb_order="sorted")
    again = store.read_metadata(RAW, graph=video_graph(transcript="1", refined=False)).collect()
    store.write_metadata(
        RAW,
        again.head(N // 4).select("sample_uid", "path", PROVENANCE_BY_FIELD),
        graph=video_graph(transcript="1", refined=False),
    )
    separate, slow = reconcile(store, 100)
    assert fast.hashed_with_reads == fast.buckets > 1 and slow.hashed_with_reads < slow.buckets
    assert fast.rows == slow.rows == N
    assert fused.equals(separate)


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


def test_local_bulk_files_are_lz4_read_by_plain_readers_with_the_rows_of_the_zstd_ones_on_s3(tmp_path, s3):
    """The codec follows what the write costs: CPU locally (LZ4), bytes on S3 (zstd); any Parquet reader
    (pyarrow here, delta-rs and polars through the store) reads both."""
    import pyarrow.parquet as pq

    local_store = build(tmp_path / "local", emb_order="sorted")
    local, result = reconcile(local_store, 100)
    table = DeltaTable(local_store.table_uri(EMB))
    bulk = [p for p in table.get_add_actions(flatten=True).column("path").to_pylist() if ".lz4." in p]
    assert len(bulk) == result.commits > 1
    codecs = {
        pq.ParquetFile(Path(table.table_uri.removeprefix("file://")) / name)
        .metadata.row_group(0)
        .column(0)
        .compression
        for name in bulk
    }
    assert codecs == {"LZ4"}  # pyarrow's name for Parquet's LZ4 codecs
    assert pl.read_delta(local_store.table_uri(EMB)).height == 2 * N  # old and carried rows, plain delta-rs
    remote_store = build(s3.root, emb_order="sorted", options=s3.storage_options)
    remote, _ = reconcile(remote_store, 100)
    assert remote.equals(local)


# ------------------------------------------------------------------------------ default data versions
def test_old_rows_recorded_with_default_data_versions_are_carried_without_reading_those_columns(
    tmp_path, monkeypatch
):
    from metaxy_core.migrations import reconcile as engine

    store = build(tmp_path / "s", emb_order="sorted")
    read: list[list[str]] = []
    original = engine.pair_rows
    monkeypatch.setattr(engine, "pair_rows", lambda todo, *a: read.append(todo.columns) or original(todo, *a))
    latest, result = reconcile(store, 100)
    assert result.default_data_versions_proven and result.rows == N
    assert all(DATA_VERSION not in cols and PROVENANCE not in cols for cols in read)
    # the same rows as when the columns are read (the fact withheld)
    monkeypatch.setattr(engine, "feature_default_data_versions", lambda *a: False)
    again, slow = reconcile(build(tmp_path / "t", emb_order="sorted"), 100)
    assert not slow.default_data_versions_proven and again.equals(latest)
    assert (latest[DATA_VERSION] == latest[PROVENANCE]).all()


def test_a_table_written_by_another_tool_without_the_fact_reads_the_columns(tmp_path):
    store = build(tmp_path / "s", emb_order="sorted")
    # another writer (plain delta-rs, no commit facts) appends rows of the old version
    rows = store.read_metadata(EMB, graph=video_graph(transcript="1", refined=False)).collect().head(0)
    extra = (
        pl.scan_delta(store.table_uri(EMB))
        .head(5)
        .collect()
        .with_columns(
            pl.format("x{}", "sample_uid").alias("sample_uid"), pl.lit(99, pl.Int64).alias(COMMIT_ORDER)
        )
        .select(rows.columns)
    )
    write_deltalake(store.table_uri(EMB), extra.to_arrow(), mode="append")
    latest, result = reconcile(store, 10**6)
    assert not result.default_data_versions_proven and result.rows == N and result.missing == 5


def test_custom_data_versions_are_never_taken_for_defaults(tmp_path):
    store = build(tmp_path / "s", emb_order="sorted")
    old = video_graph(transcript="1", refined=False)
    custom = (
        store.read_metadata(EMB, graph=old)
        .collect()
        .head(3)
        .with_columns(
            pl.struct(pl.lit("c1").alias("embedding"), pl.lit("c2").alias("transcript")).alias(
                DATA_VERSION_BY_FIELD
            ),
            pl.lit("custom").alias(DATA_VERSION),
        )
        .drop(FEATURE_VERSION, CREATED_AT, WRITE_ID, COMMIT_ORDER)
    )
    store.write_metadata(EMB, custom, graph=old)
    latest, result = reconcile(store, 10**6)
    assert not result.default_data_versions_proven
    kept = latest.filter(pl.col("sample_uid").is_in(custom["sample_uid"].to_list()))
    assert kept[DATA_VERSION].to_list() == ["custom"] * 3


def test_rows_carried_by_a_reconciliation_prove_their_defaults_to_the_next_one(tmp_path):
    store = build(tmp_path / "s", emb_order="sorted")
    _, first = reconcile(store, 100)
    # a second change (a field's code version): the bulk-written rows are carried again
    _, result = reconcile(store, 100, embedding="2", refined_before=True)
    assert first.default_data_versions_proven and result.default_data_versions_proven and result.rows == N
