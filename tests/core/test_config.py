"""MetaxyConfig.load(): discovery, pyproject.toml, METAXY_* overrides, ${VAR} expansion and exact errors."""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field

from metaxy_core import DeltaMetadataStore, FeatureGraph, FeatureKey, MetaxyConfig
from metaxy_core.config import StoreConfig
from metaxy_core.errors import ConfigError
from metaxy_core.testing.messages import pydantic_message


def json_says(text: str) -> str:
    """The json module's own explanation of why ``text`` is not JSON (its wording, not ours)."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return exc.msg
    raise AssertionError(f"{text!r} is valid JSON")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------- discovery
def test_config_is_found_by_walking_up_and_paths_are_relative_to_its_folder(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "proj" / "metaxy.toml",
        'project = "demo"\nentrypoints = ["demo.features"]\n[store]\nroot = "data/store"\n',
    )
    deep = tmp_path / "proj" / "src" / "pkg"
    deep.mkdir(parents=True)

    config = MetaxyConfig.load(start_dir=deep)

    assert config.config_file == config_file
    assert config.root_dir == tmp_path / "proj"
    assert config.project == "demo"
    assert config.entrypoints == ["demo.features"]
    assert config.store_root == str(tmp_path / "proj" / "data" / "store")
    assert config.migrations_path == tmp_path / "proj" / ".metaxy" / "migrations"


def test_working_directory_is_the_default_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "metaxy.toml", 'project = "from-cwd"\n')
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert MetaxyConfig.load().project == "from-cwd"


def test_pyproject_tool_metaxy_table_is_read(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        '[project]\nname = "x"\n[tool.metaxy]\nproject = "py"\nmigrations_dir = "migs"\n'
        '[tool.metaxy.store]\nroot = "s"\n',
    )
    config = MetaxyConfig.load(start_dir=tmp_path)
    assert config.config_file == tmp_path / "pyproject.toml"
    assert config.project == "py"
    assert config.migrations_path == tmp_path / "migs"
    assert config.store_root == str(tmp_path / "s")


def test_pyproject_without_tool_metaxy_is_skipped_on_the_way_up(tmp_path: Path) -> None:
    write(tmp_path / "metaxy.toml", 'project = "outer"\n')
    write(
        tmp_path / "inner" / "pyproject.toml", '[project]\nname = "inner"\n[tool.ruff]\nline-length = 100\n'
    )
    assert MetaxyConfig.load(start_dir=tmp_path / "inner").project == "outer"


def test_metaxy_toml_wins_over_pyproject_in_the_same_folder(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.metaxy]\nproject = "py"\n')
    write(tmp_path / "metaxy.toml", 'project = "toml"\n')
    assert MetaxyConfig.load(start_dir=tmp_path).project == "toml"


def test_no_file_gives_defaults_rooted_at_the_start_folder(tmp_path: Path) -> None:
    config = MetaxyConfig.load(start_dir=tmp_path)
    assert config.config_file is None
    assert config.project == "default"
    assert config.entrypoints == []
    assert config.store_root == str(tmp_path / ".metaxy" / "store")
    assert config.migrations_path == tmp_path / ".metaxy" / "migrations"
    assert config.lock_ttl_seconds == 600.0  # ten minutes; a live holder renews every 150 s


def test_metaxy_config_names_the_file_explicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "metaxy.toml", 'project = "walked"\n')
    explicit = write(tmp_path / "elsewhere" / "custom.toml", 'project = "explicit"\n')
    monkeypatch.setenv("METAXY_CONFIG", str(explicit))
    config = MetaxyConfig.load(start_dir=tmp_path)
    assert (config.project, config.root_dir) == ("explicit", tmp_path / "elsewhere")


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(missing)
    assert str(exc.value) == f"{missing}: configuration file not found"


# ----------------------------------------------------------------------------------------- env overrides
def test_metaxy_environment_variables_override_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "metaxy.toml",
        'project = "file"\nentrypoints = ["a"]\n[store]\nroot = "local"\n'
        '[store.storage_options]\nAWS_REGION = "eu-west-1"\nAWS_ENDPOINT_URL = "http://file:9000"\n',
    )
    monkeypatch.setenv("METAXY_PROJECT", "env")
    monkeypatch.setenv("METAXY_ENTRYPOINTS", "pkg.one, pkg.two,,")
    monkeypatch.setenv("METAXY_MIGRATIONS_DIR", "/abs/migrations")
    monkeypatch.setenv("METAXY_STORE_ROOT", "s3://bucket/prefix")
    monkeypatch.setenv(
        "METAXY_STORE_STORAGE_OPTIONS", '{"AWS_ENDPOINT_URL": "http://env:9000", "max_retries": 1}'
    )
    monkeypatch.setenv("METAXY_LOCK_TTL_SECONDS", "90")

    config = MetaxyConfig.load(start_dir=tmp_path)

    assert config.project == "env"
    assert config.entrypoints == ["pkg.one", "pkg.two"]
    assert config.migrations_path == Path("/abs/migrations")
    assert config.store_root == "s3://bucket/prefix"
    assert config.store.storage_options == {
        "AWS_REGION": "eu-west-1",  # kept from the file
        "AWS_ENDPOINT_URL": "http://env:9000",  # overridden
        "max_retries": "1",  # JSON numbers become the strings delta-rs takes
    }
    assert config.lock_ttl_seconds == 90.0


def test_storage_options_json_that_is_not_an_object_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAXY_STORE_STORAGE_OPTIONS", "{not json")
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path)
    assert str(exc.value) == f"METAXY_STORE_STORAGE_OPTIONS is not a JSON object ({json_says('{not json')})"
    monkeypatch.setenv("METAXY_STORE_STORAGE_OPTIONS", '["a"]')
    with pytest.raises(ConfigError, match=r"^METAXY_STORE_STORAGE_OPTIONS must be a JSON object$"):
        MetaxyConfig.load(start_dir=tmp_path)


def test_an_invalid_environment_value_is_reported_against_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAXY_LOCK_TTL_SECONDS", "-5")
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path)
    assert str(exc.value) == (
        "METAXY_* environment: invalid metaxy configuration: lock_ttl_seconds: "
        + pydantic_message(Annotated[float, Field(gt=0)], -5)
    )


# ------------------------------------------------------------------------------------ ${VAR} references
def test_storage_option_references_are_expanded_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        tmp_path / "metaxy.toml",
        '[store]\nroot = "s3://b/p"\n[store.storage_options]\n'
        'AWS_SECRET_ACCESS_KEY = "${MY_SECRET}"\nAWS_ENDPOINT_URL = "http://${MY_HOST}:9000"\n'
        'AWS_REGION = "$MY_SECRET"\n',
    )
    monkeypatch.setenv("MY_SECRET", "s3cr3t")
    monkeypatch.setenv("MY_HOST", "minio")
    config = MetaxyConfig.load(start_dir=tmp_path)
    assert config.store.storage_options["AWS_SECRET_ACCESS_KEY"] == "${MY_SECRET}"  # unexpanded until asked
    assert config.resolved_storage_options() == {
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_REGION": "$MY_SECRET",  # only the explicit ${...} form is a reference
    }


def test_a_reference_to_an_unset_variable_names_the_file_and_the_option(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "metaxy.toml", '[store.storage_options]\nAWS_SECRET_ACCESS_KEY = "${UNSET_SECRET_VAR}"\n'
    )
    config = MetaxyConfig.load(start_dir=tmp_path)
    with pytest.raises(ConfigError) as exc:
        config.resolved_storage_options()
    assert str(exc.value) == (
        f"{config_file}: store.storage_options.AWS_SECRET_ACCESS_KEY refers to ${{UNSET_SECRET_VAR}}, "
        "which is not "
        "set; export it or remove the option"
    )


def test_toml_booleans_and_numbers_in_storage_options_become_strings(tmp_path: Path) -> None:
    write(
        tmp_path / "metaxy.toml",
        "[store.storage_options]\nAWS_ALLOW_HTTP = true\nmax_retries = 2\ntimeout = 2.5\n",
    )
    options = MetaxyConfig.load(start_dir=tmp_path).resolved_storage_options()
    assert options == {"AWS_ALLOW_HTTP": "true", "max_retries": "2", "timeout": "2.5"}


# ---------------------------------------------------------------------------------------------- errors
def test_an_unknown_top_level_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    config_file = write(tmp_path / "metaxy.toml", 'projekt = "typo"\n')
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path)
    assert str(exc.value) == (
        f"{config_file}: invalid metaxy configuration: projekt: unknown key, remove it or check its spelling"
    )


def test_an_unknown_nested_key_names_its_dotted_path(tmp_path: Path) -> None:
    config_file = write(tmp_path / "pyproject.toml", '[tool.metaxy.store]\nrooot = "x"\n')
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path)
    assert str(exc.value) == (
        f"{config_file}: invalid metaxy configuration: "
        "store.rooot: unknown key, remove it or check its spelling"
    )


def test_a_wrong_type_names_the_key(tmp_path: Path) -> None:
    config_file = write(tmp_path / "metaxy.toml", 'entrypoints = "demo.features"\nstore = "s3://b/p"\n')
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path)
    assert str(exc.value) == (
        f"{config_file}: invalid metaxy configuration: entrypoints: Input should be a valid list; "
        "store: Input should be a valid dictionary or instance of StoreConfig"
    )


def test_a_store_that_is_not_a_table_is_reported_even_with_env_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "metaxy.toml", 'store = "s3://b/p"\n')
    monkeypatch.setenv("METAXY_STORE_ROOT", "s3://other/p")
    with pytest.raises(
        ConfigError, match=re.escape(f"store: {pydantic_message(StoreConfig, 's3://b/p')}") + "$"
    ):
        MetaxyConfig.load(start_dir=tmp_path)


def test_an_invalid_project_name_is_rejected(tmp_path: Path) -> None:
    write(tmp_path / "metaxy.toml", 'project = "my project/1"\n')
    with pytest.raises(ConfigError, match=r"project: (.*, )?project name 'my project/1' must be letters"):
        MetaxyConfig.load(start_dir=tmp_path)


def test_bad_toml_names_the_file_and_says_to_fix_the_syntax(tmp_path: Path) -> None:
    config_file = write(tmp_path / "metaxy.toml", 'project = "unterminated\n')
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path)
    message = str(exc.value)
    assert message.startswith(f"{config_file}: not valid TOML (")
    assert message.endswith("); fix the syntax")
    assert "line 1" in message


# ------------------------------------------------------------------------------------ store & features
def test_get_store_builds_the_configured_delta_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path / "metaxy.toml",
        'project = "demo"\nlock_ttl_seconds = 60\n[store]\nroot = ".metaxy/store"\n'
        '[store.storage_options]\nsome_option = "${OPT}"\n',
    )
    monkeypatch.setenv("OPT", "value")
    store = MetaxyConfig.load(start_dir=tmp_path).get_store()
    assert isinstance(store, DeltaMetadataStore)
    assert store.root_uri == str(tmp_path / ".metaxy" / "store")
    assert store.project == "demo" and store.lock_ttl_seconds == 60
    assert store.storage_options == {"some_option": "value"}
    assert not (tmp_path / ".metaxy").exists()  # building the store does no I/O


def test_load_features_imports_entrypoints_from_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graph: FeatureGraph
) -> None:
    module = f"features_{uuid.uuid4().hex[:8]}"
    write(
        tmp_path / module / "__init__.py",
        "from metaxy_core import Feature, FeatureSpec, FieldSpec\n"
        "class Raw(Feature, spec=FeatureSpec(key='cfg/raw', fields=[FieldSpec(key='x')])):\n    pass\n",
    )
    write(tmp_path / "metaxy.toml", f'entrypoints = ["{module}"]\n')
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, module, raising=False)
    loaded = MetaxyConfig.load(start_dir=tmp_path).load_features()
    assert loaded is graph
    assert graph.keys == [FeatureKey("cfg/raw")]
    sys.modules.pop(module, None)


def test_an_entrypoint_that_cannot_be_imported_names_the_file_and_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = write(tmp_path / "metaxy.toml", 'entrypoints = ["no_such_module_xyz"]\n')
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path).load_features()
    assert str(exc.value) == (
        f"{config_file}: entrypoint 'no_such_module_xyz' could not be imported (No module named "
        f"'no_such_module_xyz'); check `entrypoints` and that {tmp_path} contains it"
    )


def test_scale_out_keys_come_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "metaxy.toml", "bucket_rows = 250000\nworkers = 4\n")
    config = MetaxyConfig.load(start_dir=tmp_path)
    assert (config.bucket_rows, config.workers) == (250_000, 4)
    monkeypatch.setenv("METAXY_BUCKET_ROWS", "50000")
    monkeypatch.setenv("METAXY_WORKERS", "2")
    config = MetaxyConfig.load(start_dir=tmp_path)
    assert (config.bucket_rows, config.workers) == (50_000, 2)
    assert (MetaxyConfig().bucket_rows, MetaxyConfig().workers) == (1_000_000, 1)  # today's behaviour


def test_a_bucket_of_no_rows_names_the_file_and_the_key(tmp_path: Path) -> None:
    config_file = write(tmp_path / "metaxy.toml", "bucket_rows = 0\n")
    with pytest.raises(ConfigError) as exc:
        MetaxyConfig.load(start_dir=tmp_path)
    assert str(exc.value) == (
        f"{config_file}: invalid metaxy configuration: bucket_rows: "
        + pydantic_message(Annotated[int, Field(gt=0)], 0)
    )
