"""Project configuration: ``metaxy.toml`` or ``[tool.metaxy]`` in ``pyproject.toml``, plus ``METAXY_*``.

The file is found by walking up from the working directory (``METAXY_CONFIG`` names one explicitly).
Relative paths in it are relative to the file's folder, so commands behave the same from any sub-folder.
Environment variables override the file: ``METAXY_PROJECT``, ``METAXY_ENTRYPOINTS`` (comma-separated),
``METAXY_MIGRATIONS_DIR``, ``METAXY_STORE_ROOT``, ``METAXY_STORE_STORAGE_OPTIONS`` (a JSON object) and
``METAXY_LOCK_TTL_SECONDS``. Storage option values may reference the environment explicitly as
``"${VAR}"``, which keeps secrets out of the file; nothing is read from the environment implicitly.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from metaxy_core.errors import ConfigError, MetaxyError, format_validation_error

if TYPE_CHECKING:
    from metaxy_core.graph.graph import FeatureGraph
    from metaxy_core.migrations.chain import MigrationChain
    from metaxy_core.store.delta import DeltaMetadataStore

CONFIG_FILE = "metaxy.toml"


class NoProjectError(ConfigError):
    """No configuration file was found where a command needs a project (``metaxy`` outside a project)."""

    def __init__(self, start: Path) -> None:
        self.start = start
        super().__init__(
            f"no metaxy project here: no {CONFIG_FILE}, and no pyproject.toml with a [tool.metaxy] table, in "
            f"{start} or any folder above it; run `metaxy init` to create a commented {CONFIG_FILE} in this "
            "folder, or pass --config PATH (or set METAXY_CONFIG)"
        )


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class StoreConfig(BaseModel):
    """Where the metadata lives."""

    model_config = ConfigDict(extra="forbid")

    def __repr_args__(self) -> Any:  # option values may be credentials: repr/str show the keys only
        for name, value in super().__repr_args__():
            yield (
                name,
                (
                    {k: "***" for k in value}
                    if name == "storage_options" and isinstance(value, dict)
                    else value
                ),
            )

    root: str = Field(
        ".metaxy/store", description="Local folder (relative to the config file) or s3://bucket/prefix."
    )
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="delta-rs storage options; values may be '${ENV_VAR}' references."
    )

    @field_validator("storage_options", mode="before")
    @classmethod
    def _option_scalars(cls, value: Any) -> Any:
        """TOML/JSON scalars (``AWS_ALLOW_HTTP = true``, ``max_retries = 3``) become the strings delta-rs
        takes."""
        if not isinstance(value, dict):
            return value
        return {
            k: ("true" if v else "false")
            if isinstance(v, bool)
            else str(v)
            if isinstance(v, (int, float))
            else v
            for k, v in value.items()
        }


class MetaxyConfig(BaseModel):
    """A project's metaxy settings. Build with :meth:`load`; every field has a working default."""

    model_config = ConfigDict(extra="forbid")

    project: str = "default"
    entrypoints: list[str] = Field(default_factory=list, description="Modules imported to register features.")
    migrations_dir: str = ".metaxy/migrations"
    store: StoreConfig = Field(default_factory=StoreConfig)
    lock_ttl_seconds: float = Field(
        600.0, gt=0, description="A migration lock whose holder stops renewing it expires after this long."
    )
    lock_heartbeat_seconds: float | None = Field(
        None, description="How often a lock holder renews its lease (default: a quarter of the TTL)."
    )
    bucket_rows: int = Field(
        1_000_000,
        gt=0,
        description=(
            "Samples per bucket of bulk steps (reconciliation): one unit of work, one commit; it bounds the "
            "memory of a worker (about 1 GiB at the default), whatever the table size."
        ),
    )
    workers: int = Field(
        1,
        ge=1,
        description="Local worker processes `metaxy migrations apply` runs units of work in (--workers).",
    )
    config_file: Path | None = Field(None, exclude=True)
    root_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("lock_ttl_seconds")
    @classmethod
    def _lock_ttl(cls, value: float) -> float:
        from metaxy_core.migrations.lock import lock_settings_problem

        problem = lock_settings_problem(value)
        if problem is not None:
            raise ValueError(problem[1])
        return value

    @model_validator(mode="after")
    def _lock_heartbeat(self) -> MetaxyConfig:
        from metaxy_core.migrations.lock import lock_settings_problem

        problem = lock_settings_problem(self.lock_ttl_seconds, self.lock_heartbeat_seconds)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return self

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", value):
            raise ValueError(f"project name {value!r} must be letters, digits, '_', '-' or '.'")
        return value

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        start_dir: str | Path | None = None,
        require_file: bool = False,
    ) -> MetaxyConfig:
        """Find and read the configuration, then apply ``METAXY_*`` overrides (see :meth:`with_overrides`).

        Without a file every setting has its default (a library user may configure everything in code).
        ``require_file`` (the CLI's project verbs) refuses that instead, unless ``METAXY_STORE_ROOT`` names
        the store explicitly (a deployment configured by environment variables only).

        Raises:
            NoProjectError: ``require_file`` and no configuration file found walking up from ``start_dir``.
            ConfigError: the file is not valid TOML, has unknown keys or wrong types (the message names the
                file and the key; ``METAXY_* environment`` for a bad environment value).
        """
        file = (
            Path(path)
            if path
            else (Path(os.environ["METAXY_CONFIG"]) if os.environ.get("METAXY_CONFIG") else None)
        )
        if file is None:
            file = find_config_file(Path(start_dir) if start_dir else Path.cwd())
            if file is None and require_file and not os.environ.get("METAXY_STORE_ROOT"):
                raise NoProjectError(Path(start_dir or Path.cwd()).resolve())
        data: dict[str, Any] = {}
        if file is not None:
            file = file.resolve()
            if not file.is_file():
                raise ConfigError(f"{file}: configuration file not found")
            data = _read_toml(file)
        root_dir = file.parent if file is not None else Path(start_dir or Path.cwd()).resolve()
        where = str(file) if file else "configuration"
        config = _validated(cls, {**data, "config_file": file, "root_dir": root_dir}, where=where)
        return config.with_overrides(**_env_overrides(), source="METAXY_* environment")

    def with_overrides(
        self,
        *,
        project: str | None = None,
        entrypoints: list[str] | None = None,
        migrations_dir: str | None = None,
        store_root: str | None = None,
        storage_options: dict[str, Any] | None = None,
        lock_ttl_seconds: float | str | None = None,
        lock_heartbeat_seconds: float | str | None = None,
        bucket_rows: int | str | None = None,
        workers: int | str | None = None,
        source: str | None = None,
    ) -> MetaxyConfig:
        """A copy with the given values in place of the configured ones: the one way settings are overridden
        (``METAXY_*`` variables, Dagster resources and components all come through here).

        ``None`` keeps the configured value; ``storage_options`` are merged over the configured ones. Relative
        paths stay relative to the config file's folder. The result is validated like a file.

        Args:
            source: what the overrides come from, named by the error when one is invalid (default: the file).

        Raises:
            ConfigError: an override is invalid.

        Example:
            >>> MetaxyConfig.load().with_overrides(store_root="s3://ml-metadata/staging", project="video")
        """
        updates: dict[str, Any] = {
            "project": project,
            "entrypoints": entrypoints,
            "migrations_dir": migrations_dir,
            "lock_ttl_seconds": lock_ttl_seconds,
            "lock_heartbeat_seconds": lock_heartbeat_seconds,
            "bucket_rows": bucket_rows,
            "workers": workers,
        }
        data = {**self.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        if store_root is not None:
            data["store"]["root"] = store_root
        if storage_options:
            data["store"]["storage_options"] = {**data["store"]["storage_options"], **storage_options}
        if data == self.model_dump():
            return self
        where = source or str(self.config_file or "configuration")
        return _validated(
            type(self), {**data, "config_file": self.config_file, "root_dir": self.root_dir}, where=where
        )

    # ---------------------------------------------------------------- resolution
    @property
    def migrations_path(self) -> Path:
        path = Path(self.migrations_dir)
        return path if path.is_absolute() else (self.root_dir / path)

    @property
    def store_root(self) -> str:
        root = self.store.root
        if "://" in root or Path(root).is_absolute():
            return root
        return str((self.root_dir / root).resolve())

    def resolved_storage_options(self) -> dict[str, str]:
        """Storage options with ``${VAR}`` references expanded (missing variables are an error)."""

        def expand(key: str, value: str) -> str:
            def sub(match: re.Match[str]) -> str:
                name = match.group(1)
                if name not in os.environ:
                    raise ConfigError(
                        f"{self.config_file or 'configuration'}: store.storage_options.{key} refers to "
                        f"${{{name}}}, which is not set; export it or remove the option"
                    )
                return os.environ[name]

            return _ENV_REF.sub(sub, value)

        return {k: expand(k, v) for k, v in self.store.storage_options.items()}

    def get_store(self) -> DeltaMetadataStore:
        """The configured :class:`~metaxy_core.DeltaMetadataStore` (no I/O until it is used)."""
        from metaxy_core.store.delta import DeltaMetadataStore

        try:
            return DeltaMetadataStore(
                self.store_root,
                self.resolved_storage_options(),
                project=self.project,
                lock_ttl_seconds=self.lock_ttl_seconds,
                lock_heartbeat_seconds=self.lock_heartbeat_seconds,
            )
        except ConfigError as exc:
            if self.config_file is None or str(exc).startswith(str(self.config_file)):
                raise
            raise ConfigError(f"{self.config_file}: [store]: {exc}") from None

    def load_features(self) -> FeatureGraph:
        """Import the entrypoint modules (the config folder on ``sys.path``); returns the active graph."""
        from metaxy_core.graph.graph import FeatureGraph

        root = self.add_import_path()
        for module in self.entrypoints:
            where = f"{self.config_file or 'configuration'}: entrypoint {module!r}"
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(
                    f"{where} could not be imported ({exc}); check `entrypoints` and that {root} contains it"
                ) from exc
            except MetaxyError:
                raise  # graph errors already name the feature at fault
            except SyntaxError as exc:
                raise ConfigError(
                    f"{where} has a syntax error ({exc.filename}, line {exc.lineno}: {exc.msg}); fix the code"
                ) from exc
            except ValidationError as exc:
                raise ConfigError(
                    f"{where} declares an invalid feature{_user_line(exc, root)}: "
                    f"{format_validation_error(exc)}; fix the declaration"
                ) from exc
            except Exception as exc:  # the module's own code failed at import time
                raise ConfigError(
                    f"{where} raised {type(exc).__name__} while importing{_user_line(exc, root)}: {exc}; fix "
                    "the module (run with --raiseerr for the traceback)"
                ) from exc
        return FeatureGraph.get_active()

    def load_chain(self, graph: FeatureGraph | None = None, *, allow_forks: bool = False) -> MigrationChain:
        """The project's migration chain, from its files only (never the store): the one chain loader.

        The config folder is importable first (operation ``type:`` paths and ``.py`` migrations may import
        the project's own modules), and a PythonMigration's ``build_operations()`` may read the feature graph
        while the chain loads, so ``graph`` is active meanwhile. Default: the active graph, with the
        entrypoints imported first when nothing registered features yet. ``allow_forks`` accepts a chain with
        several heads (``metaxy migrations heads`` and ``generate --merge`` read one to join it).

        Raises:
            MetaxyError: a file cannot be loaded or the chain is broken (the message names the file).
        """
        from metaxy_core.graph.graph import FeatureGraph
        from metaxy_core.migrations.loader import load_chain

        self.add_import_path()
        if graph is None:
            graph = FeatureGraph.get_active()
            if not len(graph):
                graph = self.load_features()
        with graph.use():
            return load_chain(self.migrations_path, allow_forks=allow_forks)

    def add_import_path(self) -> str:
        """Put the config file's folder on ``sys.path`` (once) so the project's own modules import as-is:
        entrypoints, operation ``type:`` paths in migration files and imports in ``.py`` migrations."""
        root = str(self.root_dir)
        if root not in sys.path:
            sys.path.insert(0, root)
        return root


def _user_line(exc: BaseException, root: str) -> str:
    """`` at <file>, line <n>`` of the innermost traceback frame inside the project folder, if any."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(root)]
    return f" at {frames[-1].filename}, line {frames[-1].lineno}" if frames else ""


def find_config_file(start: Path) -> Path | None:
    """The nearest ``metaxy.toml``, or ``pyproject.toml`` with a ``[tool.metaxy]`` table, walking up."""
    for folder in [start.resolve(), *start.resolve().parents]:
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                if "metaxy" in tomllib.loads(pyproject.read_text()).get("tool", {}):
                    return pyproject
            except tomllib.TOMLDecodeError:
                continue
    return None


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc}); fix the syntax") from None
    if file.name == "pyproject.toml":
        data = data.get("tool", {}).get("metaxy", {})
    return data


def _validated(cls: type[MetaxyConfig], data: dict[str, Any], *, where: str) -> MetaxyConfig:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc, verbatim=True)
        raise ConfigError(f"{where}: invalid metaxy configuration: {problems}") from None


def _env_overrides() -> dict[str, Any]:
    """The ``METAXY_*`` variables that are set, as :meth:`MetaxyConfig.with_overrides` arguments."""
    env = os.environ
    overrides: dict[str, Any] = {
        "project": env.get("METAXY_PROJECT"),
        "migrations_dir": env.get("METAXY_MIGRATIONS_DIR"),
        "store_root": env.get("METAXY_STORE_ROOT"),
        "lock_ttl_seconds": env.get("METAXY_LOCK_TTL_SECONDS"),
        "lock_heartbeat_seconds": env.get("METAXY_LOCK_HEARTBEAT_SECONDS"),
        "bucket_rows": env.get("METAXY_BUCKET_ROWS"),
        "workers": env.get("METAXY_WORKERS"),
    }
    if "METAXY_ENTRYPOINTS" in env:
        overrides["entrypoints"] = [m.strip() for m in env["METAXY_ENTRYPOINTS"].split(",") if m.strip()]
    if "METAXY_STORE_STORAGE_OPTIONS" in env:
        try:
            options = json.loads(env["METAXY_STORE_STORAGE_OPTIONS"])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"METAXY_STORE_STORAGE_OPTIONS is not a JSON object ({exc.msg})") from None
        if not isinstance(options, dict):
            raise ConfigError("METAXY_STORE_STORAGE_OPTIONS must be a JSON object")
        overrides["storage_options"] = options
    return overrides


#: what ``metaxy init`` writes: every key with its default, and why it is there
CONFIG_TEMPLATE = """\
# metaxy project configuration; relative paths are relative to this file.
# Every setting can be overridden by an environment variable: METAXY_PROJECT, METAXY_ENTRYPOINTS
# (comma-separated), METAXY_MIGRATIONS_DIR, METAXY_STORE_ROOT, METAXY_STORE_STORAGE_OPTIONS (a JSON object),
# METAXY_LOCK_TTL_SECONDS, METAXY_BUCKET_ROWS and METAXY_WORKERS. See docs/cli.md.

# Scopes the pushed snapshots, the migration log and the migration lock inside the store.
project = "{project}"

# Modules imported to register your features (this folder is on sys.path), e.g. ["my_pipeline.features"].
entrypoints = []

# Where `metaxy migrations generate` writes migration files and every command reads them.
migrations_dir = ".metaxy/migrations"

# A migration lock whose holder stops renewing it (a crashed or stalled apply on another machine) expires
# after this many seconds; a live holder renews it every quarter of it (lock_heartbeat_seconds), so a long
# apply keeps it. Raise it where processes may pause longer (a suspended VM): the paused run then loses
# the lease and stops at its next write instead of another run waiting.
lock_ttl_seconds = 600

# Samples per bucket of a reconciliation: one unit of work and one commit each; it bounds a worker's memory
# (about 1 GiB at 1,000,000). Local worker processes of `metaxy migrations apply` (--workers); see
# docs/scale.md for Dagster's executors.
bucket_rows = 1000000
workers = 1

[store]
# A local folder or s3://bucket/prefix.
root = ".metaxy/store"

# Options passed to Delta Lake (region, endpoint, ...). Values may be "${{ENV_VAR}}" references, which keeps
# credentials out of this file; AWS credentials otherwise come from boto3's standard chain.
# [store.storage_options]
# AWS_REGION = "eu-west-1"
"""


def project_name_for(folder: Path) -> str:
    """A valid project name from a folder name (``My Pipeline`` -> ``my_pipeline``)."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "_", folder.name).strip("_.-").lower()
    return name if name and name[0].isalnum() else "default"
