"""Thin, error-translating wrappers around delta-rs and polars Delta I/O.

Every call that touches storage goes through :func:`guard`, which turns delta-rs / object-store / polars
exceptions into :class:`StoreError` subclasses whose messages name the table and the fix, with secrets
redacted. Catching narrowly here keeps the rest of the store free of exception plumbing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import polars as pl
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from metaxy_core.errors import MetaxyError, StoreError, StoreUnreachableError
from metaxy_core.store._storage import is_remote, redact, secret_values

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


@contextmanager
def guard(action: str, uri: str, options: Mapping[str, str] | None) -> Iterator[None]:
    try:
        yield
    except MetaxyError:
        raise
    except (DeltaError, OSError, pl.exceptions.PolarsError, RuntimeError, ValueError) as exc:
        message = redact(f"{type(exc).__name__}: {exc}", secret_values(options))
        lowered = message.lower()
        if is_remote(uri) and any(h in lowered for h in _UNREACHABLE_HINTS):
            raise StoreUnreachableError(
                f"cannot {action} {uri}: the bucket is unreachable or the credentials are refused "
                f"({_first_line(message)}). Check that the bucket exists, the endpoint (AWS_ENDPOINT_URL) is "
                "up, and the credentials (AWS_ACCESS_KEY_ID / profile / role) may access it."
            ) from None
        if isinstance(exc, PermissionError):
            raise StoreUnreachableError(f"cannot {action} {uri}: permission denied; check the folder's rights") from None
        raise StoreError(f"cannot {action} {uri}: {_first_line(message)}") from None


def _first_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.strip().split())
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
        return pl.scan_delta(table)


def append(uri: str, frame: pl.DataFrame, options: Mapping[str, str], *, partition_by: list[str] | None = None) -> None:
    """Atomically append one frame (one Delta commit); a new table is created by the same commit."""
    if frame.height == 0:
        return
    with guard("write to", uri, options):
        write_deltalake(
            uri,
            frame,
            mode="append",
            schema_mode="merge",
            storage_options=dict(options),
            partition_by=partition_by,
        )


def collect(lf: pl.LazyFrame, uri: str, options: Mapping[str, str]) -> pl.DataFrame:
    with guard("read", uri, options):
        return lf.collect()
