"""MetaxyMigrationsComponent: a defs.yaml yields the same definitions as build_migration_definitions."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

import dagster as dg
import pytest
from metaxy_dg_testkit import CLIP, EMB, Project, make_project

from metaxy_dagster import (
    APPLY_JOB_NAME,
    PLAN_JOB_NAME,
    MetaxyDefinitionsError,
    MetaxyMigrationsComponent,
    build_migration_definitions,
)
from metaxy_dagster.components.migrations.component import (
    MetaxyMigrationsScaffolder,
    MetaxyMigrationsScaffoldParams,
)

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"


def make_dg_project(root: Path, defs_yaml: str) -> tuple[Path, str]:
    package = f"mxdg_location_{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "{package}"
            version = "0.0.0"

            [tool.dg]
            directory_type = "project"

            [tool.dg.project]
            root_module = "{package}"
            """
        )
    )
    folder = root / "src" / package / "defs" / "metaxy_migrations"
    folder.mkdir(parents=True)
    (root / "src" / package / "__init__.py").write_text("")
    (root / "src" / package / "defs" / "__init__.py").write_text("")
    (folder / "defs.yaml").write_text(defs_yaml)
    return root, package


def test_defs_yaml_yields_the_factory_definitions(
    project: Project, tmp_path: Path, monkeypatch, instance
) -> None:
    location = tmp_path / "location"
    folder_depth = 4  # location/src/<package>/defs/metaxy_migrations -> location
    relative = Path(*[".."] * folder_depth) / ".." / "project" / "metaxy.toml"
    root, _ = make_dg_project(
        location,
        textwrap.dedent(
            f"""\
            type: metaxy_dagster.MetaxyMigrationsComponent
            attributes:
              config_path: {relative.as_posix()}
              schedule_cron: "0 3 * * *"
              storage_options:
                AWS_SECRET_ACCESS_KEY: "${{MXDG_COMPONENT_SECRET}}"
            """
        ),
    )
    monkeypatch.syspath_prepend(str(root / "src"))
    monkeypatch.setenv("MXDG_COMPONENT_SECRET", "component-secret-value-42")
    defs = dg.load_from_defs_folder(path_within_project=root)
    dg.Definitions.validate_loadable(defs)
    reference = build_migration_definitions(config_path=project.config_path, schedule_cron="0 3 * * *")
    graph, expected = defs.resolve_asset_graph(), reference.resolve_asset_graph()
    assert set(graph.get_all_asset_keys()) == set(expected.get_all_asset_keys())
    for key in expected.get_all_asset_keys():
        assert set(graph.get(key).parent_keys) == set(expected.get(key).parent_keys)
        assert graph.get(key).code_version == expected.get(key).code_version
    assert set(graph.asset_check_keys) == set(expected.asset_check_keys)
    repo = defs.get_repository_def()
    assert {APPLY_JOB_NAME, PLAN_JOB_NAME} <= {j.name for j in repo.get_all_jobs()}
    assert sorted(s.name for s in repo.sensor_defs) == ["metaxy_history_sensor", "metaxy_snapshot_sensor"]
    assert [s.cron_schedule for s in repo.schedule_defs] == ["0 3 * * *"]
    # the secret stays a reference in the resource configuration; it is expanded when the store is built
    store_resource = defs.resources["metaxy_store"]
    assert store_resource.storage_options == {"AWS_SECRET_ACCESS_KEY": "${MXDG_COMPONENT_SECRET}"}
    assert store_resource.get_store().storage_options["AWS_SECRET_ACCESS_KEY"] == "component-secret-value-42"
    # and the component's definitions run
    with project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance)
    assert result.success
    assert project.rows_at(EMB, 3) == 5


def test_component_overrides_resolve_relative_to_its_folder(project: Project, tmp_path: Path) -> None:
    component = MetaxyMigrationsComponent.resolve_from_yaml(
        textwrap.dedent(
            """\
            config_path: project/metaxy.toml
            store_root: other-store
            project: renamed
            key_prefix: [ml, migrations]
            group_name: data_migrations
            enable_asset_checks: false
            include_sensor: false
            """
        )
    )
    config = component.load_config(tmp_path)
    assert config.store_root == str((tmp_path / "other-store").resolve())
    assert config.project == "renamed"
    assert config.migrations_path == project.migrations_dir
    from dagster.components.core.component_tree import ComponentTree

    context = ComponentTree.for_test().load_context.for_path(tmp_path)
    defs = dg.component_defs(component=component, context=context)
    graph = defs.resolve_asset_graph()
    assert {k for k in graph.get_all_asset_keys() if k.path[0] == "ml"} == {
        dg.AssetKey(["ml", "migrations", M1]),
        dg.AssetKey(["ml", "migrations", M2]),
    }
    assert graph.get(dg.AssetKey(["ml", "migrations", M1])).group_name == "data_migrations"
    assert not list(graph.asset_check_keys)
    assert [s.name for s in defs.sensors] == ["metaxy_history_sensor"]
    assert defs.resources["metaxy_store"].get_store().root_uri == str((tmp_path / "other-store").resolve())


def test_component_rejects_unknown_attributes() -> None:
    with pytest.raises(Exception, match="bogus"):
        MetaxyMigrationsComponent.resolve_from_yaml("config_path: metaxy.toml\nbogus: 1\n")


def test_two_instances_in_one_code_location_do_not_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, instance
) -> None:
    """Two metaxy projects, each a component instance with a name: their resources, jobs and sensors merge."""
    video, text = make_project(tmp_path / "video"), make_project(tmp_path / "text")
    text.config_path.write_text(text.config_path.read_text().replace('project = "demo"', 'project = "text"'))

    def instance_yaml(name: str, project: Project) -> str:
        return (
            "type: metaxy_dagster.MetaxyMigrationsComponent\n"
            f"attributes:\n  config_path: {project.config_path}\n  name: {name}\n"
            f"  key_prefix: [{name}, migrations]\n  include_feature_assets: false\n"
        )

    root, package = make_dg_project(tmp_path / "location", instance_yaml("video", video))
    second = root / "src" / package / "defs" / "text"
    second.mkdir()
    (second / "defs.yaml").write_text(instance_yaml("text", text))
    monkeypatch.syspath_prepend(str(root / "src"))
    defs = dg.load_from_defs_folder(path_within_project=root)
    dg.Definitions.validate_loadable(defs)
    assert {"metaxy_store_video", "metaxy_store_text", "metaxy_run"} <= set(defs.resources)
    repo = defs.get_repository_def()
    jobs = {j.name for j in repo.get_all_jobs()}
    assert {f"{APPLY_JOB_NAME}_video", f"{APPLY_JOB_NAME}_text", f"{PLAN_JOB_NAME}_text"} <= jobs
    assert {s.name for s in repo.sensor_defs} >= {
        "metaxy_snapshot_sensor_video",
        "metaxy_history_sensor_text",
    }
    assert defs.resources["metaxy_store_text"].get_config().project == "text"
    with video.active():
        result = defs.resolve_job_def(f"{APPLY_JOB_NAME}_video").execute_in_process(instance=instance)
    assert result.success and video.rows_at(EMB, 3) == 5 and text.rows_at(EMB, 3) == 0


def test_scaffolding_writes_a_defs_yaml_that_loads(project: Project, tmp_path: Path) -> None:
    from dagster.components.scaffold.scaffold import ScaffoldRequest

    folder = project.root / "defs" / "migrations"
    folder.mkdir(parents=True)
    MetaxyMigrationsScaffolder().scaffold(
        ScaffoldRequest(
            type_name="metaxy_dagster.MetaxyMigrationsComponent",
            target_path=folder,
            scaffold_format="yaml",
            project_root=project.root,
            params=MetaxyMigrationsScaffoldParams(schedule_cron="0 4 * * *"),
        )
    )
    written = (folder / "defs.yaml").read_text()
    assert "type: metaxy_dagster.MetaxyMigrationsComponent" in written
    assert "config_path: ../../metaxy.toml" in written  # the nearest metaxy.toml, relative to the folder
    import yaml

    component = MetaxyMigrationsComponent.resolve_from_yaml(
        yaml.safe_dump(yaml.safe_load(written)["attributes"])
    )
    assert component.load_config(folder).config_file == project.config_path


def test_a_feature_asset_defined_in_another_folder_receives_the_migrations_events(
    project: Project, tmp_path: Path, monkeypatch, instance
) -> None:
    relative = Path(*[".."] * 5) / "project" / "metaxy.toml"
    root, package = make_dg_project(
        tmp_path / "location",
        textwrap.dedent(
            f"""\
            type: metaxy_dagster.MetaxyMigrationsComponent
            attributes:
              config_path: {relative.as_posix()}
              feature_assets_elsewhere:
                {EMB}: ml/embeddings
            """
        ),
    )
    pipeline = root / "src" / package / "defs" / "pipeline"
    pipeline.mkdir()
    (pipeline / "assets.py").write_text(
        textwrap.dedent(
            f"""\
            import dagster as dg

            @dg.asset(key=["ml", "embeddings"], metadata={{"metaxy/feature": "{EMB}"}})
            def embeddings() -> None:
                '''The pipeline's embeddings step, in its own defs folder.'''
            """
        )
    )
    monkeypatch.syspath_prepend(str(root / "src"))
    defs = dg.load_from_defs_folder(path_within_project=root)
    dg.Definitions.validate_loadable(defs)  # one asset for the feature: no duplicate key
    graph = defs.resolve_asset_graph()
    user = dg.AssetKey(["ml", "embeddings"])
    assert dg.AssetKey(EMB.split("/")) not in set(graph.get_all_asset_keys())
    assert graph.get(user).is_executable
    assert user in set(graph.get(dg.AssetKey(CLIP.split("/"))).parent_keys)
    with project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance)
    assert result.success
    received = [e for e in result.get_asset_materialization_events() if e.asset_key == user]
    assert {e.materialization.metadata["metaxy/migration_id"].value for e in received} == {M1, M2}


def test_feature_assets_elsewhere_naming_an_unknown_feature_fails_the_load(project: Project) -> None:
    with (
        project.active(),
        pytest.raises(MetaxyDefinitionsError, match="'video/missing', which is not a feature"),
    ):
        build_migration_definitions(
            config_path=project.config_path, feature_assets_elsewhere={"video/missing": "ml/x"}
        )
