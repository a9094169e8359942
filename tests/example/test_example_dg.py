"""The example is a `dg` project: the component is registered, its YAML checks, its definitions list.

Runs the real ``dg`` CLI (dagster-dg-cli, from the test extra) in ``example_project/``, as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from example_project.servers import free_port
from example_testkit import CHAIN, EXAMPLE_DIR, EXAMPLE_GRAPH, graphql, serving

DG = str(Path(sys.executable).parent / "dg")


def dg(*args: str, cwd: Path = EXAMPLE_DIR) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAXY_", "AWS_"))}
    done = subprocess.run([DG, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def test_dg_lists_the_metaxy_component() -> None:
    listed = json.loads(dg("list", "components", "--json"))
    assert "metaxy_dagster.MetaxyMigrationsComponent" in {c["key"] for c in listed["items"]}


def test_dg_check_yaml_passes_on_the_example() -> None:
    assert "validated successfully" in dg("check", "yaml")


def test_dg_list_defs_shows_migrations_features_jobs_and_sensors() -> None:
    defs = json.loads(dg("list", "defs", "--json"))
    assets = {a["asset_key"] for a in defs["assets"]}
    assert "metaxy/migrations/20250115_090000_audio_resampler_refactor" in {
        d for a in defs["assets"] if a["asset_key"] == "video/audio" for d in a["dependency_keys"]
    }  # lineage: the migration writes the feature
    assert {f"metaxy/migrations/{mid}" for mid, *_ in CHAIN} <= assets
    assert {str(k) for k in EXAMPLE_GRAPH.keys} <= assets
    assert {"metaxy_migrations_apply", "metaxy_migrations_plan", "metaxy_migrations_rollback"} <= {
        j["name"] for j in defs["jobs"]
    }
    assert {s["name"] for s in defs["sensors"]} == {"metaxy_history_sensor", "metaxy_snapshot_sensor"}
    assert [s["cron_schedule"] for s in defs["schedules"]] == ["0 3 * * *"]


def test_dg_scaffold_writes_a_component_that_loads(tmp_path: Path) -> None:
    """`dg scaffold defs` in a fresh dg project beside a metaxy.toml writes a defs.yaml that loads."""
    project = tmp_path / "scaffolded"
    package = project / "scaffolded"
    (package / "defs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "defs" / "__init__.py").write_text("")
    (package / "definitions.py").write_text(  # what `dg scaffold project` writes
        "from pathlib import Path\n\nimport dagster as dg\n\n\n@dg.definitions\ndef defs():\n"
        "    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)\n"
    )
    (project / "pyproject.toml").write_text(
        '[project]\nname = "scaffolded"\nversion = "0.0.0"\n\n[tool.dg]\ndirectory_type = "project"\n\n'
        '[tool.dg.project]\nroot_module = "scaffolded"\n'
    )
    (project / "metaxy.toml").write_text('project = "scaffolded"\n')
    dg("scaffold", "defs", "metaxy_dagster.MetaxyMigrationsComponent", "migrations", cwd=project)
    written = (package / "defs" / "migrations" / "defs.yaml").read_text()
    assert "type: metaxy_dagster.MetaxyMigrationsComponent" in written
    assert "config_path: ../../../metaxy.toml" in written
    assert "validated successfully" in dg("check", "yaml", cwd=project)
    defs = json.loads(dg("list", "defs", "--json", cwd=project))
    assert {r["name"] for r in defs["resources"]} >= {"metaxy_store", "metaxy_run"}


@pytest.mark.slow
def test_dg_dev_serves_the_example(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAXY_", "AWS_"))}
    env["DAGSTER_HOME"] = str(tmp_path)
    port = free_port()
    command = [DG, "dev", "--host", "127.0.0.1", "--port", str(port)]
    repositories = (
        "{ repositoriesOrError { ... on RepositoryConnection "
        "{ nodes { location { name } jobs { name } } } } }"
    )
    with serving(command, cwd=EXAMPLE_DIR, env=env, log_path=tmp_path / "dg-dev.log", port=port) as url:
        deadline = time.monotonic() + 180
        while not (nodes := graphql(url, repositories)["repositoriesOrError"]["nodes"]):
            assert time.monotonic() < deadline, "dg dev did not load the example's code location"
            time.sleep(1)
    [repo] = nodes
    assert repo["location"]["name"] == "metaxy_example"
    assert "metaxy_migrations_apply" in {j["name"] for j in repo["jobs"]}
