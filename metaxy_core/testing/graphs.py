"""The small video feature graph most tests and benchmarks use, declared in one place.

``<prefix>/raw`` (root: ``frames``, ``audio``; user column ``path``) feeds ``<prefix>/embeddings``
(``embedding`` <- ``frames``, optionally ``transcript`` <- ``audio``; user column ``dim``), optionally
followed by one downstream feature (``score``). Every argument is a code version (or a switch), so a test
builds the "before" and "after" graphs of a migration by bumping one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from metaxy_core.graph import Feature, FeatureDep, FeatureGraph, FeatureSpec, FieldDep, FieldSpec

RAW = "video/raw"
EMBEDDINGS = "video/embeddings"


@dataclass(frozen=True)
class VideoFeatures:
    """The declared graph and its feature classes (``downstream`` is None when none was asked for)."""

    graph: FeatureGraph
    Raw: type[Feature]
    Emb: type[Feature]
    Downstream: type[Feature] | None = None


def declare_video_features(
    *,
    embedding: str = "1",
    transcript: str | None = None,
    frames: str = "1",
    audio: str = "1",
    refined: bool = True,
    downstream: str | None = None,
    downstream_version: str = "1",
    prefix: str = "video",
) -> VideoFeatures:
    """Declare the video features into the active graph (what a project's entrypoint module does).

    Args:
        embedding: code version of ``embeddings.embedding``.
        transcript: code version of ``embeddings.transcript``; None leaves the field out.
        frames: code version of ``raw.frames``.
        audio: code version of ``raw.audio``.
        refined: field-level lineage (``embedding`` <- ``frames``, ``transcript`` <- ``audio``); False makes
            every embeddings field depend on every raw field.
        downstream: key of a third feature downstream of the embeddings (field ``score``), e.g.
            ``"video/clip_scores"``; None leaves it out.
        downstream_version: code version of the downstream feature's ``score``.
        prefix: namespace of the keys (``video/raw``, ``video/embeddings`` by default).

    Example:
        >>> with FeatureGraph().use():
        ...     features = declare_video_features(embedding="2")
    """
    raw_key, emb_key = f"{prefix}/raw", f"{prefix}/embeddings"

    class VideoRaw(
        Feature,
        spec=FeatureSpec(
            key=raw_key,
            id_columns=["sample_uid"],
            fields=[FieldSpec(key="frames", code_version=frames), FieldSpec(key="audio", code_version=audio)],
        ),
    ):
        path: str

    def lineage(field: str) -> list[FieldDep] | None:
        return [FieldDep(feature=raw_key, fields=[field])] if refined else None

    fields = [FieldSpec(key="embedding", code_version=embedding, deps=lineage("frames"))]
    if transcript is not None:
        fields.append(FieldSpec(key="transcript", code_version=transcript, deps=lineage("audio")))

    class VideoEmbeddings(
        Feature,
        spec=FeatureSpec(
            key=emb_key, id_columns=["sample_uid"], deps=[FeatureDep(feature=VideoRaw)], fields=fields
        ),
    ):
        dim: int

    after: type[Feature] | None = None
    if downstream is not None:

        class VideoDownstream(
            Feature,
            spec=FeatureSpec(
                key=downstream,
                id_columns=["sample_uid"],
                deps=[FeatureDep(feature=VideoEmbeddings)],
                fields=[FieldSpec(key="score", code_version=downstream_version)],
            ),
        ):
            score: float

        after = VideoDownstream
    return VideoFeatures(FeatureGraph.get_active(), VideoRaw, VideoEmbeddings, after)


def video_features(**versions: object) -> VideoFeatures:
    """:func:`declare_video_features` into a fresh graph (not left active)."""
    graph = FeatureGraph()
    with graph.use():
        return declare_video_features(**versions)  # type: ignore[arg-type]


def video_graph(**versions: object) -> FeatureGraph:
    """A fresh graph holding the video features; the same arguments as :func:`declare_video_features`."""
    return video_features(**versions).graph
