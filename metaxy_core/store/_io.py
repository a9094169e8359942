"""Thin, error-translating wrappers around delta-rs and polars Delta I/O.

Every call that touches storage goes through :func:`guard`, which turns delta-rs / object-store / polars
exceptions into :class:`StoreError` subclasses whose messages name the table and the fix, with secrets
redacted. Catching narrowly here keeps the rest of the store free of exception plumbing.
"""

from __future__ import annotations

import copy
import random
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from urllib.parse import unquote

import polars as pl
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import Transaction

from metaxy_core.errors import MetaxyError, StoreError, StoreUnreachableError, redact
from metaxy_core.store._integrity import check_column_types, damaged_log_message, typed_nulls, verify_log
from metaxy_core.store._panics import quiet_panics
from metaxy_core.store._storage import (
    DEFAULT_TIMEOUT,
    StalledEndpointError,
    chain_credentials,
    endpoint_of,
    is_remote,
    is_s3_options,
    log_tail,
    note_stall,
    parse_duration,
    secret_values,
    stalled_since,
    timeout_seconds,
)
from metaxy_core.store.order import written
from metaxy_core.store.provenance import COMMIT_ORDER
from metaxy_core.store.scope import Fence, current_fence

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
    remote = is_remote(uri)
    ago = stalled_since(options) if remote and options else None
    if ago is not None:  # the endpoint timed out moments ago (see _storage.note_stall): fail now
        raise StoreUnreachableError(
            f"cannot {action} {uri}: the S3 endpoint {endpoint_of(options or {})} timed out {ago:.1f} s ago "
            f"(store timeout {(options or {}).get('timeout', DEFAULT_TIMEOUT)}); not called again yet"
        )
    try:
        with quiet_panics() if remote else nullcontext():
            yield
    except MetaxyError:
        raise
    except BaseException as exc:
        # delta-rs raises a bare ``Exception`` for errors from the Arrow C stream ("Cast error: Cannot cast
        # string 'a' to value of Int64 type" when a column's type differs from the table's); a Rust panic in
        # delta-rs/object_store arrives as pyo3's ``PanicException`` (a ``BaseException``); other types we do
        # not know stay unhandled.
        panic = type(exc).__name__ == "PanicException"
        if not panic and (
            not isinstance(exc, Exception)
            or (not isinstance(exc, _STORAGE_ERRORS) and type(exc) is not Exception)
        ):
            raise
        message = redact(f"{type(exc).__name__}: {exc}", secret_values(options))
        lowered = message.lower()
        if any(h in lowered for h in _DAMAGED_LOG_HINTS):  # name the damaged commit file, not the parser
            damaged = damaged_log_message(uri, options or {})
            if damaged is not None:
                raise damaged from None
        if remote and any(h in lowered for h in _TIMEOUT_HINTS):
            if not isinstance(exc, StalledEndpointError):  # a refusal of the breaker does not extend it
                note_stall(options or {})
            raise StoreUnreachableError(stalled_message(action, uri, options or {})) from None
        if panic:
            raise StoreError(
                f"cannot {action} {uri}: the storage client failed internally ({_first_line(message)}); "
                "nothing was committed by this call: re-run the command"
            ) from None
        if remote and any(h in lowered for h in _UNREACHABLE_HINTS):
            raise StoreUnreachableError(unreachable_message(action, uri, options or {}, message)) from None
        if isinstance(exc, PermissionError):
            raise StoreUnreachableError(
                f"cannot {action} {uri}: permission denied; check the folder's rights"
            ) from None
        raise StoreError(f"cannot {action} {uri}: {_first_line(message)}") from None


#: a request got no answer in time (reqwest/object_store, botocore); not "timeout" alone: polars prints its
#: ``retry_timeout`` setting in every error
_TIMEOUT_HINTS = (
    "timed out",
    "read timeout on endpoint",
    "connect timeout on endpoint",
    "deadline has elapsed",
)


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (from delta-rs, polars or boto3) is a request that got no answer in time; if so the
    endpoint's circuit breaker is not set here (:func:`guard` does), callers just skip best-effort calls."""
    text = str(exc).lower()
    return any(h in text for h in _TIMEOUT_HINTS)


def collected_error(exc: BaseException, root: str, options: Mapping[str, str]) -> StoreError | None:
    """``exc`` as the store's one-line error when it is a failed request to the S3 store at ``root`` made
    outside the store's guarded calls (a lazy frame an operation collected itself); else None.

    A timeout reads as :func:`guard`'s stall error (and sets the endpoint's circuit breaker). Any other S3
    failure (a refused key, a bucket gone, the server down) names the table the request was for (from the
    URL in the client's message; the store's root when none is there), the endpoint, what to check and that
    a re-run resumes; the client's own text is cut to its first line and stripped of secrets.
    """
    if not is_remote(root) or isinstance(exc, MetaxyError):
        return None
    panic = type(exc).__name__ == "PanicException"
    if not panic and not isinstance(exc, (*_STORAGE_ERRORS, TimeoutError)):
        return None
    message = redact(f"{type(exc).__name__}: {exc}", secret_values(options))
    lowered = message.lower()
    uri = _table_in(message, root)
    if timed_out(exc):
        if not isinstance(exc, StalledEndpointError):
            note_stall(options)
        return StoreUnreachableError(stalled_message("read from", uri, options))
    bucket = root.split("://", 1)[1].split("/", 1)[0]
    if not panic and "s3 error" not in lowered and "object-store" not in lowered and bucket not in message:
        return None  # not a request to this store: the operation's own error
    if any(h in lowered for h in _UNREACHABLE_HINTS):
        return StoreUnreachableError(unreachable_message("read from", uri, options, message, rerun=True))
    return StoreError(
        f"cannot read from {uri} at the S3 endpoint {endpoint_of(options)}: {_first_line(message)}. Check "
        "the endpoint (AWS_ENDPOINT_URL), the bucket and the credentials; then re-run: the step resumes"
    )


def unreachable_message(
    action: str, uri: str, options: Mapping[str, str], message: str, *, rerun: bool = False
) -> str:
    """One line for an S3 request that was refused or never reached the server (``message``: the client's
    error, already redacted): the table, the cause, the endpoint, what to check."""
    lowered = message.lower()
    bucket = uri.split("://", 1)[1].split("/", 1)[0]
    cause = (
        f"bucket {bucket!r} does not exist"
        if "nosuchbucket" in lowered
        else "the bucket is unreachable or the credentials are refused"
    )
    return (
        f"cannot {action} {uri}: {cause} at the S3 endpoint {endpoint_of(options)} ({_first_line(message)}). "
        "Check that the bucket exists, the endpoint (AWS_ENDPOINT_URL) is up, and the credentials "
        "(AWS_ACCESS_KEY_ID / profile / role) may access it"
        + ("; then re-run: the step resumes" if rerun else "")
    )


def _table_in(message: str, root: str) -> str:
    """The store table (``<root>/<table>`` or a system one) a client's message names a file of, else root."""
    bucket_and_prefix = root.split("://", 1)[1].rstrip("/")
    match = re.search(re.escape(bucket_and_prefix) + r"/((?:_metaxy_system/)?[A-Za-z0-9_.=-]+)/", message)
    return f"{root.rstrip('/')}/{match.group(1)}" if match else root


def stalled_message(action: str, uri: str, options: Mapping[str, str]) -> str:
    """One message for a store call that got no answer in time: the endpoint, the setting, the way on."""
    timeout = options.get("timeout", DEFAULT_TIMEOUT)
    return (
        f"cannot {action} {uri}: the S3 endpoint {endpoint_of(options)} timed out (no answer within the "
        f"store's timeout, {timeout}): it is unreachable or stalled. Check that it is up (AWS_ENDPOINT_URL, "
        "network, proxy); if it is only slow, raise the `timeout` storage option "
        '(METAXY_STORE_STORAGE_OPTIONS=\'{"timeout": "60s"}\', or timeout = "60s" under '
        "[store.storage_options]). Then re-run: the step resumes and removes the files the stalled write left"
    )


_DAMAGED_LOG_HINTS = ("json error", "truncated record", "invalid json", "eof while parsing")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: where a Rust backtrace starts in a delta-rs message (frames ``0: <unknown>`` ...): never shown
_BACKTRACE = re.compile(r"\n\s*(?:stack backtrace:|0: )", re.IGNORECASE)


def _first_line(text: str, limit: int = 400) -> str:
    text = _BACKTRACE.split(text, maxsplit=1)[0]
    line = " ".join(_ANSI_ESCAPE.sub("", text).strip().split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def table_exists(uri: str, options: Mapping[str, str]) -> bool:
    if is_remote(uri):  # an open (usually the reader cache's: one listing request) is what answers there
        return open_table(uri, options) is not None
    with guard("open the table at", uri, options):
        return DeltaTable.is_deltatable(uri, storage_options=delta_options(options))


def open_table(
    uri: str, options: Mapping[str, str], version: int | None = None, *, for_commit: bool = False
) -> DeltaTable | None:
    """The table at ``uri`` (at ``version``, default the latest), or None when there is none.

    **Reads share one open per version.** Without ``version`` the table this process last opened is returned
    again while its version is still the latest (its commit file unchanged and no later one: one listing on
    S3, two ``stat`` calls locally, :func:`~metaxy_core.store._storage.log_tail`). An apply reads a table in
    several places (rows, layouts, commit facts, the scan), each open ~20-200 ms on S3: now one. The object
    is shared: callers only read it (``pl.scan_delta`` pins its version). The key holds the credentials
    resolved now (a rotated key opens the table again); on S3 a table found absent is looked for again by
    one listing of its log before delta-rs tries.

    ``for_commit``: a table of the caller's own, never shared (a commit moves a table object to the version
    it made); one handed back after its commit (:func:`keep_for_commit`) is brought up to date instead.

    Raises:
        StoreError: the table cannot be opened, or its log is damaged (the error names the commit file).
    """
    with guard("open the table at", uri, options):
        resolved = delta_options(options)
        shared = version is None and not for_commit
        key = _key(uri, resolved)
        if for_commit and version is None:
            with _OPENED_LOCK:
                kept = _FOR_COMMIT.pop(key, None)
            if kept is not None:
                try:
                    kept.update_incremental()
                    verify_log(uri, options, kept)
                    return kept
                except _STORAGE_ERRORS:  # opened again below: that open reports what is wrong
                    pass
        if shared:
            table = _still_latest(key, uri, options)
            if table is not None:
                return table
            if key in _ABSENT and not log_tail(f"{uri}/_delta_log", -1, options)[1]:
                return None  # still no commit file (one listing): not created since this process looked
        try:
            table = DeltaTable(uri, storage_options=resolved, version=version)
        except TableNotFoundError:
            if shared and is_remote(uri):
                with _OPENED_LOCK:
                    _ABSENT.add(key)
            return None
        verify_log(uri, options, table)
        if shared:
            with _OPENED_LOCK:
                _ABSENT.discard(key)
            tag = log_tail(f"{uri}/_delta_log", table.version(), options)[0]
            if tag is not None:
                with _OPENED_LOCK:
                    if len(_OPENED) > 64:
                        _OPENED.clear()
                        _ABSENT.clear()
                    _OPENED[key] = (table, tag)
        return table


_Key = tuple[str, tuple[tuple[str, str], ...]]  # (uri, resolved options): see :func:`open_table`


def _key(uri: str, resolved: Mapping[str, str]) -> _Key:
    return (uri, tuple(sorted(resolved.items())))


#: tables opened for reading at their latest version: (table, a tag of the commit file of its version)
_OPENED: dict[_Key, tuple[DeltaTable, str]] = {}
_FOR_COMMIT: dict[_Key, DeltaTable] = {}  # tables handed back after a commit (:func:`keep_for_commit`)
_ABSENT: set[_Key] = set()  # S3 tables found absent: the next open lists their log before delta-rs tries
_OPENED_LOCK = threading.Lock()


def keep_for_commit(uri: str, options: Mapping[str, str], table: DeltaTable) -> None:
    """Hand back ``table`` (``open_table(..., for_commit=True)``, just committed to) for this process's next
    commit to ``uri``, which updates it instead of opening the table again (0.3-0.5 s); the caller stops
    using it."""
    key = _key(uri, delta_options(options))
    with _OPENED_LOCK:
        if len(_FOR_COMMIT) > 64:
            _FOR_COMMIT.clear()
        _FOR_COMMIT[key] = table


def _still_latest(key: _Key, uri: str, options: Mapping[str, str]) -> DeltaTable | None:
    """The table of ``key`` this process opened, if its version is still the table's latest."""
    with _OPENED_LOCK:
        entry = _OPENED.get(key)
    if entry is None:
        return None
    table, tag = entry
    if log_tail(f"{uri}/_delta_log", table.version(), options) == (tag, False):
        return table
    with _OPENED_LOCK:
        if _OPENED.get(key) is entry:
            del _OPENED[key]
    return None


def scan_table(table: DeltaTable, options: Mapping[str, str]) -> pl.LazyFrame:
    """``pl.scan_delta`` of an opened table, with the options polars' own parquet reader needs.

    A local table under a folder whose name needs escaping in a URL (a space, ``#``, ``%``...): delta-rs
    gives its data files as percent-encoded ``file://`` URIs, which polars opens without decoding them, so
    every read failed with "No such file or directory". polars gets a copy of the table object whose
    ``file_uris`` are decoded (the shared object is left as it is).
    """
    if "%" in table.table_uri and not is_remote(table.table_uri):
        table = _decoded_file_uris(table)
    return pl.scan_delta(table, storage_options=polars_options(options))


def _decoded_file_uris(table: DeltaTable) -> DeltaTable:
    """A shallow copy of ``table`` (same delta-rs state) whose ``file_uris()`` are percent-decoded."""
    decoded = copy.copy(table)
    encoded = table.file_uris

    def file_uris(*args: object, **kwargs: object) -> list[str]:
        return [unquote(uri) for uri in encoded(*args, **kwargs)]  # type: ignore[arg-type]

    decoded.file_uris = file_uris  # type: ignore[method-assign]
    return decoded


def delta_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options delta-rs gets for one call: the store's, plus the AWS chain's credentials as of now when
    none are given explicitly (delta-rs' own resolution knows no profiles unless forced, and a table opened
    now keeps its credentials for its lifetime, so they are looked up at every open)."""
    creds = chain_credentials(options) if is_s3_options(options) else {}
    return {**options, **{k.upper(): v for k, v in creds.items()}}


def polars_options(options: Mapping[str, str]) -> dict[str, object] | None:
    """Options for polars' own object-store client (its Parquet reader), merged over the table's options.

    polars re-reads the table's options but has no request timeout by default, so a stalled S3 endpoint
    hangs a read forever: it gets the store's ``timeout`` and ``connect_timeout``, and its own retry budget
    (``retry_timeout_ms``, an int, like ``max_retries``) set to the same timeout. Credentials from the AWS
    chain are added as of this call (:func:`~metaxy_core.store._storage.chain_credentials`): polars cannot
    read profiles itself, and resolving them here keeps a rotated token working for the next read.
    """
    out: dict[str, object] = {}
    value = options.get("max_retries")
    if value is not None and str(value).isdigit():
        out["max_retries"] = int(value)
    if is_s3_options(options):
        out["timeout"] = options.get("timeout", DEFAULT_TIMEOUT)
        if "connect_timeout" in options:
            out["connect_timeout"] = options["connect_timeout"]
        retry = parse_duration(options.get("retry_timeout", "")) or timeout_seconds(options)
        out["retry_timeout_ms"] = max(int(retry * 1000), 1)
        out.update({k.upper(): v for k, v in chain_credentials(options).items()})
    return out or None


def append(
    uri: str,
    frame: pl.DataFrame,
    options: Mapping[str, str],
    *,
    partition_by: list[str] | None = None,
    derived: bool = False,
    fence: Fence | None = None,
    what: str | None = None,
    custom_metadata: Mapping[str, str] | None = None,
    keep_open: bool = False,
) -> int | None:
    """Atomically append one frame (one Delta commit), stamping its commit order; returns the version.

    Plain rows are stamped ``2·V`` with the version ``V`` their commit lands at (see
    :mod:`metaxy_core.store.order`): the table is opened at ``V-1`` and the commit made with
    ``max_commit_retries=0``, so it lands at exactly ``V`` or is refused; a refused commit wrote nothing and
    is stamped again against the table as it now is (bounded attempts, jittered backoff). A new table is
    created by the same commit (version 0, refused if another writer created it first). ``derived`` rows
    already carry their order (``2·R+1``): they may land at any version. ``fence`` (default: the lease
    held in this context, if any) is checked before each attempt and carried by the commit. The version
    returned is None for derived rows (delta-rs may retry them past other commits). ``what`` names the
    target in errors (default: the URI). ``custom_metadata`` goes into the commit's ``commitInfo`` (facts
    about the rows that readers may rely on, see :func:`metaxy_core.store.layout.default_data_versions`).
    ``keep_open``: keep the table as this commit leaves it, and start the next ``keep_open`` append to the
    same table from it when nothing was committed since (one listing request instead of opening the table:
    for a table one process appends to often, the migration log).

    Raises:
        MetadataSchemaError: a column's type differs from the table's (see :mod:`._integrity`).
    """
    if frame.height == 0:
        return None
    fence = fence if fence is not None else current_fence()
    if fence is not None and not fence.guards(uri):  # a lease on another store says nothing about this one
        fence = None
    with guard("write to", uri, options):
        for attempt in range(1, _COMMIT_ATTEMPTS + 1):
            table = _kept_table(uri, options) if keep_open and attempt == 1 else None
            table = table if table is not None else _open_for_commit(uri, options)
            if attempt == 1:
                clean_leftovers(uri, options, table, frame, fence)
            version = 0 if table is None else table.version() + 1
            rows = (
                frame
                if derived
                else frame.with_columns(pl.lit(written(version), pl.Int64).alias(COMMIT_ORDER))
            )
            try:
                commit_at(
                    uri,
                    table,
                    rows,
                    options,
                    fence=fence,
                    partition_by=partition_by,
                    exact=not derived,
                    what=what,
                    custom_metadata=custom_metadata,
                )
                if keep_open and table is not None and table.version() == version:
                    with _KEPT_LOCK:
                        _KEPT[(uri, tuple(sorted(options.items())))] = table
                return None if derived else version
            except CommitConflict:
                if attempt == _COMMIT_ATTEMPTS:
                    raise StoreError(
                        f"cannot write to {uri}: {_COMMIT_ATTEMPTS} commits in a row lost the race with "
                        "other writers; retry when the table is less busy"
                    ) from None
                _backoff(attempt)
    raise AssertionError("unreachable")


def clean_leftovers(
    uri: str, options: Mapping[str, str], table: DeltaTable | None, rows: pl.DataFrame, fence: Fence | None
) -> None:
    """Before a step's first commit to ``uri``: remove the files an earlier, failed attempt of the same step
    uploaded there without committing them (see :mod:`metaxy_core.store.orphans`; once per step, table and
    lease in a process)."""
    from metaxy_core.store import orphans

    with guard("clean up uncommitted files of", uri, options):
        orphans.clean_before_write(uri, options, table, rows, fence if fence is not None else current_fence())


#: rows per Parquet row group of the files :func:`commit_at` writes locally: a reader of an id range (a bucket
#: of ``resolve_update``, see :func:`metaxy_core.store.layout.row_group_layout`) skips the others by their
#: statistics; the writer buffers one group (1M-row write 0.9 -> 0.66 GiB peak) at the same CPU. Codec LZ4
#: (against snappy: hash strings written 30 % faster, read ~2x faster, ~10 % more bytes). On S3 delta-rs'
#: defaults (snappy, groups of up to ~1M rows): bytes matter, each row group is requests for a reader (a 1M
#: apply on moto: 3.7 s with 131k-row groups, 2.6 s without) and buckets there are cut between files anyway.
ROW_GROUP_ROWS = 131_072


class CommitConflict(Exception):
    """A commit was refused because another one landed first (nothing was written); re-read and retry."""


def commit_at(
    uri: str,
    table: DeltaTable | None,
    rows: pl.DataFrame,
    options: Mapping[str, str],
    *,
    fence: Fence | None = None,
    partition_by: list[str] | None = None,
    exact: bool = True,
    what: str | None = None,
    custom_metadata: Mapping[str, str] | None = None,
) -> None:
    """Commit ``rows`` to the table as it was opened (``table``; None: create it), in one attempt.

    ``exact``: the commit lands at ``table.version() + 1`` (version 0 for a new table) or raises
    :class:`CommitConflict` (the compare-and-swap of the store's ordering and the migration lock); else
    delta-rs retries an append that raced others. Call inside :func:`guard`.
    """
    if table is not None:
        check_column_types(uri, table, rows.schema, what or f"cannot write to {uri}")
        rows = typed_nulls(uri, table, rows)
    transactions = _fenced_transactions(fence, table)
    properties = CommitProperties(
        max_commit_retries=0 if exact else None,
        app_transactions=transactions or None,
        custom_metadata=dict(custom_metadata) if custom_metadata else None,
    )
    remote = is_remote(uri)
    writer = WriterProperties(
        compression="SNAPPY" if remote else "LZ4_RAW", max_row_group_size=None if remote else ROW_GROUP_ROWS
    )
    try:
        if table is None:
            write_deltalake(
                uri,
                rows,
                mode="error",
                storage_options=delta_options(options),
                partition_by=partition_by,
                commit_properties=properties,
                writer_properties=writer,
            )
        else:
            write_deltalake(
                table,
                rows,
                mode="append",
                schema_mode="merge",
                partition_by=partition_by,
                commit_properties=properties,
                writer_properties=writer,
            )
    except CommitFailedError as exc:
        raise CommitConflict(str(exc)) from None
    except DeltaError as exc:
        if table is None and "already exists" in str(exc):
            raise CommitConflict(str(exc)) from None  # another writer created the table first
        raise


def _fenced_transactions(fence: Fence | None, table: DeltaTable | None) -> list[Transaction]:
    """Check ``fence`` against the table's log and return the app transaction the commit must carry."""
    if fence is None:
        return []
    fence.check(None if table is None else table.transaction_version(fence.app_id))
    return [Transaction(app_id=fence.app_id, version=fence.token)]


def fenced_properties(
    fence: Fence | None, table: DeltaTable, custom_metadata: Mapping[str, str] | None = None
) -> CommitProperties | None:
    """Commit properties carrying ``fence`` (and ``custom_metadata``, see :func:`append`) for a writer that
    commits ``table`` itself (the bulk writer)."""
    transactions = _fenced_transactions(fence, table)
    if not transactions and not custom_metadata:
        return None
    return CommitProperties(
        app_transactions=transactions or None,
        custom_metadata=dict(custom_metadata) if custom_metadata else None,
    )


#: tables as this process's last ``keep_open`` append left them: (uri, options) -> table (see :func:`append`)
_KEPT: dict[tuple[str, tuple[tuple[str, str], ...]], DeltaTable] = {}
_KEPT_LOCK = threading.Lock()


def _kept_table(uri: str, options: Mapping[str, str]) -> DeltaTable | None:
    """The table as this process's last append left it, when its version is still the latest (its commit file
    is there and no later one: :func:`~metaxy_core.store._storage.log_tail`); taken out, so one thread at a
    time commits with it (delta-rs table objects are not shared between threads)."""
    with _KEPT_LOCK:
        table = _KEPT.pop((uri, tuple(sorted(options.items()))), None)
    if table is None:
        return None
    tag, later = log_tail(f"{uri}/_delta_log", table.version(), options)
    return table if tag is not None and not later else None


def _open_for_commit(uri: str, options: Mapping[str, str]) -> DeltaTable | None:
    try:
        table = DeltaTable(uri, storage_options=delta_options(options))
    except TableNotFoundError:
        return None
    verify_log(uri, options, table)
    return table


def _backoff(attempt: int) -> None:
    """Sleep before commit attempt ``attempt + 1``: jittered, growing, at most half a second."""
    time.sleep(random.uniform(0.0, min(0.5, 0.01 * 2**attempt)))


#: commit attempts before giving up under contention (each losing attempt wrote nothing)
_COMMIT_ATTEMPTS = 40


def collect(lf: pl.LazyFrame, uri: str, options: Mapping[str, str]) -> pl.DataFrame:
    with guard("read", uri, options):
        return lf.collect()
