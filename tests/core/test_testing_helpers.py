"""metaxy_core.testing: the shared helpers do what the other tests rely on."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations import load_chain
from metaxy_core.testing import (
    S3Location,
    S3Server,
    seed_video_store,
    video_features,
    video_graph,
    write_migration,
)


def test_the_video_graph_changes_version_only_where_a_code_version_changed() -> None:
    base = video_graph()
    assert [str(k) for k in base.keys] == ["video/raw", "video/embeddings"]
    assert video_graph().snapshot_version == base.snapshot_version  # deterministic
    bumped = video_graph(embedding="2")
    assert bumped.feature_version("video/raw") == base.feature_version("video/raw")
    assert bumped.feature_version("video/embeddings") != base.feature_version("video/embeddings")
    three = video_graph(downstream="video/clip_scores", transcript="1", prefix="video")
    assert [str(k) for k in three.keys] == ["video/raw", "video/embeddings", "video/clip_scores"]


def test_a_seeded_store_has_nothing_left_to_compute(tmp_path: Path) -> None:
    features = video_features(downstream="video/clip_scores")
    store = seed_video_store(DeltaMetadataStore(tmp_path / "store"), features, [1, 2, 3])
    for feature in (features.Emb, features.Downstream):
        assert store.resolve_update(feature, graph=features.graph).counts() == {
            "added": 0,
            "changed": 0,
            "removed": 0,
        }
    assert store.read_metadata(features.Emb, graph=features.graph).collect().height == 3


def test_written_migrations_load_as_a_chain(tmp_path: Path) -> None:
    g1, g2, g3 = video_graph(), video_graph(embedding="2"), video_graph(embedding="3")
    write_migration(tmp_path, "20250101_000000_a", from_snapshot=g1, to_snapshot=g2)
    write_migration(
        tmp_path, "20250102_000000_b", parent="20250101_000000_a", from_snapshot=g2, to_snapshot=g3
    )
    chain = load_chain(tmp_path)
    assert [m.migration_id for m in chain] == ["20250101_000000_a", "20250102_000000_b"]
    assert chain.get("20250102_000000_b").to_snapshot_version == g3.snapshot_version


def test_a_stopped_s3_server_refuses_connections_and_keeps_its_buckets() -> None:
    with S3Server() as server:
        bucket = S3Location.create(server.endpoint)
        server.stop()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass
        server.start()
        names = [b["Name"] for b in bucket.client().list_buckets()["Buckets"]]
        assert bucket.bucket in names
