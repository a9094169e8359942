"""A two-feature graph over numbered samples, and its rows: tests build tables of any size and layout.

Sample ``i`` is the id ``"000042"`` (``ids=("uid",)``, strings that sort like the numbers) or the pair
``(video, frame) = (str(i // 7), i % 7)``. The raw feature has fields ``frames`` and ``audio`` (provenance
``f<i>``/``a<i>``); the embeddings feature depends on it with fields ``embedding`` (on the frames alone when
``refined``) and ``sync``: refining the lineage changes the embeddings' feature version, as a migration does.

Example:
    >>> g = numbered_graph("t/raw", "t/emb", refined=False)
    >>> store.write_metadata("t/raw", numbered_raw_rows(range(1000)), graph=g)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

from metaxy_core.graph import FeatureDep, FeatureGraph, FeatureSpec, FieldDep, FieldSpec
from metaxy_core.store import DeltaMetadataStore
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD

UID: tuple[str, ...] = ("uid",)


def numbered_graph(
    raw: str, emb: str, *, ids: Sequence[str] = UID, refined: bool, frames_version: str = "1"
) -> FeatureGraph:
    """``raw`` (frames, audio) -> ``emb`` (embedding, sync); ``refined``: embedding on the frames alone;
    ``frames_version``: the code version of the raw frames (another one changes both features' versions)."""
    g = FeatureGraph()
    fields = [FieldSpec(key="frames", code_version=frames_version), FieldSpec(key="audio")]
    g.add(FeatureSpec(key=raw, id_columns=list(ids), fields=fields))
    deps = [FieldDep(feature=raw, fields=["frames"])] if refined else None
    g.add(
        FeatureSpec(
            key=emb,
            id_columns=list(ids),
            deps=[FeatureDep(feature=raw)],
            fields=[FieldSpec(key="embedding", deps=deps), FieldSpec(key="sync")],
        )
    )
    return g


def numbered_ids(numbers: Iterable[int], ids: Sequence[str] = UID) -> pl.DataFrame:
    """Column ``i`` (the numbers) and the id columns of those samples."""
    frame = pl.DataFrame({"i": list(numbers)}, schema={"i": pl.Int64})
    if list(ids) == list(UID):
        return frame.with_columns(pl.col("i").cast(pl.String).str.zfill(6).alias("uid"))
    video, number = ids
    return frame.with_columns(
        (pl.col("i") // 7).cast(pl.String).alias(video), (pl.col("i") % 7).alias(number)
    )


def numbered_raw_rows(numbers: Iterable[int], ids: Sequence[str] = UID) -> pl.DataFrame:
    """Raw rows of those samples: their ids and the provenance of both fields."""
    return numbered_ids(numbers, ids).select(
        *ids,
        pl.struct(pl.format("f{}", "i").alias("frames"), pl.format("a{}", "i").alias("audio")).alias(
            PROVENANCE_BY_FIELD
        ),
    )


def numbered_emb_rows(
    numbers: Iterable[int],
    tag: str = "x",
    ids: Sequence[str] = UID,
    *,
    score: bool = False,
    provenance: bool = False,
) -> pl.DataFrame:
    """Embeddings rows: ``label`` ``<tag>-<i>``, ``score`` ``2·i`` when asked, and with ``provenance`` their
    own provenance struct (``f<i>``/``a<i>``: rows written without their upstream rows); else user columns
    only, the store computes the provenance."""
    extra = [(pl.col("i") * 2).alias("score")] if score else []
    if provenance:
        own = pl.struct(pl.format("f{}", "i").alias("embedding"), pl.format("a{}", "i").alias("sync"))
        extra.append(own.alias(PROVENANCE_BY_FIELD))
    label = pl.format("{}-{}", pl.lit(tag), "i").alias("label")
    return numbered_ids(numbers, ids).select(*ids, label, *extra)


def numbered_store(
    store: DeltaMetadataStore,
    raw: str,
    emb: str,
    graph: FeatureGraph,
    *,
    clustered: bool,
    n: int = 600,
    chunks: int = 6,
    ids: Sequence[str] = UID,
    score: bool = False,
) -> None:
    """Writes samples ``0..n-1`` of ``raw`` and then of ``emb`` under ``graph``, ``chunks`` commits each, of
    consecutive ids (``clustered``: files in id order) or interleaved ones; samples ``i % 50 == 3`` get no
    ``emb`` row (12 of 600: new samples for ``resolve_update``)."""
    parts = [
        list(range(c * n // chunks, (c + 1) * n // chunks)) if clustered else list(range(c, n, chunks))
        for c in range(chunks)
    ]
    for part in parts:
        store.write_metadata(raw, numbered_raw_rows(part, ids), graph=graph)
    for part in parts:
        rows = numbered_emb_rows([i for i in part if i % 50 != 3], "x", ids, score=score)
        store.write_metadata(emb, rows, graph=graph)
