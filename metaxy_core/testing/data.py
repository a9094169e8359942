"""Rows for the video graph of :mod:`metaxy_core.testing.graphs` and a store seeded with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from metaxy_core.store.delta import DeltaMetadataStore
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD
from metaxy_core.testing.graphs import VideoFeatures


def video_raw_rows(
    uids: Sequence[Any], *, frames: str = "f", audio: str = "a", **user: Sequence[Any]
) -> pl.DataFrame:
    """Root rows whose provenance is a fake content hash per field (``f1`` / ``a1`` for sample 1).

    ``path`` defaults to ``s3://videos/<uid>.mp4``; other keyword arguments add user columns.
    """
    return pl.DataFrame(
        {
            "sample_uid": list(uids),
            "path": user.pop("path", [f"s3://videos/{u}.mp4" for u in uids]),
            **user,
            PROVENANCE_BY_FIELD: [{"frames": f"{frames}{u}", "audio": f"{audio}{u}"} for u in uids],
        }
    )


def seed_video_store(
    store: DeltaMetadataStore,
    features: VideoFeatures,
    uids: Sequence[Any],
    *,
    frames: str = "f",
    audio: str = "a",
    dim: int = 512,
    score: float = 0.5,
) -> DeltaMetadataStore:
    """Write raw rows for ``uids`` and every downstream feature computed from them: all up to date.

    Example:
        >>> seed_video_store(DeltaMetadataStore(tmp / "store"), video_features(), [1, 2, 3])
    """
    graph = features.graph
    store.write_metadata(features.Raw, video_raw_rows(uids, frames=frames, audio=audio), graph=graph)
    added = store.resolve_update(features.Emb, graph=graph).collect().added
    store.write_metadata(features.Emb, added.with_columns(dim=pl.lit(dim)), graph=graph)
    if features.Downstream is not None:
        added = store.resolve_update(features.Downstream, graph=graph).collect().added
        store.write_metadata(features.Downstream, added.with_columns(score=pl.lit(score)), graph=graph)
    return store
