"""The newcomer's path, literally: the example under `dagster dev`, then one ordinary code change.

1. apply the example's chain with the CLI (``metaxy migrations apply``), then start ``dagster dev``;
2. within one tick of the history sensor, GraphQL shows every migration asset materialized with the CLI run's
   id, and the feature assets the rows each migration wrote; the lineage runs migration -> feature;
3. bump a feature's code version, ``metaxy push``, ``metaxy migrations generate``, reload the code location:
   every asset, job, check, schedule and sensor is still there (the applied PythonMigrations build their
   operations from their own snapshots), plus the new migration, and the snapshot sensor's next tick requests
   exactly it.

It works on a copy of the example (the test edits its code). Slow: a real ``dagster dev`` (webserver and
daemon), the local S3 and PostgreSQL servers the example's backfills read.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from example_project.servers import free_port
from example_testkit import CHAIN, EXAMPLE_DIR, WRITES, graphql, serving

from metaxy_core import DeltaMetadataStore
from metaxy_core.migrations import progress

LOCATION = "metaxy_example"
REPOSITORIES = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
  jobs { name } sensors { name } schedules { name } } } ... on PythonError { message } } }"""
ASSETS = """{ assetNodes { assetKey { path } dependencyKeys { path }
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }"""
MATERIALIZATIONS = """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations { runId metadataEntries { label ... on TextMetadataEntry { text }
  ... on IntMetadataEntry { intValue } } } } } }"""
RELOAD = """mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename
  ... on WorkspaceLocationEntry { locationOrLoadError { __typename ... on PythonError { message } } } } }"""
SENSOR_DRY_RUN = """mutation($s: SensorSelector!, $c: String) { sensorDryRun(selectorData: $s, cursor: $c) {
  __typename
  ... on DryRunInstigationTick { evaluationResult { skipReason error { message }
  runRequests { runKey assetSelection { path } } } } ... on PythonError { message } } }"""


def metaxy(project: Path, *args: str) -> str:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "metaxy"), *args],
        cwd=project,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def materializations(url: str, key: list[str]) -> list[dict[str, Any]]:
    asset = graphql(url, MATERIALIZATIONS, {"key": {"path": key}})["assetOrError"]
    out = []
    for event in asset.get("assetMaterializations") or []:
        values = {m["label"]: m.get("text", m.get("intValue")) for m in event["metadataEntries"]}
        out.append({"runId": event["runId"], **values})
    return out


def definitions_summary(url: str) -> dict[str, Any]:
    [repo] = graphql(url, REPOSITORIES)["repositoriesOrError"]["nodes"]
    nodes = graphql(url, ASSETS)["assetNodes"]
    return {
        "jobs": {j["name"] for j in repo["jobs"]} - {"__ASSET_JOB"},
        "sensors": {s["name"] for s in repo["sensors"]},
        "schedules": {s["name"] for s in repo["schedules"]},
        "assets": {"/".join(n["assetKey"]["path"]) for n in nodes},
        "checks": sum(len(n["assetChecksOrError"].get("checks") or []) for n in nodes),
        "deps": {
            "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes
        },
    }


@pytest.mark.slow
def test_newcomer_path_cli_apply_history_then_a_code_change_keeps_the_location_whole(
    seeded, tmp_path: Path
) -> None:
    project = tmp_path / "example"
    shutil.copytree(
        EXAMPLE_DIR, project, ignore=shutil.ignore_patterns("store", ".runtime", "__pycache__", "*.pyc")
    )
    metaxy(project, "migrations", "apply")  # the whole chain, from the command line
    store = DeltaMetadataStore(os.environ["METAXY_STORE_ROOT"], project="example")
    states = progress.read_states(store, "example")
    cli_runs = {mid: states[mid].run_id for mid, *_ in CHAIN}
    assert all(states[mid].completed for mid in cli_runs)

    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster_home")}
    (tmp_path / "dagster_home").mkdir()
    command = [sys.executable, "-m", "dagster", "dev", "--host", "127.0.0.1", "--port", str(port)]
    with serving(command, cwd=project, env=env, log_path=tmp_path / "dev.log", port=port) as url:
        before = definitions_summary(url)
        migrations = {f"metaxy/migrations/{mid}" for mid, *_ in CHAIN}
        assert migrations <= before["assets"] and "video/audio" in before["assets"]
        assert before["sensors"] == {"metaxy_history_sensor", "metaxy_snapshot_sensor"}
        # lineage: migration -> the features it writes
        for mid, written in WRITES.items():
            for feature in written:
                assert f"metaxy/migrations/{mid}" in before["deps"][feature], (mid, feature)

        # One tick of the history sensor (it runs by default; the daemon ticks it): the CLI's applies show.
        deadline = time.monotonic() + 180
        while not all(materializations(url, ["metaxy", "migrations", mid]) for mid in cli_runs):
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()[-4000:]
            time.sleep(2)
        for mid, run_id in cli_runs.items():
            [latest] = materializations(url, ["metaxy", "migrations", mid])
            assert latest["metaxy/applied_by_run"] == latest["metaxy/run_id"] == run_id
            assert latest["runId"] == ""  # a runless event: no Dagster run applied it
        audio = {m["metaxy/migration_id"]: m for m in materializations(url, ["video", "audio"])}
        assert audio[CHAIN[0][0]]["metaxy/rows_written"] == audio[CHAIN[0][0]]["dagster/row_count"] > 0

        # An ordinary code change: transcripts get a new code version; push; generate; reload.
        features_py = project / "example_project" / "features.py"
        source = features_py.read_text()
        changed = re.sub(r'key="text", code_version="1"', 'key="text", code_version="2"', source)
        assert changed != source
        features_py.write_text(changed)
        metaxy(project, "push")
        out = metaxy(project, "migrations", "generate", "--name", "transcript-v2")
        [new] = [p.stem for p in (project / ".metaxy" / "migrations").glob("*_transcript_v2.yaml")]
        assert "text/transcript" in out
        reloaded = graphql(url, RELOAD, {"name": LOCATION})["reloadRepositoryLocation"]
        assert reloaded["locationOrLoadError"]["__typename"] == "RepositoryLocation", reloaded
        after = definitions_summary(url)
        assert after["jobs"] == before["jobs"] and after["sensors"] == before["sensors"]
        assert after["schedules"] == before["schedules"]
        assert after["assets"] == before["assets"] | {f"metaxy/migrations/{new}"}
        assert after["checks"] == before["checks"] + 1
        assert f"metaxy/migrations/{new}" in after["deps"]["text/transcript"]

        selector = {"repositoryName": "__repository__", "repositoryLocationName": LOCATION}
        sensor = {**selector, "sensorName": "metaxy_snapshot_sensor"}
        tick = graphql(
            url, SENSOR_DRY_RUN, {"s": sensor, "c": None}
        )  # its next tick (the "Test sensor" button)
        result = tick["sensorDryRun"]["evaluationResult"]
        assert result["error"] is None, result
        [request] = result["runRequests"]
        assert [a["path"] for a in request["assetSelection"]] == [["metaxy", "migrations", new]]
