"""Deterministic synthetic data for the example, and the seeding of the store, S3 and PostgreSQL.

Everything derives from ``(n_samples, seed)``: the same arguments give byte-identical videos, the same rows
and the same provenance hashes on every machine.

* :func:`seed_store` writes the metadata the *old* pipeline (stage ``v1``) produced, then pushes the
  snapshots of the stages the project went through (``v1``..``v3``); with ``deploy=True`` it also pushes the
  current code's snapshot, which is what ``metaxy push`` does when a release goes live.
* :func:`seed_s3` uploads the video files and thumbnails the S3 migrations read.
* :func:`seed_postgres` fills the labelling tool's ``video_annotations`` table.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from example_project.features import STAGES, graph_at
from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD

log = logging.getLogger(__name__)

N_SAMPLES = 2000
SEED = 7
MEDIA_BUCKET = "example-media"
VIDEO_PREFIX = "videos/"
THUMBNAIL_PREFIX = "thumbnails/"
ANNOTATIONS_TABLE = "video_annotations"
#: stage the stored metadata was written under
OLD_STAGE = STAGES[0]
#: share of videos that also left a zero-byte placeholder behind (an aborted first upload attempt)
PLACEHOLDER_EVERY = 37
#: rows/objects for videos that were deleted from the dataset (the migrations must ignore them)
ORPHANS = 25

_WORDS = (
    "the a cat dog runs jumps over under bright dark river city night morning music crowd speaks laughs "
    "quickly slowly camera pans zooms scene outdoor indoor street forest beach car train people talking"
).split()
_LABELS = ("sports", "music", "cooking", "travel", "news", "gaming", "nature", "education")
_ANNOTATORS = ("ana", "bo", "chen", "dara", "eli")


def sample_uid(i: int) -> str:
    return f"vid_{i:05d}"


@dataclass(frozen=True)
class Video:
    """One synthetic video: its id, file layout and the attributes the pipeline would extract."""

    sample_uid: str
    index: int
    seed: int

    @cached_property
    def _rng(self) -> random.Random:
        return random.Random(f"{self.seed}:{self.sample_uid}")

    @cached_property
    def attrs(self) -> dict[str, Any]:
        rng = self._rng
        recorded = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(0, 365))
        return {
            "size_bytes": rng.randrange(4 * 1024, 48 * 1024),
            "duration_s": round(rng.uniform(5.0, 600.0), 2),
            "fps": rng.choice((24, 25, 30, 60)),
            "resolution": rng.choice(((1280, 720), (1920, 1080), (640, 360))),
            "recorded": recorded,
            "thumb_bytes": rng.randrange(1024, 3 * 1024),
        }

    @property
    def key(self) -> str:
        recorded: datetime = self.attrs["recorded"]
        return f"{VIDEO_PREFIX}{recorded:%Y/%m}/{self.sample_uid}.mp4"

    @property
    def placeholder_key(self) -> str | None:
        """A zero-byte object an aborted upload left behind, same file name in another folder."""
        return (
            f"{VIDEO_PREFIX}_incomplete/{self.sample_uid}.mp4"
            if self.index % PLACEHOLDER_EVERY == 3
            else None
        )

    @property
    def thumbnail_key(self) -> str:
        return f"{THUMBNAIL_PREFIX}{self.sample_uid}.jpg"

    def body(self) -> bytes:
        return random.Random(f"{self.seed}:{self.sample_uid}:body").randbytes(self.attrs["size_bytes"])

    def thumbnail(self) -> bytes:
        return random.Random(f"{self.seed}:{self.sample_uid}:thumb").randbytes(self.attrs["thumb_bytes"])

    def rng(self, purpose: str) -> random.Random:
        return random.Random(f"{self.seed}:{self.sample_uid}:{purpose}")


def videos(n_samples: int = N_SAMPLES, seed: int = SEED) -> list[Video]:
    return [Video(sample_uid(i), i, seed) for i in range(n_samples)]


def orphan_videos(n_samples: int = N_SAMPLES, seed: int = SEED) -> list[Video]:
    """Videos deleted from the dataset: their files and labels still exist, the store has no rows for them."""
    return [Video(sample_uid(n_samples + 50_000 + i), n_samples + 50_000 + i, seed) for i in range(ORPHANS)]


# ----------------------------------------------------------------------------------- the (old) pipeline
def raw_rows(items: list[Video]) -> pl.DataFrame:
    """``video/raw`` rows; a root feature brings its own provenance: content hashes of the file."""
    uids, uris, durations, fps, widths, heights, frames_hash, audio_hash = ([] for _ in range(8))
    for v in items:
        body = v.body()
        uids.append(v.sample_uid)
        uris.append(f"s3://{MEDIA_BUCKET}/{v.key}")
        durations.append(v.attrs["duration_s"])
        fps.append(v.attrs["fps"])
        widths.append(v.attrs["resolution"][0])
        heights.append(v.attrs["resolution"][1])
        frames_hash.append(hashlib.sha256(b"video-stream\0" + body).hexdigest()[:32])
        audio_hash.append(hashlib.sha256(b"audio-stream\0" + body).hexdigest()[:32])
    return pl.DataFrame(
        {
            "sample_uid": uids,
            "uri": uris,
            "duration_s": durations,
            "fps": fps,
            "width": widths,
            "height": heights,
            PROVENANCE_BY_FIELD: [
                {"frames": f, "audio": a} for f, a in zip(frames_hash, audio_hash, strict=True)
            ],
        },
        schema_overrides={"fps": pl.Int64, "width": pl.Int64, "height": pl.Int64},
    )


def _audio(v: Video) -> dict[str, Any]:
    return {"sample_rate": 16_000, "channels": 1, "audio_duration_s": v.attrs["duration_s"]}


def _frames(v: Video) -> dict[str, Any]:
    return {"n_frames": int(math.ceil(v.attrs["duration_s"])), "frame_width": 224, "frame_height": 224}


def _transcript(v: Video) -> dict[str, Any]:
    rng = v.rng("transcript")
    words = [rng.choice(_WORDS) for _ in range(rng.randrange(5, 16))]
    return {
        "text": " ".join(words).capitalize() + ".",
        "language": rng.choice(("en", "en", "en", "de", "fr")),
        "n_words": len(words),
    }


def _embedding(v: Video) -> dict[str, Any]:
    rng = v.rng("clip")
    vec = [rng.gauss(0.0, 1.0) for _ in range(8)]
    norm = math.sqrt(sum(x * x for x in vec))
    return {"model": "clip-vit-b32", "clip": [round(x / norm, 6) for x in vec]}


#: what the old pipeline computed for each downstream feature (user columns per sample)
PIPELINE: dict[str, Callable[[Video], dict[str, Any]]] = {
    "video/audio": _audio,
    "video/frames": _frames,
    "text/transcript": _transcript,
    "video/embeddings": _embedding,
}
_SCHEMAS = {"video/embeddings": {"clip": pl.List(pl.Float64)}}


def compute(feature: str, increment: pl.DataFrame, by_uid: dict[str, Video]) -> pl.DataFrame:
    """Run the pipeline step of ``feature`` for the samples of a ``resolve_update`` increment."""
    step = PIPELINE[feature]
    rows = [step(by_uid[uid]) for uid in increment["sample_uid"]]
    columns = pl.DataFrame(rows, schema_overrides=_SCHEMAS.get(feature)) if rows else None
    if columns is None:
        return increment
    return pl.concat([increment, columns], how="horizontal")


# ---------------------------------------------------------------------------------------- seeding
@dataclass(frozen=True)
class SeedReport:
    rows_by_feature: dict[str, int]
    snapshots: dict[str, str]
    deployed: str | None


def reset_store(root: str | Path) -> None:
    """Delete a local store folder (the example's store is disposable; never point this at real data)."""
    path = Path(root)
    if path.exists():
        shutil.rmtree(path)


def seed_store(
    store: DeltaMetadataStore,
    *,
    n_samples: int = N_SAMPLES,
    seed: int = SEED,
    deploy: bool = True,
    current_graph: FeatureGraph | None = None,
) -> SeedReport:
    """Write what the ``v1`` pipeline produced, push the history's snapshots, maybe deploy the current one.

    Call on an empty store (see :func:`reset_store`): rows are appended, so seeding twice duplicates
    history (reads still see one row per sample).
    """
    items = videos(n_samples, seed)
    by_uid = {v.sample_uid: v for v in items}
    old = graph_at(OLD_STAGE)
    rows: dict[str, int] = {}
    rows["video/raw"] = store.write_metadata("video/raw", raw_rows(items), graph=old)
    for key in old.topological_order():
        name = key.to_string()
        if name == "video/raw":
            continue
        increment = store.resolve_update(key, graph=old).collect()
        frame = compute(name, increment.added.drop("metaxy_provenance"), by_uid)
        rows[name] = store.write_metadata(key, frame, graph=old)
    snapshots = {}
    for stage in STAGES[:-1]:
        snapshots[stage] = store.push_snapshot(graph_at(stage)).snapshot_version
    deployed = None
    if deploy:
        current = current_graph if current_graph is not None else FeatureGraph.get_active()
        deployed = store.push_snapshot(current).snapshot_version
    log.info("seeded %s: %s", store.root_uri, rows)
    return SeedReport(rows_by_feature=rows, snapshots=snapshots, deployed=deployed)


def seed_s3(
    client: Any,
    *,
    n_samples: int = N_SAMPLES,
    seed: int = SEED,
    bucket: str = MEDIA_BUCKET,
    workers: int = 8,
    direct_put: Callable[[str, str, bytes], None] | None = None,
) -> dict[str, int]:
    """Upload every video (various sizes, date-partitioned keys), aborted-upload placeholders and thumbnails.

    ``direct_put(bucket, key, body)`` replaces the boto3 upload (see ``S3Server.direct_put``). Idempotent:
    objects are overwritten with identical bytes.
    """
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    items = videos(n_samples, seed) + orphan_videos(n_samples, seed)
    puts: list[tuple[str, Callable[[], bytes]]] = []
    for v in items:
        puts.append((v.key, v.body))
        puts.append((v.thumbnail_key, v.thumbnail))
        if v.placeholder_key:
            puts.append((v.placeholder_key, bytes))

    def put(item: tuple[str, Callable[[], bytes]]) -> None:
        key, body = item
        client.put_object(Bucket=bucket, Key=key, Body=body())

    if direct_put is not None:
        for key, body in puts:
            direct_put(bucket, key, body())
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(put, puts))
    counts = {
        "videos": n_samples,
        "deleted_videos": len(items) - n_samples,
        "placeholders": sum(1 for v in items if v.placeholder_key),
        "thumbnails": len(items),
    }
    log.info("seeded s3://%s: %s", bucket, counts)
    return counts


def seed_postgres(database_url: str, *, n_samples: int = N_SAMPLES, seed: int = SEED) -> int:
    """(Re)create ``video_annotations`` with one label per video, plus labels of deleted videos."""
    import psycopg

    items = videos(n_samples, seed) + orphan_videos(n_samples, seed)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {ANNOTATIONS_TABLE}")
        conn.execute(
            f"""CREATE TABLE {ANNOTATIONS_TABLE} (
                    sample_uid   text PRIMARY KEY,
                    label        text NOT NULL,
                    annotator    text NOT NULL,
                    confidence   double precision NOT NULL,
                    annotated_at timestamptz NOT NULL
                )"""
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                f"COPY {ANNOTATIONS_TABLE} (sample_uid, label, annotator, confidence, annotated_at)"
                " FROM STDIN"
            ) as copy,
        ):
            for v in items:
                rng = v.rng("label")
                annotated = datetime(2024, 3, 1, tzinfo=UTC) + timedelta(
                    minutes=rng.randrange(0, 360 * 24 * 60)
                )
                copy.write_row(
                    (
                        v.sample_uid,
                        rng.choice(_LABELS),
                        rng.choice(_ANNOTATORS),
                        round(rng.uniform(0.5, 1.0), 3),
                        annotated,
                    )
                )
    log.info("seeded %s: %d rows", ANNOTATIONS_TABLE, len(items))
    return len(items)
