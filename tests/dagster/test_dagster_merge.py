"""A merge migration in Dagster: its asset depends on both heads it joins and runs after both branches."""

from __future__ import annotations

import dagster as dg
from metaxy_dg_testkit import CLIP, EMB, Project, migration_ids

from metaxy_core.migrations import MigrationExecutor, load_chain
from metaxy_core.migrations.generator import generate_merge
from metaxy_core.testing import write_migration
from metaxy_dagster import APPLY_JOB_NAME, PLAN_JOB_NAME, build_migration_definitions

BRANCH = "20250102_120000_manual_fix"


def key(migration_id: str) -> dg.AssetKey:
    return dg.AssetKey(["metaxy", "migrations", migration_id])


def fork_and_merge(project: Project) -> tuple[str, str, str, str]:
    """M1 -> M2 on one branch, M1 -> a migration recording a manual fix on the other (no operations: in this
    process Dagster's ops would not see the code graph a full-graph operation needs), joined by a merge."""
    m1, m2 = migration_ids(project)
    write_migration(project.migrations_dir, BRANCH, parent=m1, ops=[], kind="full_graph")
    merge = generate_merge(load_chain(project.migrations_dir, allow_forks=True), project.migrations_dir)
    assert merge.merged == [m2, BRANCH]
    return m1, m2, BRANCH, merge.migration_id


def test_merge_asset_depends_on_both_heads_and_materializes_after_both(project: Project, instance) -> None:
    m1, m2, branch, merge = fork_and_merge(project)
    defs = build_migration_definitions(config_path=project.config_path)
    graph = defs.resolve_asset_graph()
    assert graph.get(key(merge)).parent_keys == {key(m2), key(branch)}
    assert graph.get(key(branch)).parent_keys == {key(m1)}
    with project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance)
    assert result.success
    order = [
        e.asset_key for e in result.get_asset_materialization_events() if e.asset_key.path[0] == "metaxy"
    ]
    assert set(order) == {key(m1), key(m2), key(branch), key(merge)}
    assert order[0] == key(m1) and order[-1] == key(merge)
    states = MigrationExecutor(project.store(), graph=project.code_graph).states()
    assert all(states[m].completed for m in (m1, m2, branch, merge))
    assert project.rows_at(EMB, 3) == 5 and project.rows_at(CLIP, 3) == 5


def test_plan_job_plans_a_merged_chain_with_both_branches_upstream(project: Project, instance) -> None:
    *_, merge = fork_and_merge(project)
    defs = build_migration_definitions(config_path=project.config_path)
    job = defs.resolve_job_def(PLAN_JOB_NAME)
    merge_node = next(n for n in job.graph.node_dict if n == merge)  # graphs are named after their migration
    upstream = {
        d.node.name for d in job.graph.dependency_structure.all_upstream_outputs_from_node(merge_node)
    }
    assert len(upstream) == 2
    with project.active():
        result = job.execute_in_process(instance=instance)
    assert result.success
