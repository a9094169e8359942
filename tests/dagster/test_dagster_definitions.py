"""Definitions: load from files only, validate, and map every migration to a well-formed asset."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
from metaxy_dg_testkit import CLIP, EMB, RAW, Project, make_project, migration_ids

from metaxy_core import FeatureGraph, MetaxyError
from metaxy_core.migrations import load_chain
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir
from metaxy_core.testing.scale import write_scale_project
from metaxy_dagster import (
    APPLY_JOB_NAME,
    DEFAULT_POOL,
    PLAN_JOB_NAME,
    MetaxyDefinitionsError,
    MetaxyMigrationTranslator,
    MetaxyMigrationTranslatorSettings,
    MetaxyStoreResource,
    build_migration_assets,
    build_migration_definitions,
)

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"
KEY1, KEY2 = dg.AssetKey(["metaxy", "migrations", M1]), dg.AssetKey(["metaxy", "migrations", M2])
RAW_KEY, EMB_KEY, CLIP_KEY = (dg.AssetKey(k.split("/")) for k in (RAW, EMB, CLIP))
FEATURE_KEYS = {RAW_KEY, EMB_KEY, CLIP_KEY}


def test_definitions_load_and_validate(project: Project) -> None:
    defs = build_migration_definitions(config_path=project.config_path, schedule_cron="0 3 * * *")
    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert {j.name for j in repo.get_all_jobs()} >= {APPLY_JOB_NAME, PLAN_JOB_NAME}
    assert sorted(s.name for s in repo.sensor_defs) == ["metaxy_history_sensor", "metaxy_snapshot_sensor"]
    assert [s.name for s in repo.schedule_defs] == [f"{APPLY_JOB_NAME}_schedule"]
    assert set(defs.resources) == {"metaxy_store", "metaxy_run"}


def test_definitions_never_touch_the_store(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    shutil.rmtree(project.store_root)
    project.store_root.write_text("not a folder: any store access would fail")
    build_migration_definitions(config_path=project.config_path)  # files only


def test_asset_keys_deps_group_kinds_code_version_metadata(project: Project) -> None:
    defs = build_migration_definitions(config_path=project.config_path)
    graph = defs.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == {KEY1, KEY2} | FEATURE_KEYS
    first, second = graph.get(KEY1), graph.get(KEY2)
    assert set(first.parent_keys) == set()
    assert set(second.parent_keys) == {KEY1}
    assert first.group_name == second.group_name == "metaxy_migrations"
    assert first.kinds >= {"metaxy", "deltalake"}
    chain = load_chain(project.migrations_dir)
    assert first.code_version == chain.get(M1).checksum
    meta = second.metadata
    assert meta["metaxy/from_snapshot_version"] == project.graph(2).snapshot_version
    assert meta["metaxy/to_snapshot_version"] == project.graph(3).snapshot_version
    assert meta["metaxy/migration_kind"] == "diff"
    assert meta["metaxy/parent"] == M1
    assert "reconcile" in meta["metaxy/operations"].value
    assert meta["metaxy/file"].value == str(project.migrations_dir / f"{M2}.yaml")
    refs = meta["dagster/code_references"].code_references
    assert refs[0].file_path == str((project.migrations_dir / f"{M2}.yaml").resolve())
    assert "Carry embeddings from code version 2 to 3" in (second.description or "")
    # the blocking check exists for each migration
    check_keys = {k.asset_key for k in graph.asset_check_keys}
    assert check_keys == {KEY1, KEY2}
    assert all(graph.get_check_spec(k).blocking for k in graph.asset_check_keys)


def test_ops_are_the_operations_in_order_with_sanitised_unique_names(tmp_path: Path) -> None:
    project = make_project(tmp_path, migrations=((1, 2),))
    ops = [
        {"type": "metaxy_core.migrations.ops.DataVersionReconciliation", "id": "carry-over v1.2"},
        {"type": "metaxy_dg_testkit.FlakyOperation", "marker": str(tmp_path / "m"), "id": "carry-over v1.2!"},
        {"type": "metaxy_core.migrations.ops.DataVersionReconciliation"},
    ]
    project.write_migration(M1, parent="initial", from_version=1, to_version=2, ops=ops)
    defs = build_migration_definitions(config_path=project.config_path)
    asset = next(iter(defs.assets))
    names = sorted(node.name for node in asset.node_def.nodes)  # short, readable step keys
    assert names == ["1_carry_over_v1_2", "2_carry_over_v1_2_", "3_reconcile"]
    assert asset.node_def.name == M1
    definitions = sorted(node.definition.name for node in asset.node_def.nodes)  # unique across the job
    assert definitions == [f"{M1}__1_carry_over_v1_2", f"{M1}__2_carry_over_v1_2_", f"{M1}__3_reconcile"]
    deps = asset.node_def.dependency_structure
    assert [h.node_name for h in deps.all_upstream_outputs_from_node(names[1])] == [names[0]]
    assert [h.node_name for h in deps.all_upstream_outputs_from_node(names[2])] == [names[1]]
    assert all(op.pool == DEFAULT_POOL for op in asset.node_def.node_defs)
    assert asset.node_def.node_named(names[1]).tags["metaxy/operation"] == "carry-over v1.2!"


def test_custom_translator_changes_keys_and_dependencies_follow(project: Project) -> None:
    class Translator(MetaxyMigrationTranslator):
        def get_asset_key(self, migration):
            return dg.AssetKey(["warehouse", "data_migrations", migration.migration_id[-8:]])

        def get_tags(self, migration):
            return {**super().get_tags(migration), "team": "ml-platform"}

    defs = build_migration_definitions(config_path=project.config_path, translator=Translator())
    graph = defs.resolve_asset_graph()
    child = dg.AssetKey(["warehouse", "data_migrations", M2[-8:]])
    parent = dg.AssetKey(["warehouse", "data_migrations", M1[-8:]])
    assert set(graph.get_all_asset_keys()) == {parent, child} | FEATURE_KEYS
    assert set(graph.get(EMB_KEY).parent_keys) == {RAW_KEY, parent, child}  # lineage follows custom keys
    assert set(graph.get(child).parent_keys) == {parent}
    assert graph.get(child).tags["team"] == "ml-platform"
    assert {k.asset_key for k in graph.asset_check_keys} == {parent, child}
    dg.Definitions.validate_loadable(defs)


def test_translator_settings_prefix_group_and_no_checks(project: Project) -> None:
    settings = MetaxyMigrationTranslatorSettings(
        key_prefix=("ml",), group_name="migrations", enable_asset_checks=False
    )
    defs = build_migration_definitions(
        config_path=project.config_path, translator=MetaxyMigrationTranslator(settings)
    )
    graph = defs.resolve_asset_graph()
    assert (
        set(graph.get_all_asset_keys()) == {dg.AssetKey(["ml", M1]), dg.AssetKey(["ml", M2])} | FEATURE_KEYS
    )
    assert graph.get(dg.AssetKey(["ml", M1])).group_name == "migrations"
    assert not list(graph.asset_check_keys)


def test_duplicate_asset_key_from_translator_is_refused(project: Project) -> None:
    class Same(MetaxyMigrationTranslator):
        def get_asset_key(self, migration):
            return dg.AssetKey(["one"])

    with pytest.raises(MetaxyDefinitionsError, match="both map to asset key one"):
        build_migration_assets(chain=load_chain(project.migrations_dir), translator=Same())


def test_200_migrations_and_200_features_load_with_their_lineage(tmp_path: Path) -> None:
    """The scale project loads whole (how fast is benchmarks/bench_dagster_load.py's job: a timed assertion
    here would measure the other suites sharing the machine, not the factory)."""
    config = write_scale_project(tmp_path / "big", features=200, migrations=200)
    with FeatureGraph().use():  # the scale project's entrypoint registers into a graph of its own
        defs = build_migration_definitions(config_path=config)
    assert len(list(defs.assets)) == 400  # 200 migrations, 200 features with their lineage
    graph = defs.resolve_asset_graph()
    # a leaf of the tree: its parent feature, and every migration that bumped it or one of its ancestors
    leaf = {k.path[-1].split("_000000_")[-1] for k in graph.get(dg.AssetKey(["scale", "f199"])).parent_keys}
    assert leaf == {"f99"} | {f"bump_f{i}" for i in (0, 2, 5, 11, 24, 49, 99, 199)}


def test_broken_chain_fails_with_the_cli_message(project: Project) -> None:
    path = project.write_migration(
        "20250103_000000_fork", parent=migration_ids(project)[0], from_version=2, to_version=3
    )
    with pytest.raises(MetaxyDefinitionsError) as info:
        build_migration_definitions(config_path=project.config_path)
    expected = str(pytest.raises(MetaxyError, load_chain, project.migrations_dir).value)
    assert str(info.value) == expected
    assert "the chain forks" in str(info.value) and path.name in str(info.value)
    assert isinstance(info.value, dg.Failure)
    assert info.value.__cause__ is info.value.error


def test_bad_file_fails_naming_the_file(project: Project) -> None:
    bad = project.migrations_dir / "20250103_000000_bad.yaml"
    bad.write_text("migration_id: [unclosed\n")
    with pytest.raises(MetaxyDefinitionsError, match=r"20250103_000000_bad\.yaml: malformed YAML at line 2"):
        build_migration_definitions(config_path=project.config_path)


def test_bad_config_fails_with_its_message(tmp_path: Path) -> None:
    (tmp_path / "metaxy.toml").write_text('project = "x"\nunknown_key = 1\n')
    with pytest.raises(MetaxyDefinitionsError, match="unknown_key: unknown key"):
        build_migration_definitions(config_path=tmp_path / "metaxy.toml")


def test_project_without_migrations_or_features_gets_resources_only(tmp_path: Path) -> None:
    (tmp_path / "metaxy.toml").write_text('project = "x"\n')
    with FeatureGraph().use():  # no entrypoints: nothing registers features (other tests' are elsewhere)
        defs = build_migration_definitions(config_path=tmp_path / "metaxy.toml")
    dg.Definitions.validate_loadable(defs)
    assert not list(defs.assets or [])
    assert set(defs.resources) == {"metaxy_store", "metaxy_run"}


def test_store_resource_from_config_and_overrides(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    resource = MetaxyStoreResource.from_config(project.config())
    assert resource.config_path == str(project.config_path)
    assert resource.get_store().root_uri == str(project.store_root)
    assert resource.get_config().migrations_path == project.migrations_dir
    monkeypatch.setenv("MXDG_KEY", "s3cr3t-value-123")
    other = MetaxyStoreResource(
        root_uri=str(project.root / "elsewhere"),
        project="other",
        storage_options={"AWS_SECRET_ACCESS_KEY": "${MXDG_KEY}"},
    )
    store = other.get_store()
    assert (store.root_uri, store.project) == (str(project.root / "elsewhere"), "other")
    assert store.storage_options["AWS_SECRET_ACCESS_KEY"] == "s3cr3t-value-123"
    shown = repr(MetaxyStoreResource(storage_options={"AWS_SECRET_ACCESS_KEY": "s3cr3t-value-123"}))
    assert "s3cr3t" not in shown and "AWS_SECRET_ACCESS_KEY" in shown


PY_MIGRATION = """\
from datetime import datetime, timezone

from metaxy_core.migrations import PythonMigration


class Broken(PythonMigration):
    migration_id: str = "20250103_000000_broken"
    created_at: datetime = datetime(2025, 1, 3, tzinfo=timezone.utc)
    parent: str = "20250102_000000_emb_v2_to_v3"
    from_snapshot_version: str = "a"
    to_snapshot_version: str = "b"

    def build_operations(self):
        raise RuntimeError("needs the store")
"""


def test_failing_build_operations_names_the_file(project: Project) -> None:
    path = project.migrations_dir / "20250103_000000_broken.py"
    path.write_text(PY_MIGRATION)
    with pytest.raises(
        MetaxyDefinitionsError, match=r"20250103_000000_broken\.py: RuntimeError while building"
    ):
        build_migration_definitions(config_path=project.config_path)


BEHIND_THE_CODE = """\
from datetime import datetime, timezone

from metaxy_core import FeatureGraph
from metaxy_core.migrations import DataVersionReconciliation, PythonMigration


class EmbeddingsV2(PythonMigration):
    migration_id: str = "20250101_000000_emb_v1_to_v2"
    created_at: datetime = datetime(2025, 1, 1, tzinfo=timezone.utc)
    from_snapshot_version: str = "{v1}"
    to_snapshot_version: str = "{v2}"

    def build_operations(self):
        graph = FeatureGraph.get_active()  # the graph of this migration's target, whatever the code is now
        return [DataVersionReconciliation(id=f"reconcile_at_{{graph.snapshot_version}}")]
"""


def test_a_python_migration_behind_the_code_loads_from_its_snapshot_files(tmp_path: Path) -> None:
    project = make_project(tmp_path, code_version=3, migrations=())
    v1, v2 = project.graph(1).snapshot_version, project.graph(2).snapshot_version
    (project.migrations_dir / f"{M1}.py").write_text(BEHIND_THE_CODE.format(v1=v1, v2=v2))
    files = SnapshotFiles(snapshots_dir(project.migrations_dir))
    for version in (1, 2):
        files.write(project.graph(version))
    with project.active():
        defs = build_migration_definitions(config_path=project.config_path)
    asset = next(a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.key == KEY1)
    assert [n.name for n in asset.node_def.nodes] == [f"1_reconcile_at_{v2}"]
    files.path(v2).unlink()  # the file `metaxy push` / `generate` writes is missing
    with project.active(), pytest.raises(MetaxyDefinitionsError) as missing:
        build_migration_definitions(config_path=project.config_path)
    assert str(files.path(v2)) in str(missing.value) and "run `metaxy push`" in str(missing.value)
