"""A reconciliation fanned out over Dagster's multiprocess executor: units in several processes, one lease.

Real runs (spawned step processes, a DagsterInstance on disk) of the scale-out project: ``wide/left`` and
``wide/right`` (layer 0) and ``wide/below`` (layer 1), 200 samples in 4 (hash) buckets of 50, 2 units each.
Faults come from ``scaleout_jobs`` hooks, installed in every step process through ``SCALEOUT_HOOK``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import dagster as dg
import pytest

from metaxy_core.cli.app import main
from metaxy_core.graph import FeatureGraph
from metaxy_core.testing.scaleout import (
    DOWNSTREAM,
    data_commits,
    latest_views,
    write_scaleout_project,
)

HERE = Path(__file__).resolve().parent
SAMPLES, BUCKET_ROWS = 200, 50
RUN_CONFIG = {"execution": {"config": {"multiprocess": {"max_concurrent": 2, "start_method": {"spawn": {}}}}}}


def project(root: Path) -> Path:
    with FeatureGraph().use():
        return write_scaleout_project(root, samples=SAMPLES, bucket_rows=BUCKET_ROWS)


def job(config: Path) -> dg.ReconstructableJob:
    return dg.build_reconstructable_job(
        reconstructor_module_name="scaleout_jobs",
        reconstructor_function_name="apply_job",
        reconstructable_args=(str(config),),
        reconstructor_working_directory=str(HERE),
    )


def sequential_reference(root: Path) -> Path:
    """The same project applied by the CLI, one step after another in one process."""
    config = project(root)
    with (
        FeatureGraph().use(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        assert main(["--config", str(config), "migrations", "apply"]) == 0
    return config


def unit_outputs(result: dg.ExecuteJobResult) -> dict[str, dict[str, object]]:
    """Unit step key -> the metadata of its output (unit, rows, pid, host, CPU seconds)."""
    return {
        event.step_key: {k: v.value for k, v in event.event_specific_data.metadata.items()}
        for event in result.all_events
        if event.event_type_value == "STEP_OUTPUT" and ".units_" in (event.step_key or "")
    }


def started_units(result: dg.ExecuteJobResult) -> list[str]:
    return sorted(
        e.step_key
        for e in result.all_events
        if e.event_type_value == "STEP_START" and ".units_" in e.step_key
    )


def test_a_fanned_out_run_matches_the_cli_and_refuses_a_concurrent_cli_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = sequential_reference(tmp_path / "reference")
    config = project(tmp_path / "dagster")
    marker = tmp_path / "cli.json"  # a unit runs `metaxy migrations apply` while the run holds the lease
    monkeypatch.setenv("SCALEOUT_HOOK", json.dumps({"cli_marker": str(marker), "cli_config": str(config)}))

    with dg.instance_for_test() as instance:
        with dg.execute_job(job(config), instance=instance, run_config=RUN_CONFIG) as result:
            assert result.success
            run_id = result.run_id
            units = unit_outputs(result)

    assert len(units) == 6  # 3 features x 4 hash buckets, in 2 units each: each its own step
    assert {key.split(".")[-1].split("[")[0] for key in units} == {"units_0", "units_1"}  # two layers
    assert len({u["metaxy/pid"] for u in units.values()}) >= 2  # spread over several processes
    assert sum(int(u["metaxy/rows"]) for u in units.values()) == 3 * SAMPLES  # type: ignore[call-overload]
    expected, got = latest_views(reference), latest_views(config)
    assert all(got[key].equals(expected[key]) for key in DOWNSTREAM)
    assert data_commits(config) == data_commits(reference)

    refused = json.loads(marker.read_text())
    failed = [line for line in refused["err"].splitlines() if line.startswith("FAILED:")]
    assert refused["code"] == 1 and len(failed) == 1
    assert f"locked by run {run_id}" in failed[0]


def test_a_killed_unit_is_resumed_by_reexecution_without_redoing_finished_units(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = sequential_reference(tmp_path / "reference")
    config = project(tmp_path / "dagster")
    # The first unit to commit is SIGKILLed before its commit (mid-unit: its bucket is computed, not written).
    monkeypatch.setenv("SCALEOUT_HOOK", json.dumps({"kill_marker": str(tmp_path / "killed")}))

    with dg.instance_for_test() as instance:
        with dg.execute_job(job(config), instance=instance, run_config=RUN_CONFIG) as first:
            assert not first.success
            killed = sorted(
                e.step_key for e in first.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key
            )
            finished_before = set(unit_outputs(first))
        assert len(killed) == 1 and ".units_0[" in killed[0]
        after_kill = data_commits(config)

        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        with dg.execute_job(
            job(config), instance=instance, run_config=RUN_CONFIG, reexecution_options=options
        ) as again:
            assert again.success
            rerun = started_units(again)

    layer0 = [key for key in rerun if ".units_0[" in key]
    assert layer0 == killed  # finished units were not run again
    assert not finished_before & set(rerun)
    final = data_commits(config)
    assert final == data_commits(reference)  # one commit per bucket: nothing was written twice
    # the finished units' commits were made once, before the kill; the re-execution added the rest
    assert all(final[key] >= after_kill[key] for key in DOWNSTREAM)
    expected, got = latest_views(reference), latest_views(config)
    assert all(got[key].equals(expected[key]) for key in DOWNSTREAM)


def test_a_dry_run_of_a_fanned_out_reconciliation_yields_no_units_and_writes_nothing(tmp_path: Path) -> None:
    from scaleout_jobs import apply_job

    from metaxy_dagster import run_config_for

    config = project(tmp_path / "p")
    before = data_commits(config)
    run_config = {**run_config_for(dry_run=True), "execution": {"config": {"in_process": {}}}}
    with FeatureGraph().use(), dg.instance_for_test() as instance:
        result = apply_job(str(config)).execute_in_process(run_config=run_config, instance=instance)
    assert result.success
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert not [key for key in steps if ".units_" in key]  # a plan runs whole, in the finish step
    assert any(key.endswith(".finish") for key in steps)
    planned = [
        e.asset_observation_data.asset_observation
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert planned  # the plan is observed on the migration and its feature assets
    assert data_commits(config) == before
