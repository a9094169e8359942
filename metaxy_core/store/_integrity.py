"""What the store refuses to read around or write over: damaged Delta logs and columns changing type.

**Damaged logs.** delta-rs reads a zero-length commit file as a commit without actions (the rows it added are
silently gone) and fails on a truncated one with a Rust backtrace. :func:`verify_log` checks the sizes of the
commit files a reader replays (those after the newest checkpoint) whenever a table is opened, and
:func:`damaged_log_message` finds the file behind a JSON error, so either way the error names the file and
the fix, and nothing is read from a table whose log is damaged.

**Column types.** Delta keeps one type per column and delta-rs casts appended values to it silently
(integers, floats, booleans, even lists written into a string column become strings).
:func:`check_column_types` refuses rows whose columns changed kind, naming the column, both types and the fix.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

import polars as pl

from metaxy_core.errors import MetadataSchemaError, StoreError
from metaxy_core.store._storage import is_remote, list_sizes, read_bytes

if TYPE_CHECKING:
    from deltalake import DeltaTable

#: per table URI: the highest version whose commit files were checked by this process
_VERIFIED: dict[str, int] = {}
_SCHEMAS: dict[tuple[str, int], pl.Schema] = {}
_LOCK = threading.Lock()
_LOG = "_delta_log"


def _listing(uri: str, options: Mapping[str, str]) -> dict[str, int]:
    """File name -> size of the files in the table's ``_delta_log`` folder."""
    return list_sizes(f"{uri}/{_LOG}", options)


def _commits_after_checkpoint(files: Mapping[str, int], up_to: int | None = None) -> list[int]:
    """Versions of the JSON commits a reader replays: those after the newest checkpoint (up to ``up_to``)."""
    versions = sorted(int(n[:20]) for n in files if n.endswith(".json") and n[:20].isdigit() and len(n) == 25)
    checkpoints = [int(n[:20]) for n in files if ".checkpoint" in n and n[:20].isdigit()]
    floor = max((c for c in checkpoints if up_to is None or c <= up_to), default=-1)
    return [v for v in versions if v > floor and (up_to is None or v <= up_to)]


def _damaged(uri: str, version: int, why: str) -> StoreError:
    path = f"{uri}/{_LOG}/{version:020d}.json"
    where = "the object store's version history (S3 versioning)" if is_remote(uri) else "a backup"
    return StoreError(
        f"the Delta log of {uri} is damaged: commit file {path} {why}, so the table cannot be read "
        f"without silently losing that commit's rows. Restore that file from {where} and run the command "
        "again; if it cannot be restored and it is the newest commit, move it aside (the table then reads as "
        "of the commit before it, without that commit's rows)"
    )


def verify_log(uri: str, options: Mapping[str, str], table: DeltaTable) -> None:
    """Refuse a table whose replayed commit files include an empty one.

    A local log is listed at every open (a directory listing); an object store's once per table version and
    process (a LIST request), the files it already checked being immutable there.

    Raises:
        StoreError: naming the empty commit file and the fix.
    """
    version = table.version()
    with _LOCK:
        done = _VERIFIED.get(uri, -1) if is_remote(uri) else -1
    if version <= done:
        return
    files = _listing(uri, options)
    for v in _commits_after_checkpoint(files, version):
        if v > done and files.get(f"{v:020d}.json") == 0:
            raise _damaged(uri, v, "is empty (0 bytes)")
    with _LOCK:
        if len(_VERIFIED) > 4096:
            _VERIFIED.clear()
        _VERIFIED[uri] = max(version, _VERIFIED.get(uri, -1))


def damaged_log_message(uri: str, options: Mapping[str, str]) -> StoreError | None:
    """After delta-rs failed to parse the log: the commit file that is empty or not valid JSON, if any."""
    try:
        files = _listing(uri, options)
        for v in _commits_after_checkpoint(files):
            name = f"{v:020d}.json"
            if files.get(name) == 0:
                return _damaged(uri, v, "is empty (0 bytes)")
            text = _read(uri, options, f"{_LOG}/{name}")
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        json.loads(line)
                    except ValueError:
                        return _damaged(uri, v, f"is truncated or not valid JSON (line {number})")
    except (OSError, ValueError, RuntimeError):  # the diagnosis itself failed: report the original error
        return None
    return None


def _read(uri: str, options: Mapping[str, str], path: str) -> str:
    return read_bytes(f"{uri}/{path}", options).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------- types
def stored_schema(uri: str, table: DeltaTable) -> pl.Schema:
    """The table's schema as polars types (kept per table version)."""
    key = (uri, table.version())
    with _LOCK:
        cached = _SCHEMAS.get(key)
    if cached is not None:
        return cached
    schema = pl.Schema(pl.scan_delta(table).collect_schema())  # metadata only (pyarrow would import pandas)
    with _LOCK:
        if len(_SCHEMAS) > 256:
            _SCHEMAS.clear()
        _SCHEMAS[key] = schema
    return schema


def _kind(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float"
    if dtype.is_decimal():
        return "decimal"
    if isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
        return "string"
    if isinstance(dtype, pl.List | pl.Array):
        return "list"
    return type(dtype).__name__.lower()  # boolean, binary, date, datetime, time, duration, struct, null...


def _conflict(stored: pl.DataType, given: pl.DataType) -> bool:
    """Whether values of type ``given`` would be changed (or refused) by a column of type ``stored``."""
    if isinstance(given, pl.Null) or isinstance(stored, pl.Null):
        return False
    kinds = _kind(stored), _kind(given)
    if kinds == ("float", "integer") or kinds == ("decimal", "integer"):
        return False  # widening: the values are kept
    if kinds[0] != kinds[1]:
        return True
    if isinstance(stored, pl.List | pl.Array) and isinstance(given, pl.List | pl.Array):
        return _conflict(stored.inner, given.inner)
    if isinstance(stored, pl.Struct) and isinstance(given, pl.Struct):
        fields = {f.name: f.dtype for f in stored.fields}
        return any(f.name in fields and _conflict(fields[f.name], f.dtype) for f in given.fields)
    return False


def check_column_types(uri: str, table: DeltaTable, schema: Mapping[str, pl.DataType], what: str) -> None:
    """Refuse rows whose columns changed kind since the table was written.

    Raises:
        MetadataSchemaError: naming the first such column, its stored and given types, and the fix.
    """
    stored = stored_schema(uri, table)
    for name, given in schema.items():
        have = stored.get(name)
        if have is not None and _conflict(have, given):
            raise MetadataSchemaError(
                f"{what}: column {name!r} is {have} in the table but {given} in the rows written; a Delta "
                "column keeps the type it was first written with (the values would be silently converted). "
                f"Cast it back before writing (pl.col({name!r}).cast({_polars_name(have)})), or write the "
                "new values under a new column name"
            )


def _polars_name(dtype: pl.DataType) -> str:
    text = repr(dtype)
    return text if text.startswith("pl.") else f"pl.{text}"


def typed_nulls(uri: str, table: DeltaTable, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with all-null columns (polars type ``Null``) cast to the table's type of that column (delta-rs
    cannot write a ``Null`` column into a typed one)."""
    stored = stored_schema(uri, table)
    casts = {
        name: stored[name]
        for name, dtype in rows.schema.items()
        if isinstance(dtype, pl.Null) and name in stored and not isinstance(stored[name], pl.Null)
    }
    return rows.cast(casts) if casts else rows  # type: ignore[arg-type]
