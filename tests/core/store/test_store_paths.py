"""A local store under a folder whose name needs escaping in a URL (spaces, ``#``, ``%``, non-ASCII) works
like any other: delta-rs names its data files with percent-encoded ``file://`` URIs, which every read used to
fail on ("No such file or directory")."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations.reconcile import carry_over
from metaxy_core.testing import seed_video_store, video_features

RAW, EMB = "video/raw", "video/embeddings"
N = 300


@pytest.mark.parametrize("folder", ["my store", "café #1", "100% done"])
def test_a_store_whose_path_needs_escaping_writes_reads_resolves_reconciles_and_compacts(
    tmp_path: Path, folder: str
) -> None:
    old = video_features(transcript="1", refined=False)
    new = video_features(transcript="1", refined=True).graph
    store = seed_video_store(DeltaMetadataStore(tmp_path / folder / "store", project="p"), old, range(N))
    assert store.read_metadata(RAW, graph=old.graph).collect().height == N
    assert len(store.resolve_update(EMB, graph=old.graph).changed) == 0  # seeded from the upstream: current

    result = carry_over(
        store,
        new.spec(EMB),
        old_graph=old.graph,
        new_graph=new,
        write_id="w",
        snapshot_version=new.snapshot_version,
    )
    assert result.rows == N
    carried = store.read_metadata(EMB, graph=new).collect()
    assert carried.height == N and set(carried["dim"]) == {512}  # user columns carried
    store.optimize(EMB)
    assert store.read_metadata(EMB, graph=new).collect().height == N
    assert len(store.resolve_update(EMB, graph=new).changed) == 0
