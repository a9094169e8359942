"""The files the store writes follow what a write and its readers cost where the store lives: on a local disk
the CPU (LZ4, for ``write_metadata``'s delta-rs files as for reconciliation's bulk files; row groups of
``ROW_GROUP_ROWS`` that ``resolve_update``'s buckets are cut between), on S3 the bytes and the requests
(delta-rs' defaults: snappy, big row groups, each of which is requests for a reader; bulk files zstd). Either
way the rows read back the same, through the store and through plain readers."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from deltalake import DeltaTable

from metaxy_core import DeltaMetadataStore
from metaxy_core.store import _io
from metaxy_core.testing import seed_video_store, video_features

RAW = "video/raw"


def _codecs(store: DeltaMetadataStore, read: Callable[[str], bytes]) -> tuple[set[str], list[int]]:
    """Every codec of every column chunk of the first row group of each file of ``RAW``'s table, and the row
    groups of each file."""
    table = DeltaTable(store.table_uri(RAW), storage_options=store.storage_options or None)
    found: set[str] = set()
    groups: list[int] = []
    for name in table.get_add_actions(flatten=True).column("path").to_pylist():
        meta = pq.ParquetFile(io.BytesIO(read(name))).metadata
        found |= {meta.row_group(0).column(i).compression for i in range(meta.num_columns)}
        groups.append(meta.num_row_groups)
    return found, groups


def test_local_files_are_lz4_in_row_groups_and_s3_files_snappy_in_one_with_the_same_rows(
    tmp_path: Path, s3, monkeypatch
) -> None:
    monkeypatch.setattr(_io, "ROW_GROUP_ROWS", 50)  # 131,072 in production: 200-row files get 4 groups
    features = video_features()
    local = seed_video_store(DeltaMetadataStore(tmp_path / "store", project="p"), features, range(200))
    remote = seed_video_store(
        DeltaMetadataStore(s3.root, s3.storage_options, project="p"), features, range(200)
    )
    folder = Path(local.table_uri(RAW))
    prefix = remote.table_uri(RAW).removeprefix(f"s3://{s3.bucket}/")
    client = s3.client()
    # pyarrow's names: "LZ4" for Parquet's LZ4 codecs
    assert _codecs(local, lambda name: (folder / name).read_bytes()) == ({"LZ4"}, [4])
    assert _codecs(
        remote, lambda name: client.get_object(Bucket=s3.bucket, Key=f"{prefix}/{name}")["Body"].read()
    ) == ({"SNAPPY"}, [1])
    user = ["sample_uid", "metaxy_provenance_by_field", "metaxy_data_version"]
    by_store = [
        s.read_metadata(RAW, graph=features.graph).collect().select(user).sort("sample_uid")
        for s in (local, remote)
    ]
    assert by_store[0].equals(by_store[1])
    assert pl.read_delta(str(folder)).height == 200  # plain polars/delta-rs
