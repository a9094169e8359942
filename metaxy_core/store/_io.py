"""Thin, error-translating wrappers around delta-rs and polars Delta I/O.

Every call that touches storage goes through :func:`guard`, which turns delta-rs / object-store / polars
exceptions into :class:`StoreError` subclasses whose messages name the table and the fix, with secrets
redacted. Catching narrowly here keeps the rest of the store free of exception plumbing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from metaxy_core.errors import MetaxyError, StoreError, StoreUnreachableError, redact
from metaxy_core.store._storage import is_remote, secret_values

_UNREACHABLE_HINTS = (
    "nosuchbucket",
    "bucket does not exist",
    "the specified bucket",
    "invalidaccesskeyid",
    "signaturedoesnotmatch",
    "access denied",
    "accessdenied",
    "forbidden",
    "403",
    "connection refused",
    "error sending request",
    "dispatch failure",
    "timed out",
    "timeout",
    "dns error",
    "connect",
    "permission denied",
    "retry",
)


_STORAGE_ERRORS = (DeltaError, OSError, pl.exceptions.PolarsError, RuntimeError, ValueError)


@contextmanager
def guard(action: str, uri: str, options: Mapping[str, str] | None) -> Iterator[None]:
    try:
        yield
    except MetaxyError:
        raise
    except Exception as exc:
        # delta-rs raises a bare ``Exception`` for errors from the Arrow C stream ("Cast error: Cannot cast
        # string 'a' to value of Int64 type" when a column's type differs from the table's); other types we
        # do not know stay unhandled.
        if not isinstance(exc, _STORAGE_ERRORS) and type(exc) is not Exception:
            raise
        message = redact(f"{type(exc).__name__}: {exc}", secret_values(options))
        lowered = message.lower()
        if is_remote(uri) and any(h in lowered for h in _UNREACHABLE_HINTS):
            bucket = uri.split("://", 1)[1].split("/", 1)[0]
            cause = (
                f"bucket {bucket!r} does not exist"
                if "nosuchbucket" in lowered
                else "the bucket is unreachable or the credentials are refused"
            )
            raise StoreUnreachableError(
                f"cannot {action} {uri}: {cause} "
                f"({_first_line(message)}). Check that the bucket exists, the endpoint (AWS_ENDPOINT_URL) is "
                "up, and the credentials (AWS_ACCESS_KEY_ID / profile / role) may access it."
            ) from None
        if isinstance(exc, PermissionError):
            raise StoreUnreachableError(
                f"cannot {action} {uri}: permission denied; check the folder's rights"
            ) from None
        raise StoreError(f"cannot {action} {uri}: {_first_line(message)}") from None


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_line(text: str, limit: int = 400) -> str:
    line = " ".join(_ANSI_ESCAPE.sub("", text).strip().split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def table_exists(uri: str, options: Mapping[str, str]) -> bool:
    with guard("open the table at", uri, options):
        if is_remote(uri):
            try:
                DeltaTable(uri, storage_options=dict(options))
                return True
            except TableNotFoundError:
                return False
        return DeltaTable.is_deltatable(uri, storage_options=dict(options))


def open_table(uri: str, options: Mapping[str, str], version: int | None = None) -> DeltaTable | None:
    with guard("open the table at", uri, options):
        try:
            return DeltaTable(uri, storage_options=dict(options), version=version)
        except TableNotFoundError:
            return None


def scan(uri: str, options: Mapping[str, str], version: int | None = None) -> pl.LazyFrame | None:
    """A lazy scan of the table, or None when no table exists yet."""
    table = open_table(uri, options, version)
    if table is None:
        return None
    with guard("read", uri, options):
        return scan_table(table, options)


def scan_table(table: DeltaTable, options: Mapping[str, str]) -> pl.LazyFrame:
    """``pl.scan_delta`` of an opened table, with the options polars' own parquet reader needs."""
    return pl.scan_delta(table, storage_options=polars_options(options))


def polars_options(options: Mapping[str, str]) -> dict[str, object] | None:
    """polars re-reads the table's options for its parquet reader and wants ``max_retries`` as an int."""
    value = options.get("max_retries")
    return {"max_retries": int(value)} if value is not None and str(value).isdigit() else None


def append(
    uri: str, frame: pl.DataFrame, options: Mapping[str, str], *, partition_by: list[str] | None = None
) -> None:
    """Atomically append one frame (one Delta commit); a new table is created by the same commit.

    delta-rs retries an append that loses a race with another append, but not one that races a commit changing
    the table's metadata or protocol: two writers creating the same table, or adding a column, at once. Such
    a commit wrote nothing to the log, so it is retried here against the table as it now is.
    """
    if frame.height == 0:
        return
    with guard("write to", uri, options):
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            try:
                write_deltalake(
                    uri,
                    frame,
                    mode="append",
                    schema_mode="merge",
                    storage_options=dict(options),
                    partition_by=partition_by,
                )
                return
            except CommitFailedError:
                if attempt == _COMMIT_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)


_COMMIT_ATTEMPTS = 5


def collect(lf: pl.LazyFrame, uri: str, options: Mapping[str, str]) -> pl.DataFrame:
    with guard("read", uri, options):
        return lf.collect()
