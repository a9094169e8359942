"""A local store under a folder whose name needs escaping in a URL (spaces, ``#``, ``%``, non-ASCII) works
like any other: delta-rs names its data files with percent-encoded ``file://`` URIs, which every read used to
fail on ("No such file or directory")."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.reconcile import carry_over
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD
from metaxy_core.testing import video_graph

RAW, EMB = "video/raw", "video/embeddings"
N = 300


@pytest.mark.parametrize("folder", ["my store", "café #1", "100% done"])
def test_a_store_whose_path_needs_escaping_writes_reads_resolves_reconciles_and_compacts(
    tmp_path: Path, folder: str
) -> None:
    old = video_graph(transcript="1", refined=False)
    new = video_graph(transcript="1", refined=True)
    store = DeltaMetadataStore(tmp_path / folder / "store", project="p")
    i = pl.int_range(0, N, eager=True).alias("i").to_frame()
    raw = i.select(
        pl.format("s{}", "i").alias("sample_uid"),
        pl.format("p{}", "i").alias("path"),
        pl.struct(pl.format("f{}", "i").alias("frames"), pl.format("a{}", "i").alias("audio")).alias(
            PROVENANCE_BY_FIELD
        ),
    )
    store.write_metadata(RAW, raw, graph=old)
    store.write_metadata(
        EMB, i.select(pl.format("s{}", "i").alias("sample_uid"), pl.col("i").alias("dim")), graph=old
    )
    assert store.read_metadata(RAW, graph=old).collect().height == N
    assert len(store.resolve_update(EMB, graph=old).changed) == 0  # written from the upstream: up to date

    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old,
        new_graph=new,
        write_id="w",
        snapshot_version=new.snapshot_version,
    )
    assert result.rows == N
    carried = store.read_metadata(EMB, graph=new).collect()
    assert carried.height == N and carried.sort("sample_uid")["dim"].to_list() == sorted(range(N), key=str)
    store.optimize(EMB)
    assert store.read_metadata(EMB, graph=new).collect().height == N
    assert len(store.resolve_update(EMB, graph=new).changed) == 0
