"""`python -m example_project.dev` (servers + seed + `dagster dev`): launching the jobs from the UI works.

The test drives the webserver's GraphQL API the way the UI's Launchpad does: the plan job (nothing written),
then the apply job; afterwards nothing is left to recompute. Stopping the command stops the UI and both
servers. Slow (a real `dagster dev` with its daemon and run workers).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from example_project.run import table_versions
from example_project.servers import free_port
from example_testkit import EXAMPLE_DIR, EXAMPLE_GRAPH

from metaxy_core import DeltaMetadataStore

LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def launch_and_wait(url: str, job: str, run_config: dict[str, Any], timeout: float = 600) -> str:
    selector = {
        "repositoryLocationName": "metaxy_example",
        "repositoryName": "__repository__",
        "jobName": job,
    }
    answer = graphql(url, LAUNCH, {"p": {"selector": selector, "runConfigData": run_config}})["data"][
        "launchRun"
    ]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    run_id = answer["run"]["runId"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = graphql(url, STATUS, {"id": run_id})["data"]["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(1)
    raise AssertionError(f"run {run_id} of {job} did not finish in {timeout}s")


@pytest.mark.slow
def test_dev_command_serves_the_ui_and_runs_launch_from_it(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "METAXY_STORE_ROOT": str(tmp_path / "store"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    log = open(tmp_path / "dev.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "example_project.dev", "--port", str(port), "--samples", "150"],
        cwd=EXAMPLE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "dev.log").read_text()[-4000:]
            try:
                if graphql(url, "{ version }").get("data"):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the Dagster UI did not come up"
            time.sleep(1)
        store = DeltaMetadataStore(tmp_path / "store", project="example")
        before = table_versions(store, EXAMPLE_GRAPH)
        assert launch_and_wait(url, "metaxy_migrations_plan", {}) == "SUCCESS"  # it only plans
        assert table_versions(store, EXAMPLE_GRAPH) == before
        assert launch_and_wait(url, "metaxy_migrations_apply", {}) == "SUCCESS"
        with EXAMPLE_GRAPH.use():
            for key in EXAMPLE_GRAPH.topological_order():
                if EXAMPLE_GRAPH.spec(key).deps:
                    assert store.resolve_update(key).counts() == {"added": 0, "changed": 0, "removed": 0}, key
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        log.close()
    assert process.returncode == 0, (tmp_path / "dev.log").read_text()[-4000:]
    text = (tmp_path / "dev.log").read_text()
    pg_dir = next(line.split("host=")[1].split()[0] for line in text.splitlines() if "PostgreSQL at" in line)
    assert not Path(pg_dir).exists(), "PostgreSQL's temporary data folder was not removed"
