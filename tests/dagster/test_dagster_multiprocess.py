"""One real run under Dagster's multiprocess executor with the spawn start method.

Every step runs in a freshly spawned interpreter (never a fork of this process, which has already loaded
delta-rs), rebuilds the definitions from the config path, imports the features from the entrypoints and finds
its migration's progress in the store: nothing is shared in memory between ops.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from metaxy_dg_testkit import CLIP, EMB, Project

from metaxy_core.migrations.progress import read_events

HERE = Path(__file__).resolve().parent
M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"


def test_apply_under_the_multiprocess_executor_with_spawn(project: Project) -> None:
    assert project.rows_at(EMB, 1) == 5  # delta-rs is loaded in this process
    recon = dg.build_reconstructable_job(
        reconstructor_module_name="metaxy_dg_testkit",
        reconstructor_function_name="apply_job",
        reconstructable_args=(str(project.config_path),),
        reconstructor_working_directory=str(HERE),
    )
    run_config = {
        "execution": {"config": {"multiprocess": {"max_concurrent": 2, "start_method": {"spawn": {}}}}}
    }
    with dg.instance_for_test() as instance:
        with dg.execute_job(recon, instance=instance, run_config=run_config) as result:
            assert result.success
            migrations = [
                e for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "metaxy"
            ]
            assert [e.asset_key.path[-1] for e in migrations] == [M1, M2]
            # the feature assets' events come from the spawned step processes too
            features = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()} - {M1, M2}
            assert features == {"embeddings", "clip_scores"}
            assert all(e.passed for e in result.get_asset_check_evaluations())
            engine = [e.message or "" for e in result.all_events if e.event_type_value == "ENGINE_EVENT"]
            assert any("multiprocess executor" in m.lower() for m in engine)
    assert project.rows_at(EMB, 3) == 5 and project.rows_at(CLIP, 3) == 5
    events = read_events(project.store(), "demo")
    step_pids = set(events.filter(events["op_index"] >= 0)["pid"].to_list())
    assert step_pids and os.getpid() not in step_pids  # the work happened in the spawned step processes
