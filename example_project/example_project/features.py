"""The example's feature graph: a multimodal video pipeline with field-level lineage.

::

    video/raw ─frames─▶ video/frames ─frames─▶ video/embeddings  (clip)
      │                       └──────frames──▶ video/thumbnails  (image, from S3)
      ├──audio─▶ video/audio ──waveform──────▶ text/transcript   (text)
      ├─────────▶ video/files        (object: S3 object metadata)
      └─frames──▶ video/annotations  (labels: human labels kept in PostgreSQL)

Field-level lineage means a change travels only along the fields that use it: ``text/transcript.text``
depends on ``video/audio.waveform`` alone, so a new frame decoder never touches transcripts, and a new audio
resampler never touches embeddings.

The graph is a function of the code's *stage* (:data:`STAGES`). The example has a history: the seed script
writes data under the oldest stage, each stage's snapshot is pushed, and the migrations in
``.metaxy/migrations/`` move the stored metadata stage by stage to the current code, which is what the
classes at the bottom of this module declare (the module ``metaxy.toml`` lists in ``entrypoints``).
"""

from __future__ import annotations

from datetime import datetime

from metaxy_core import Feature, FeatureDep, FeatureGraph, FeatureSpec, FieldDep, FieldSpec

#: the code's history, oldest first; each stage is one deployed snapshot
STAGES = ("v1", "v2", "v3", "v4")
#: the stage of the code in this repository
CURRENT_STAGE = STAGES[-1]

#: what changed at each stage (shown by the example's run script and the docs)
STAGE_NOTES = {
    "v1": "initial pipeline: raw videos -> audio / frames -> transcripts / embeddings",
    "v2": "audio resampler rewritten (same output): video/audio.waveform code_version 1 -> 2",
    "v3": "new video/thumbnails (from S3); batched CLIP inference (same output): "
    "video/embeddings.clip 1 -> 2",
    "v4": "frame decoder upgraded (same frames): video/frames.frames 1 -> 2; "
    "new video/files and video/annotations",
}

ID_COLUMNS = ["sample_uid"]


def _since(stage: str, first: str) -> bool:
    return STAGES.index(stage) >= STAGES.index(first)


def feature_specs(stage: str = CURRENT_STAGE) -> list[FeatureSpec]:
    """The feature specs of ``stage``, upstream first.

    A ``code_version`` bump says "the code producing this field changed"; every row's provenance for the
    field (and for the fields downstream of it) changes with it, which is what migrations reconcile.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    raw = "video/raw"
    specs = [
        # Root feature: its provenance comes from the data (content hashes of the video file).
        FeatureSpec(
            key=raw,
            id_columns=ID_COLUMNS,
            fields=[FieldSpec(key="frames", code_version="1"), FieldSpec(key="audio", code_version="1")],
        ),
        FeatureSpec(
            key="video/audio",
            id_columns=ID_COLUMNS,
            deps=[FeatureDep(feature=raw)],
            fields=[
                FieldSpec(
                    key="waveform",
                    code_version="2" if _since(stage, "v2") else "1",
                    deps=[FieldDep(feature=raw, fields=["audio"])],
                )
            ],
        ),
        FeatureSpec(
            key="video/frames",
            id_columns=ID_COLUMNS,
            deps=[FeatureDep(feature=raw)],
            fields=[
                FieldSpec(
                    key="frames",
                    code_version="2" if _since(stage, "v4") else "1",
                    deps=[FieldDep(feature=raw, fields=["frames"])],
                )
            ],
        ),
        FeatureSpec(
            key="text/transcript",
            id_columns=ID_COLUMNS,
            deps=[FeatureDep(feature="video/audio")],
            fields=[
                FieldSpec(
                    key="text", code_version="1", deps=[FieldDep(feature="video/audio", fields=["waveform"])]
                )
            ],
        ),
        FeatureSpec(
            key="video/embeddings",
            id_columns=ID_COLUMNS,
            deps=[FeatureDep(feature="video/frames")],
            fields=[
                FieldSpec(
                    key="clip",
                    code_version="2" if _since(stage, "v3") else "1",
                    deps=[FieldDep(feature="video/frames", fields=["frames"])],
                )
            ],
        ),
    ]
    if _since(stage, "v3"):
        specs.append(
            FeatureSpec(
                key="video/thumbnails",
                id_columns=ID_COLUMNS,
                deps=[FeatureDep(feature="video/frames")],
                fields=[
                    FieldSpec(
                        key="image",
                        code_version="1",
                        deps=[FieldDep(feature="video/frames", fields=["frames"])],
                    )
                ],
            )
        )
    if _since(stage, "v4"):
        specs.append(
            FeatureSpec(
                key="video/files",
                id_columns=ID_COLUMNS,
                deps=[FeatureDep(feature=raw)],
                fields=[FieldSpec(key="object", code_version="1")],  # no deps given: every field of video/raw
            )
        )
        specs.append(
            FeatureSpec(
                key="video/annotations",
                id_columns=ID_COLUMNS,
                deps=[FeatureDep(feature=raw)],
                fields=[
                    FieldSpec(key="labels", code_version="1", deps=[FieldDep(feature=raw, fields=["frames"])])
                ],
            )
        )
    return specs


def graph_at(stage: str) -> FeatureGraph:
    """A fresh :class:`FeatureGraph` for ``stage`` (the seed script writes and pushes with these)."""
    graph = FeatureGraph()
    for spec in feature_specs(stage):
        graph.add(spec)
    return graph


def snapshot_versions() -> dict[str, str]:
    """Snapshot version of every stage; the migration files name these."""
    return {stage: graph_at(stage).snapshot_version for stage in STAGES}


# ---------------------------------------------------------------------------------------------------------
# The current code: importing this module registers these classes in the active graph.
# Typed class attributes document the user columns each feature's rows carry.
_SPECS = {spec.key.to_string(): spec for spec in feature_specs(CURRENT_STAGE)}


class VideoRaw(Feature, spec=_SPECS["video/raw"]):
    """One row per video: where it lives and what it is. Provenance = content hashes of the file."""

    uri: str
    duration_s: float
    fps: int
    width: int
    height: int


class VideoAudio(Feature, spec=_SPECS["video/audio"]):
    """The audio track, resampled to 16 kHz mono."""

    sample_rate: int
    channels: int
    audio_duration_s: float


class VideoFrames(Feature, spec=_SPECS["video/frames"]):
    """Frames decoded at 1 fps."""

    n_frames: int
    frame_width: int
    frame_height: int


class Transcript(Feature, spec=_SPECS["text/transcript"]):
    """Speech-to-text of the audio track (depends only on ``video/audio.waveform``)."""

    text: str
    language: str
    n_words: int


class VideoEmbeddings(Feature, spec=_SPECS["video/embeddings"]):
    """CLIP embedding of the frames (depends only on ``video/frames.frames``)."""

    model: str
    clip: list[float]


class VideoThumbnails(Feature, spec=_SPECS["video/thumbnails"]):
    """A JPEG thumbnail per video, rendered by another team into S3 (``thumbnails/<sample_uid>.jpg``)."""

    thumbnail_uri: str
    thumbnail_bytes: int
    thumbnail_etag: str


class VideoFiles(Feature, spec=_SPECS["video/files"]):
    """S3 object metadata of each video file (size, ETag, last modified)."""

    object_uri: str
    size_bytes: int
    etag: str
    last_modified: datetime


class VideoAnnotations(Feature, spec=_SPECS["video/annotations"]):
    """Human labels, kept by the labelling tool in PostgreSQL (``public.video_annotations``)."""

    label: str
    annotator: str
    confidence: float
    annotated_at: datetime


__all__ = [
    "CURRENT_STAGE",
    "STAGES",
    "Transcript",
    "VideoAnnotations",
    "VideoAudio",
    "VideoEmbeddings",
    "VideoFiles",
    "VideoFrames",
    "VideoRaw",
    "VideoThumbnails",
    "feature_specs",
    "graph_at",
    "snapshot_versions",
]
