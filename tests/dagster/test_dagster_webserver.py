"""Smoke test: the real dagster-webserver serves a project's migration definitions and runs the plan job."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
from metaxy_dg_testkit import Project

HERE = Path(__file__).resolve().parent
M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"

REPOSITORIES = """
query {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } jobs { name } schedules { name cronSchedule } sensors { name } }
    }
    ... on PythonError { message }
  }
}
"""
ASSETS = "query { assetNodes { assetKey { path } groupName kinds dependencyKeys { path } } }"
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}
"""
STATUS = "query Status($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
ASSET_EVENTS = """
query Events($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetObservations { runId metadataEntries { label } }
      assetMaterializations { runId }
    }
  }
}
"""


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]


def wait_until_loaded(port: int, process: subprocess.Popen, log: Path, timeout: float = 150) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"dagster-webserver exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        try:
            data = graphql(port, REPOSITORIES)["repositoriesOrError"]
            if data["__typename"] == "RepositoryConnection" and data["nodes"]:
                return data["nodes"][0]
            if data["__typename"] == "PythonError":
                raise AssertionError(data["message"])
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(
        f"dagster-webserver did not load the definitions in {timeout}s:\n{log.read_text()[-3000:]}"
    )


@pytest.mark.slow
def test_webserver_serves_the_migrations_and_runs_the_plan_job(project: Project, tmp_path: Path) -> None:
    module = project.root / "migration_definitions.py"
    module.write_text(
        textwrap.dedent(
            f"""\
            from metaxy_dagster import build_migration_definitions

            defs = build_migration_definitions(
                config_path={str(project.config_path)!r}, schedule_cron="0 3 * * *"
            )
            """
        )
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "telemetry:\n  enabled: false\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "webserver.log"
    before = project.table_versions()
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagster-webserver"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-f",
                str(module),
                "-d",
                str(project.root),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            repo = wait_until_loaded(port, process, log)
            assert {"metaxy_migrations_apply", "metaxy_migrations_plan"} <= {j["name"] for j in repo["jobs"]}
            assert sorted(s["name"] for s in repo["sensors"]) == [
                "metaxy_history_sensor",
                "metaxy_snapshot_sensor",
            ]
            assert [(s["name"], s["cronSchedule"]) for s in repo["schedules"]] == [
                ("metaxy_migrations_apply_schedule", "0 3 * * *")
            ]
            nodes = {"/".join(n["assetKey"]["path"]): n for n in graphql(port, ASSETS)["assetNodes"]}
            first, second = f"metaxy/migrations/{M1}", f"metaxy/migrations/{M2}"
            assert set(nodes) == {first, second, "video/raw", "video/embeddings", "video/clip_scores"}
            assert ["/".join(d["path"]) for d in nodes[second]["dependencyKeys"]] == [first]
            assert nodes[first]["groupName"] == "metaxy_migrations"
            assert {"metaxy", "deltalake"} <= set(nodes[first]["kinds"])
            # lineage: upstream feature -> feature, and migration -> the features it writes
            deps = {"/".join(d["path"]) for d in nodes["video/embeddings"]["dependencyKeys"]}
            assert deps == {"video/raw", first, second}
            assert nodes["video/embeddings"]["groupName"] == "metaxy_features"
            assert {"metaxy", "deltalake"} <= set(nodes["video/embeddings"]["kinds"])

            params = {
                "selector": {
                    "repositoryLocationName": repo["location"]["name"],
                    "repositoryName": repo["name"],
                    "jobName": "metaxy_migrations_plan",
                },
                "runConfigData": {
                    "resources": {"metaxy_run": {"config": {"dry_run": False}}},
                    "execution": {"config": {"in_process": {}}},
                },
            }
            refused = graphql(port, LAUNCH, {"params": params})["launchRun"]  # the plan job never applies
            assert refused["__typename"] == "RunConfigValidationInvalid", refused
            assert any("dry_run" in e["message"] for e in refused["errors"])
            params["runConfigData"] = {"execution": {"config": {"in_process": {}}}}
            launched = graphql(port, LAUNCH, {"params": params})["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            run_id = launched["run"]["runId"]
            status, deadline = None, time.time() + 150
            while time.time() < deadline and status not in ("SUCCESS", "FAILURE", "CANCELED"):
                time.sleep(1)
                status = graphql(port, STATUS, {"id": run_id})["runOrError"]["status"]
            assert status == "SUCCESS", log.read_text()[-3000:]
            events = graphql(port, ASSET_EVENTS, {"key": {"path": ["metaxy", "migrations", M1]}})[
                "assetOrError"
            ]
            observed = [o for o in events["assetObservations"] if o["runId"] == run_id]
            assert observed and "metaxy/rows_by_feature" in {
                m["label"] for m in observed[0]["metadataEntries"]
            }
            assert not events["assetMaterializations"]
        finally:
            os.killpg(process.pid, signal.SIGTERM)  # the server and the code server it started
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    assert project.table_versions() == before


@pytest.mark.slow
def test_dagster_job_execute_with_dry_run_config_file(project: Project, tmp_path: Path) -> None:
    module = project.root / "migration_definitions.py"
    module.write_text(
        "from metaxy_dagster import build_migration_definitions\n\n"
        f"defs = build_migration_definitions(config_path={str(project.config_path)!r})\n"
    )
    config = tmp_path / "plan.yaml"
    config.write_text(
        "resources:\n  metaxy_run:\n    config:\n      dry_run: true\n"
        "execution:\n  config:\n    in_process: {}\n"
    )
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    before = project.table_versions()
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "execute",
            "-f",
            str(module),
            "-d",
            str(project.root),
            "-j",
            "metaxy_migrations_apply",
            "-c",
            str(config),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output and "ASSET_OBSERVATION" in output
    assert "ASSET_MATERIALIZATION" not in output
    assert project.table_versions() == before
