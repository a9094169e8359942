"""Shared constants of the example project's tests (a plain module: test files never import conftest.py)."""

from __future__ import annotations

import sys
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "example_project"
MIGRATIONS = EXAMPLE_DIR / ".metaxy" / "migrations"
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

import example_project.features as features  # noqa: E402

from metaxy_core import FeatureGraph  # noqa: E402

#: samples in the tests' data set (the main job uses 2,000; the code paths are the same)
N_TEST = 400
#: the example's feature graph (the global graph its entrypoint registers into)
EXAMPLE_GRAPH: FeatureGraph = features.VideoRaw.graph
#: (migration id, kind, from stage, to stage), in chain order
CHAIN = [
    ("20250115_090000_audio_resampler_refactor", "python", "v1", "v2"),
    ("20250301_120000_thumbnails_and_batched_embeddings", "diff", "v2", "v3"),
    ("20250410_080000_frame_decoder_upgrade", "python", "v3", "v4"),
    ("20250420_100000_backfill_video_files_from_s3", "custom", None, None),
    ("20250425_140000_backfill_annotations_from_postgres", "custom", None, None),
]
#: features a migration writes; "*" steps (CustomMigration.execute) write the one named here
WRITES = {
    CHAIN[0][0]: {"video/audio", "text/transcript"},
    CHAIN[1][0]: {"video/thumbnails", "video/embeddings"},
    CHAIN[2][0]: {"video/frames", "video/embeddings", "video/thumbnails"},
    CHAIN[3][0]: {"video/files"},
    CHAIN[4][0]: {"video/annotations"},
}
