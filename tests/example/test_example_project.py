"""The example project's files: graph history, migration chain, validators and Dagster definitions.

None of these tests needs a server or the store: loading the example (CLI status, Dagster definitions) must
work on a machine without S3, PostgreSQL or ``DATABASE_URL``.
"""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import dagster as dg
import pytest
from example_project.ops import S3ObjectBackfill
from example_testkit import CHAIN, EXAMPLE_DIR, EXAMPLE_GRAPH, MIGRATIONS
from pydantic import Field, SecretStr, ValidationError

from example_project import CONFIG_FILE, features
from metaxy_core import MetaxyConfig, MetaxyError
from metaxy_core.migrations import (
    APPLY_PHASE,
    CustomMigration,
    DataVersionReconciliation,
    DiffMigration,
    PythonMigration,
    load_chain,
    load_migration_file,
)
from metaxy_core.migrations.models import diff_affected
from metaxy_core.testing.messages import pydantic_message


def _load(name: str):
    (path,) = MIGRATIONS.glob(f"{name}.*")
    return load_migration_file(path)


# ------------------------------------------------------------------------------------------ the graph
def test_current_code_is_the_last_stage() -> None:
    assert EXAMPLE_GRAPH.snapshot_version == features.graph_at(features.CURRENT_STAGE).snapshot_version
    assert features.CURRENT_STAGE == features.STAGES[-1]


def test_field_level_lineage() -> None:
    graph = EXAMPLE_GRAPH
    assert [str(k) + ":" + str(f) for k, f in graph.resolved_field_deps("text/transcript", "text")] == [
        "video/audio:waveform"
    ]
    assert [str(k) + ":" + str(f) for k, f in graph.resolved_field_deps("video/embeddings", "clip")] == [
        "video/frames:frames"
    ]
    # A frame-decoder change (v3 -> v4) never reaches audio or transcripts.
    moved = {str(k) for k in diff_affected(features.graph_at("v3"), features.graph_at("v4"))}
    assert moved == {"video/frames", "video/embeddings", "video/thumbnails"}
    moved = {str(k) for k in diff_affected(features.graph_at("v1"), features.graph_at("v2"))}
    assert moved == {"video/audio", "text/transcript"}


# ------------------------------------------------------------------------------------------ the chain
def test_chain_is_the_five_patterns_in_order() -> None:
    chain = load_chain(MIGRATIONS)
    assert chain.ids == [c[0] for c in CHAIN]
    assert [m.kind for m in chain] == [c[1] for c in CHAIN]
    assert chain.head.migration_id == CHAIN[-1][0]


@pytest.mark.parametrize("migration_id, kind, from_stage, to_stage", [c for c in CHAIN if c[2]])
def test_diff_migrations_name_the_stage_snapshots(
    migration_id: str, kind: str, from_stage: str, to_stage: str
) -> None:
    """The snapshot versions written in the files are the ones the graph history produces."""
    versions = features.snapshot_versions()
    migration = _load(migration_id)
    assert isinstance(migration, DiffMigration)
    assert migration.from_snapshot_version == versions[from_stage]
    assert migration.to_snapshot_version == versions[to_stage]


def test_yaml_migration_uses_the_reusable_backfill_next_to_reconciliation() -> None:
    migration = _load(CHAIN[1][0])
    ops = migration.operations()
    assert [type(op) for op in ops] == [S3ObjectBackfill, DataVersionReconciliation]
    assert str(ops[0].feature_key) == "video/thumbnails"
    assert ops[0].type == "example_project.ops.S3ObjectBackfill"


def test_operations_computed_from_the_graph_skip_roots_and_follow_lineage() -> None:
    migration = _load(CHAIN[2][0])
    assert [op.op_id for op in migration.operations()] == [
        "reconcile_video__frames",
        "reconcile_video__embeddings",
        "reconcile_video__thumbnails",
    ]
    assert all(isinstance(op, DataVersionReconciliation) for op in migration.operations())


def test_operations_depend_on_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_ENV", "staging")  # staging recomputes embeddings on its GPUs
    migration = _load(CHAIN[2][0])
    assert [op.op_id for op in migration.operations()] == [
        "reconcile_video__frames",
        "reconcile_video__thumbnails",
    ]
    monkeypatch.setenv("EXAMPLE_ENV", "qa")
    with pytest.raises(MetaxyError, match=r"EXAMPLE_ENV='qa' is not one of \['dev', 'prod', 'staging'\]"):
        _load(CHAIN[2][0])


def test_reference_file_holds_two_minimal_classes_outside_the_migrations_dir() -> None:
    from example_project import reference_migrations as ref

    assert not (MIGRATIONS / "reference_migrations.py").exists()
    minimal = ref.MinimalMigration()
    assert isinstance(minimal, PythonMigration)
    assert [type(op) for op in minimal.operations()] == [DataVersionReconciliation]
    custom = ref.MinimalCustomMigration()
    assert isinstance(custom, CustomMigration)
    assert custom.parent == minimal.migration_id


# ------------------------------------------------------------------------------------------ validators
def test_s3_backfill_operation_validates_its_configuration() -> None:
    base = {"feature_key": "video/thumbnails", "s3_bucket": "example-media", "prefix": "thumbnails/"}
    assert S3ObjectBackfill(**base).prefix == "thumbnails/"
    with pytest.raises(ValidationError, match="must end with '/'"):
        S3ObjectBackfill(**{**base, "prefix": "thumbnails"})
    with pytest.raises(ValidationError, match="bucket name"):
        S3ObjectBackfill(**{**base, "s3_bucket": "s3://example-media"})


def test_postgres_backfill_loads_without_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    migration = _load(CHAIN[4][0])
    assert migration.database_url.get_secret_value() == ""
    # ...but refuses to run without one.
    with pytest.raises(ValidationError, match="DATABASE_URL is not set"):
        type(migration).model_validate(migration.model_dump(), context={"metaxy_phase": APPLY_PHASE})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"database_url": SecretStr("mysql://db:3306/x")}, "must start with postgresql://"),
        ({"table": "video_annotations; DROP TABLE x"}, "must be a plain identifier"),
        ({"batch_size": 10}, re.escape(pydantic_message(Annotated[int, Field(ge=100)], 10))),
        ({"batch_size": 1_000_000}, re.escape(pydantic_message(Annotated[int, Field(le=50_000)], 1_000_000))),
        ({"annotated_since": datetime(2025, 5, 1, tzinfo=UTC)}, "must be before annotated_until"),
        ({"annotated_until": datetime(2999, 1, 1, tzinfo=UTC)}, "is in the future"),
    ],
)
def test_postgres_backfill_validators(monkeypatch: pytest.MonkeyPatch, change: dict, message: str) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    migration = _load(CHAIN[4][0])
    with pytest.raises(ValidationError, match=message):
        type(migration).model_validate({**migration.model_dump(), **change})


def test_a_bad_value_in_the_file_names_the_file_and_the_field(tmp_path: Path) -> None:
    name = CHAIN[4][0] + ".py"
    path = tmp_path / name
    path.write_text(
        (MIGRATIONS / name).read_text().replace("batch_size: int = Field(500,", "batch_size: int = Field(5,")
    )
    with pytest.raises(MetaxyError) as info:
        load_migration_file(path)
    assert str(info.value).startswith(str(path))
    assert "batch_size" in str(info.value)


def test_postgres_connectivity_is_checked_in_the_apply_phase_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}&connect_timeout=2"  # no server on that socket
    monkeypatch.setenv("DATABASE_URL", nowhere)
    migration = _load(CHAIN[4][0])  # loading is fine
    with pytest.raises(ValidationError, match="cannot connect to DATABASE_URL"):
        type(migration).model_validate(migration.model_dump(), context={"metaxy_phase": APPLY_PHASE})


# ------------------------------------------------------------------------------------------ Dagster
def test_dagster_definitions_load_without_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    from example_project.definitions import build_definitions

    defs = build_definitions(MetaxyConfig.load(CONFIG_FILE))
    keys = {k for k in defs.resolve_asset_graph().get_all_asset_keys()}
    migrations = {dg.AssetKey(["metaxy", "migrations", c[0]]) for c in CHAIN}
    assert keys == migrations | {dg.AssetKey(k.parts) for k in EXAMPLE_GRAPH.keys}  # the feature tables too
    assert {"metaxy_migrations_apply", "metaxy_migrations_plan"} <= {
        j.name for j in defs.resolve_all_job_defs()
    }
    assert [s.cron_schedule for s in defs.schedules] == ["0 3 * * *"]
    assert sorted(s.name for s in defs.sensors) == ["metaxy_history_sensor", "metaxy_snapshot_sensor"]
    graph = defs.resolve_asset_graph()
    # Each migration depends on its parent; its ops are its operations in order.
    for (child, *_), (parent, *_) in zip(CHAIN[1:], CHAIN, strict=False):
        assert (
            dg.AssetKey(["metaxy", "migrations", parent])
            in graph.get(dg.AssetKey(["metaxy", "migrations", child])).parent_keys
        )
    frames = defs.resolve_assets_def(dg.AssetKey(["metaxy", "migrations", CHAIN[2][0]]))
    assert [n.name.split("__", 1)[1] for n in frames.node_def.node_defs] == [
        "1_reconcile_video__frames",
        "2_reconcile_video__embeddings",
        "3_reconcile_video__thumbnails",
    ]


def test_dagster_module_loads_from_the_project_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `dagster dev` in example_project/ does: import the module named in pyproject.toml."""
    import tomllib

    settings = tomllib.loads((EXAMPLE_DIR / "pyproject.toml").read_text())["tool"]["dagster"]
    assert settings["module_name"] == "example_project.definitions"
    import importlib

    module = importlib.import_module(settings["module_name"])
    # a @definitions function: the components of example_project/defs/, as dg and `dagster dev` load them
    defs = module.defs()
    assert defs.resolve_job_def("metaxy_migrations_plan") is not None
    reference = module.build_definitions(MetaxyConfig.load(CONFIG_FILE))  # the same component, explicitly
    assert set(defs.resolve_asset_graph().get_all_asset_keys()) == set(
        reference.resolve_asset_graph().get_all_asset_keys()
    )


def test_store_folder_is_inside_the_project_and_ignored() -> None:
    config = MetaxyConfig.load(CONFIG_FILE)
    assert Path(config.store_root) == EXAMPLE_DIR / ".metaxy" / "store"
    ignore = (EXAMPLE_DIR.parent / ".gitignore").read_text().splitlines()
    assert "example_project/.metaxy/store/" in ignore
    assert shutil.which("git") is not None
