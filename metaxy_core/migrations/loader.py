"""Discovery and loading of migration files (``YYYYMMDD_HHMMSS_description.yaml|.yml|.py``).

YAML is parsed with ``yaml.safe_load`` only. Every error names the file and what to change; loading a
directory collects the errors of every bad file, so one broken file never hides another.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import ConfigDict, ValidationError
from pydantic_core import PydanticUndefined

from metaxy_core.errors import FileError, MetaxyError, format_validation_error, redact
from metaxy_core.migrations import compat
from metaxy_core.migrations.chain import MigrationChain
from metaxy_core.migrations.models import (
    INITIAL,
    CustomMigration,
    DiffMigration,
    FullGraphMigration,
    Migration,
    OperationsMigration,
    PythonMigration,
    unsupported_override,
)
from metaxy_core.migrations.snapshot_files import SnapshotFiles, snapshots_dir
from metaxy_core.migrations.usercode import raising_function

FILENAME = re.compile(
    r"^(?P<ts>\d{8}_\d{6})(?:_(?P<desc>[A-Za-z0-9][A-Za-z0-9_\-]*))?\.(?P<ext>yaml|yml|py)$"
)
EXTENSIONS = (".yaml", ".yml", ".py")
_BASES = (Migration, OperationsMigration, DiffMigration, PythonMigration, CustomMigration, FullGraphMigration)
_KINDS: dict[str, type[Migration]] = {
    "diff": DiffMigration,
    "full_graph": FullGraphMigration,
    "DiffMigration": DiffMigration,
    "FullGraphMigration": FullGraphMigration,
}
# Keys of Metaxy 0.1.x migration files, mapped onto this project's names.
_LEGACY_RENAMES = {
    "id": "migration_id",
    "from_project_version": "from_snapshot_version",
    "to_project_version": "to_snapshot_version",
    "project_version": "snapshot_version",
    "operations": "ops",
    "parent_migration_id": "parent",
}
_LEGACY_IGNORED = ("version", "feature_class_overrides")


class MigrationLoadError(FileError):
    """A migration file cannot be loaded; the message starts with its path.

    ``migration_id`` / ``parent`` / ``created_at`` hold what could still be read from the file (a validator
    failed, but the fields were there), so ``metaxy migrations status`` can place it in the chain.
    """

    migration_id: str | None = None
    parent: Any = None
    created_at: Any = None


class MigrationLoadErrors(MetaxyError):
    """Several files failed to load; ``errors`` holds each one."""

    def __init__(self, errors: list[MigrationLoadError]) -> None:
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{len(errors)} migration file(s) cannot be loaded:\n{lines}")


def discover(directory: Path) -> tuple[list[Path], list[MigrationLoadError]]:
    """Migration files in ``directory`` (sorted) and errors for misnamed ones."""
    if not directory.exists():
        return [], []
    files, errors = [], []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(("_", ".")) or path.suffix not in EXTENSIONS or not path.is_file():
            continue
        if not FILENAME.match(path.name):
            errors.append(
                MigrationLoadError(
                    path,
                    "file name must be YYYYMMDD_HHMMSS_description" + path.suffix + "; rename it "
                    "(e.g. `metaxy migrations generate --name ...` shows the format)",
                )
            )
            continue
        files.append(path)
    return files, errors


def load_migration_file(path: Path, *, context: dict[str, Any] | None = None) -> Migration:
    """Load one migration file.

    Raises:
        MigrationLoadError: naming ``path`` and the fix.
    """
    path = Path(path)
    match = FILENAME.match(path.name)
    if not match:
        raise MigrationLoadError(path, "file name must be YYYYMMDD_HHMMSS_description.yaml|.yml|.py")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MigrationLoadError(path, f"cannot be read ({exc.strerror})") from None
    if match["ext"] == "py":
        migration = _load_python(path, context)
    else:
        migration = _load_yaml(path, raw, context)
    stem = path.name.rsplit(".", 1)[0]
    if migration.migration_id not in (stem, match["ts"]):
        raise MigrationLoadError(
            path,
            f"migration id {migration.migration_id!r} does not match the file name; set it to {stem!r} "
            "(or rename the file after the id)",
        )
    migration._source_path = path
    migration._checksum = hashlib.sha256(raw).hexdigest()[:16]
    # The snapshots it names travel with it (`.metaxy/snapshots/` beside `.metaxy/migrations/`).
    migration._snapshot_files = SnapshotFiles(snapshots_dir(path.parent))
    return migration


_CSafeLoader = getattr(yaml, "CSafeLoader", None)


#: deeper than any real migration file nests; refused by us, whatever depth the installed PyYAML tolerates
MAX_DEPTH = 64
_OPENS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSES = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_QUOTED = re.compile(r"'[^'\n]*'|\"(?:[^\"\\\n]|\\.)*\"")


class _TooDeep(Exception):
    pass


def _check_depth(text: str) -> None:
    """Refuse nesting beyond ``MAX_DEPTH`` before anything is built.

    PyYAML's own limits changed between releases (6.0.4 caps flow nesting, older ones recurse until Python's
    limit), so the message a user sees must not depend on which one is installed: the event stream is counted
    here, and when the parser itself gives up, the flow brackets open at the point it stopped decide.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_CSafeLoader or yaml.SafeLoader):
            if isinstance(event, _OPENS):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _TooDeep
            elif isinstance(event, _CLOSES):
                depth -= 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None and _flow_depth(text, mark.index) > MAX_DEPTH:
            raise _TooDeep from None
        raise


def _flow_depth(text: str, index: int) -> int:
    """Flow brackets (``[``/``{``) still open at ``index``, ignoring quoted strings."""
    head = _QUOTED.sub("", text[:index])
    return head.count("[") + head.count("{") - head.count("]") - head.count("}")


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's parser when it is installed (about 10x faster: a Dagster code
    location loads every migration file). On an error the pure-Python parser runs again, so messages never
    depend on it."""
    _check_depth(text)
    if _CSafeLoader is not None:
        try:
            return yaml.load(text, Loader=_CSafeLoader)  # noqa: S506 - CSafeLoader is the safe loader
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def _load_yaml(path: Path, raw: bytes, context: dict[str, Any] | None) -> Migration:
    try:
        data = _safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise MigrationLoadError(path, "is not UTF-8 text") from None
    except yaml.constructor.ConstructorError as exc:  # a tag such as !!python/object/apply:os.system
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MigrationLoadError(
            path,
            f"YAML tag not allowed{where} ({exc.problem}); migration files hold plain values only, remove "
            "the tag",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise MigrationLoadError(path, f"malformed YAML{where}: {problem}; fix the syntax") from None
    except (_TooDeep, RecursionError):
        raise MigrationLoadError(
            path, f"is nested more than {MAX_DEPTH} levels deep, which no migration needs; flatten the file"
        ) from None
    if not isinstance(data, dict):
        raise MigrationLoadError(path, "must contain a YAML mapping (keys like migration_id, parent, ops)")
    _check_size(path, data)
    data = {str(k): v for k, v in data.items()}
    for old, new in _LEGACY_RENAMES.items():
        if old in data and new not in data:
            data[new] = data.pop(old)
    for key in _LEGACY_IGNORED:
        data.pop(key, None)
    if data.get("parent") is None and "parent" in data:
        data["parent"] = "initial"
    kind_name = (
        data.pop("kind", None)
        or data.pop("migration_type", None)
        or ("full_graph" if "snapshot_version" in data else "diff")
    )
    if not isinstance(kind_name, str):
        raise MigrationLoadError(path, "`kind` must be a string: `kind: diff` or `kind: full_graph`")
    cls = _KINDS.get(str(kind_name).rsplit(".", 1)[-1])
    if cls is None:
        raise MigrationLoadError(
            path,
            f"unknown migration kind {kind_name!r}; YAML migrations are `kind: diff` or `kind: full_graph`",
        )
    ids = compat.read_snapshot_ids(path.parent)
    unmapped = compat.unmapped_ids(data, ids)
    if unmapped:
        error = MigrationLoadError(
            path,
            f"snapshot id(s) {', '.join(unmapped)} are Metaxy 0.1.6 snapshot ids; run "
            f"`{compat.IMPORT_COMMAND}` to map them to this project's snapshots",
        )
        _recover(error, DiffMigration, data, path)  # `status` still places it in the chain
        raise error
    data = compat.map_snapshot_ids(data, ids)
    stem = path.name.rsplit(".", 1)[0]
    data.setdefault("migration_id", stem)
    for key in ("migration_id", "parent"):
        if isinstance(data.get(key), int) and not isinstance(data[key], bool):
            data[key] = _timestamp_id(data[key])
    if isinstance(data.get("parent"), list):  # a merge migration: `parent: [a, b]`
        data["parent"] = [
            _timestamp_id(p) if isinstance(p, int) and not isinstance(p, bool) else p for p in data["parent"]
        ]
    return _validate(path, cls, data, context)


#: more values than any real migration file holds; YAML aliases can make a small file expand exponentially
MAX_VALUES = 100_000


def _check_size(path: Path, data: Any) -> None:
    """Refuse documents that expand to more than :data:`MAX_VALUES` values (a "billion laughs" alias bomb
    would otherwise take minutes and gigabytes in validation and error messages). Stops counting at the
    limit."""
    count, stack = 0, [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise MigrationLoadError(
                path,
                f"expands to more than {MAX_VALUES} values (YAML anchors/aliases repeating large blocks?); "
                "write the migration out plainly",
            )
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _timestamp_id(value: int) -> str:
    """YAML 1.1 reads an unquoted ``20250101_000000`` as the integer 20250101000000: restore the id."""
    digits = str(value)
    return f"{digits[:8]}_{digits[8:]}" if len(digits) == 14 else digits


def _validate(
    path: Path, cls: type[Migration], data: dict[str, Any] | None, context: dict[str, Any] | None
) -> Migration:
    try:
        try:
            return cls.model_validate(data or {}, context=context)
        except ValidationError as exc:
            method = raising_function(exc, path)
            found = f" (validator {method})" if method else ""
            message = f"invalid {cls.__name__}: {format_validation_error(exc)}{found}"
            raise MigrationLoadError(path, redact(message)) from None
        except MetaxyError as exc:  # an operation that cannot be built (OperationError) and the like
            raise MigrationLoadError(path, str(exc)) from None
        except Exception as exc:  # a validator raised what pydantic does not wrap (a driver's error...)
            method = raising_function(exc, path)
            who = f"{cls.__name__}.{method}()" if method else f"a validator of {cls.__name__}"
            raise MigrationLoadError(
                path, redact(f"{who} raised {type(exc).__name__}: {exc}; fix the validator or the value")
            ) from exc
    except MigrationLoadError as error:
        _recover(error, cls, data, path)
        raise


def _recover(
    error: MigrationLoadError, cls: type[Migration], data: dict[str, Any] | None, path: Path
) -> None:
    """Attach the id, parent and creation time the file still states (YAML keys or a class's defaults)."""
    stated = dict(data or {})
    for name in ("migration_id", "parent", "created_at"):
        if name not in stated and name in cls.model_fields:
            default = cls.model_fields[name].default
            if default is not PydanticUndefined:
                stated[name] = default
    mid = stated.get("migration_id")
    error.migration_id = mid if isinstance(mid, str) else path.name.rsplit(".", 1)[0]
    error.parent = stated.get("parent", INITIAL)
    error.created_at = stated.get("created_at")


def _load_python(path: Path, context: dict[str, Any] | None) -> Migration:
    module_name = f"_metaxy_migrations.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MigrationLoadError(path, "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise MigrationLoadError(
            path, f"syntax error at line {exc.lineno}: {exc.msg}; fix the code"
        ) from None
    except ImportError as exc:
        sys.modules.pop(module_name, None)
        raise MigrationLoadError(
            path, f"import failed ({exc}); install the missing package or fix the import"
        ) from None
    except (Exception, SystemExit) as exc:  # the user's module-level code failed (or called sys.exit)
        sys.modules.pop(module_name, None)
        raise MigrationLoadError(
            path, f"raised {type(exc).__name__} while importing: {exc}; fix the module"
        ) from None
    classes = [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Migration) and obj not in _BASES and obj.__module__ == module_name
    ]
    if len(classes) != 1:
        names = ", ".join(c.__name__ for c in classes) or "none"
        raise MigrationLoadError(
            path,
            f"a migration file must define exactly one Migration subclass (found {len(classes)}: {names}); "
            "move the others to their own files or a helper module",
        )
    cls = classes[0]
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise MigrationLoadError(path, f"{cls.__name__} does not implement {missing}")
    problem = unsupported_override(cls)
    if problem:
        raise MigrationLoadError(path, problem)
    return _validate(path, cls, None, context)


def load_migrations(directory: Path, *, context: dict[str, Any] | None = None) -> list[Migration]:
    """Every migration in ``directory``.

    Raises:
        MigrationLoadErrors: one entry per bad file (all files are tried).
    """
    files, errors = discover(Path(directory))
    migrations = []
    for path in files:
        try:
            migrations.append(load_migration_file(path, context=context))
        except MigrationLoadError as exc:
            errors.append(exc)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise MigrationLoadErrors(errors)
    return migrations


class UnloadableMigration(Migration):
    """Stands in the chain for a file that failed to load but still states its id and parent (a validator
    that could not reach its database, say), so ``metaxy migrations status`` shows the whole chain with
    that one row in error rather than failing for every migration. Nothing can run it."""

    kind: ClassVar[str] = "unloadable"
    model_config = ConfigDict(extra="allow")

    load_error: str

    def execute(self, store: Any, project: str, *, dry_run: bool = False) -> Any:
        raise MetaxyError(self.load_error)


def load_chain_lenient(
    directory: Path, *, context: dict[str, Any] | None = None, allow_forks: bool = False
) -> tuple[MigrationChain, list[MigrationLoadError]]:
    """The chain with an :class:`UnloadableMigration` in place of every file that failed to load but states
    its id and parent, and the errors of all files that failed (for ``metaxy migrations status``).

    Raises:
        ChainError: the chain is broken even so (the message names the file).
    """
    files, errors = discover(Path(directory))
    migrations: list[Migration] = []
    for path in files:
        try:
            migrations.append(load_migration_file(path, context=context))
        except MigrationLoadError as exc:
            errors.append(exc)
            stand_in = _stand_in(exc, path)
            if stand_in is not None:
                migrations.append(stand_in)
    return MigrationChain(migrations, allow_forks=allow_forks), errors


def _stand_in(error: MigrationLoadError, path: Path) -> Migration | None:
    if error.migration_id is None:
        return None
    try:
        stand_in = UnloadableMigration(
            migration_id=error.migration_id,
            parent=error.parent if error.parent is not None else INITIAL,
            created_at=error.created_at or datetime.now(UTC),
            load_error=str(error),
        )
    except ValidationError:  # the id or parent itself is what is wrong: it cannot be placed in the chain
        return None
    stand_in._source_path = path
    return stand_in


def load_chain(
    directory: Path, *, context: dict[str, Any] | None = None, allow_forks: bool = False
) -> MigrationChain:
    """Load and validate the migration chain in ``directory`` (an empty/missing folder is an empty chain).

    ``allow_forks`` accepts several heads (see :class:`MigrationChain`)."""
    return MigrationChain(load_migrations(directory, context=context), allow_forks=allow_forks)
