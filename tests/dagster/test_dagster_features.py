"""Feature tables as assets: keys, lineage, table metadata, user assets standing for features, conventions."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from metaxy_dg_testkit import CLIP, EMB, RAW, Project, make_project

from metaxy_core.testing import graphs
from metaxy_dagster import (
    APPLY_JOB_NAME,
    FEATURE_METADATA_KEY,
    MetaxyDefinitionsError,
    MetaxyMigrationTranslator,
    build_migration_definitions,
)

M1, M2 = "20250101_000000_emb_v1_to_v2", "20250102_000000_emb_v2_to_v3"
KEY1, KEY2 = dg.AssetKey(["metaxy", "migrations", M1]), dg.AssetKey(["metaxy", "migrations", M2])
RAW_KEY, EMB_KEY, CLIP_KEY = (dg.AssetKey(k.split("/")) for k in (RAW, EMB, CLIP))


def test_every_feature_is_an_asset_with_its_table_lineage_and_versions(project: Project) -> None:
    with project.active() as code:
        defs = build_migration_definitions(config_path=project.config_path)
    graph = defs.resolve_asset_graph()
    emb = graph.get(EMB_KEY)
    assert not emb.is_executable  # written by the pipeline; migrations rewrite it and report events
    assert set(emb.parent_keys) == {RAW_KEY, KEY1, KEY2}  # upstream feature, then the migrations writing it
    assert set(graph.get(RAW_KEY).parent_keys) == set()  # a root: no migration reconciles it
    assert set(graph.get(CLIP_KEY).parent_keys) == {EMB_KEY, KEY1, KEY2}
    assert emb.group_name == "metaxy_features" and emb.kinds >= {"metaxy", "deltalake"}
    assert emb.code_version == code.feature_version(EMB)
    meta = emb.metadata
    assert meta[FEATURE_METADATA_KEY] == EMB
    assert meta["dagster/table_name"] == "video__embeddings"
    assert meta["dagster/uri"] == f"{project.store_root}/video__embeddings"
    columns = {c.name: c for c in meta["dagster/column_schema"].columns}
    assert columns["sample_uid"].constraints.nullable is False
    assert columns["dim"].type == "int"  # the class's typed user column
    assert columns["metaxy_provenance_by_field"].type == "struct<embedding>"
    assert {"metaxy_data_version", "metaxy_feature_version", "metaxy_created_at"} <= set(columns)
    [reference] = meta["dagster/code_references"].code_references
    assert reference.file_path == str(Path(graphs.__file__).resolve())
    source = Path(graphs.__file__).read_text().splitlines()
    assert source[reference.line_number - 1].strip().startswith("class VideoEmbeddings(")
    assert "Fields: `embedding` (code version 3)" in (emb.description or "")


def test_dagster_uri_never_holds_credentials(tmp_path: Path) -> None:
    project = make_project(
        tmp_path,
        store_root="s3://AKIAEXAMPLEKEY:s3cr3t-in-url@bucket/prefix",
        storage_options={"AWS_SECRET_ACCESS_KEY": "option-secret-9"},
        pushed=(),
        data_version=None,
        migrations=(),
    )
    with project.active():
        defs = build_migration_definitions(config_path=project.config_path)
    uri = defs.resolve_asset_graph().get(EMB_KEY).metadata["dagster/uri"]
    assert uri.endswith("bucket/prefix/video__embeddings")
    assert "s3cr3t" not in uri and "AKIAEXAMPLEKEY" not in uri and "option-secret" not in uri


def test_a_user_asset_with_metaxy_feature_metadata_stands_for_the_feature(project: Project, instance) -> None:
    @dg.asset(key=["ml", "embeddings"], metadata={FEATURE_METADATA_KEY: EMB})
    def embeddings() -> None:
        """Our pipeline's embeddings step."""

    with project.active():
        defs = build_migration_definitions(config_path=project.config_path, assets=[embeddings])
    graph = defs.resolve_asset_graph()
    user = dg.AssetKey(["ml", "embeddings"])
    assert EMB_KEY not in set(graph.get_all_asset_keys())  # no asset of ours for that feature
    assert graph.get(user).is_executable  # still the user's asset, runnable
    assert set(graph.get(user).parent_keys) == {RAW_KEY, KEY1, KEY2}  # with the feature's lineage
    assert user in set(graph.get(CLIP_KEY).parent_keys)  # downstream features depend on it
    with project.active():
        result = defs.resolve_job_def(APPLY_JOB_NAME).execute_in_process(instance=instance)
    assert result.success
    received = [e for e in result.get_asset_materialization_events() if e.asset_key == user]
    assert {e.materialization.metadata["metaxy/migration_id"].value for e in received} == {M1, M2}
    assert all(e.materialization.metadata["metaxy/rows_written"].value == 5 for e in received)


def test_user_assets_claiming_features_badly_fail_the_load_naming_them(project: Project) -> None:
    one = dg.AssetSpec(key="a", metadata={FEATURE_METADATA_KEY: EMB})
    two = dg.AssetSpec(key="b", metadata={FEATURE_METADATA_KEY: EMB})
    with (
        project.active(),
        pytest.raises(MetaxyDefinitionsError, match="assets a and b both stand for feature"),
    ):
        build_migration_definitions(config_path=project.config_path, assets=[one, two])
    stray = dg.AssetSpec(key="c", metadata={FEATURE_METADATA_KEY: "video/missing"})
    with project.active(), pytest.raises(MetaxyDefinitionsError, match="not a feature of the code's graph"):
        build_migration_definitions(config_path=project.config_path, assets=[stray])


def test_feature_assets_can_be_left_out(project: Project) -> None:
    with project.active():
        defs = build_migration_definitions(config_path=project.config_path, include_feature_assets=False)
    assert set(defs.resolve_asset_graph().get_all_asset_keys()) == {KEY1, KEY2}


def test_automation_conditions_from_the_translator_are_honoured(project: Project) -> None:
    class Eager(MetaxyMigrationTranslator):
        def get_automation_condition(self, migration):
            return dg.AutomationCondition.eager()

        def get_feature_automation_condition(self, spec):
            return dg.AutomationCondition.on_missing()

    with project.active():
        defs = build_migration_definitions(config_path=project.config_path, translator=Eager())
    graph = defs.resolve_asset_graph()
    assert graph.get(KEY1).automation_condition == dg.AutomationCondition.eager()
    assert graph.get(EMB_KEY).automation_condition == dg.AutomationCondition.on_missing()
    assert dg.AutomationConditionSensorDefinition  # Dagster's default automation sensor evaluates them


def test_code_references_link_to_the_git_repository(project: Project) -> None:
    """The recipe of docs/dagster.md: local file references become links into the repository."""
    with project.active():
        defs = build_migration_definitions(config_path=project.config_path)
    linked = dg.link_code_references_to_git(
        assets_defs=list(defs.assets),
        git_url="https://github.com/acme/ml-pipeline",
        git_branch="main",
        file_path_mapping=dg.AnchorBasedFilePathMapping(
            local_file_anchor=project.config_path,
            file_anchor_path_in_repository="pipelines/video/metaxy.toml",
        ),
    )
    merged = dg.Definitions.merge(  # the docs' recipe: linked assets, everything else unchanged
        dg.Definitions(assets=linked),
        dg.Definitions(
            asset_checks=defs.asset_checks,
            jobs=defs.jobs,
            schedules=defs.schedules,
            sensors=defs.sensors,
            resources=defs.resources,
        ),
    )
    dg.Definitions.validate_loadable(merged)
    by_key = {}
    for asset in linked:
        for spec in asset.specs if isinstance(asset, dg.AssetsDefinition) else [asset]:
            by_key[spec.key] = spec
    [reference] = by_key[KEY1].metadata["dagster/code_references"].code_references
    assert isinstance(reference, dg.UrlCodeReference)
    assert reference.url == (
        f"https://github.com/acme/ml-pipeline/tree/main/pipelines/video/migrations/{M1}.yaml#L1"
    )
