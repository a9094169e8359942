"""Shared constants of the example project's tests (a plain module: test files never import conftest.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def graphql(url: str, query: str, variables: dict[str, Any] | None = None, *, timeout: float = 120) -> dict:
    """One GraphQL request to a Dagster webserver: its ``data`` (GraphQL errors fail the test, shown)."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # GraphQL errors come back as HTTP 500: show them
        raise AssertionError(f"{exc}: {exc.read()[:3000]!r}") from None
    assert not body.get("errors"), body["errors"]
    return body["data"]


@contextmanager
def serving(
    command: list[str], *, cwd: Path, env: dict[str, str], log_path: Path, port: int, timeout: float = 240
) -> Iterator[str]:
    """Run a Dagster webserver command (``dagster dev``, ``dg dev``) in its own process group until its
    GraphQL endpoint answers; yield that endpoint's URL; stop the whole group (SIGINT, then SIGKILL)."""
    url = f"http://127.0.0.1:{port}/graphql"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                assert process.poll() is None, log_path.read_text()[-4000:]
                try:
                    if graphql(url, "{ version }", timeout=30).get("version"):
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, f"{command[0]} did not serve GraphQL in {timeout:.0f}s"
                time.sleep(1)
            yield url
        finally:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
