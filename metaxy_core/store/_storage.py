"""Storage options for Delta Lake: local paths, ``s3://`` URIs, credentials, timeouts, and which are secret.

**Credentials** for S3 are resolved where they are used, never frozen into the options: delta-rs resolves the
standard AWS chain itself (environment, ``AWS_PROFILE`` and the shared files, web identity/IRSA, container and
instance roles) for every table it opens, and the two other S3 clients of the store (polars' Parquet reader,
boto3 for log listings) get the chain's current credentials at each call (:func:`chain_credentials`). A token
that rotates during a long step is therefore picked up by the next store call. Keys given explicitly in the
storage options always win and are used as given. Secret values never leave the store unredacted: every error
message built from a delta-rs/boto3 exception passes through :func:`metaxy_core.errors.redact` with
:func:`secret_values`.

**Timeouts**: one storage option, ``timeout`` (default :data:`DEFAULT_TIMEOUT`), bounds how long any store
request to S3 may go without an answer; it is handed to delta-rs, to polars' reader and to boto3
(:func:`timeout_seconds`), so a stalled endpoint fails a store call in about that time instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metaxy_core.errors import ConfigError, redact

_REMOTE_SCHEMES = ("s3://", "s3a://")
_SECRET_HINTS = ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY", "CREDENTIAL", "SESSION")


def is_remote(uri: str) -> bool:
    """Whether ``uri`` is an object-store location (S3) rather than a local path."""
    return uri.startswith(_REMOTE_SCHEMES)


def normalize_root(root: str | Path) -> str:
    """Absolute local path, or an ``s3://bucket/prefix`` without trailing slash."""
    text = str(root)
    if is_remote(text):
        bucket_and_prefix = text.split("://", 1)[1].strip("/")
        if not bucket_and_prefix:
            raise ConfigError(f"store root {text!r} names no bucket; write it as s3://bucket/prefix")
        return "s3://" + bucket_and_prefix
    if "://" in text and not text.startswith("file://"):
        raise ConfigError(
            f"store root {text!r} uses an unsupported scheme; use a local folder or s3://bucket/prefix"
        )
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


# Bounded requests for S3. object_store retries a failing request for up to 180 s by default and polars'
# Parquet reader has no request timeout at all, so a server that stops answering (frozen, a black-holed route,
# a stuck proxy) would hang a command for minutes, or forever while reading. ``timeout`` bounds one request
# (connect + answer + body); ``retry_timeout`` (default: the same, at most 15 s) stops retrying once that long
# has passed, so one stalled request fails the call in about ``timeout``. Keys are case-sensitive in
# delta-rs, so they stay lower case; explicit options win. ``max_retries`` is not defaulted: polars re-reads
# a DeltaTable's options for its Parquet reader and rejects it as a string (:func:`._io.polars_options`).
DEFAULT_TIMEOUT = "30s"
#: upper bounds of the TCP connect timeout and of the time spent retrying failed requests (refused
#: connections, 5xx answers); the request ``timeout`` if that is shorter
CONNECT_TIMEOUT_S = 5.0
RETRY_TIMEOUT_S = 15.0
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|secs|sec|s|mins|min|m|h)?\s*", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "sec": 1.0, "secs": 1.0, "m": 60.0, "min": 60.0, "mins": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a duration such as ``30s``, ``500ms``, ``1m 30s`` or ``45`` (seconds); None if not one."""
    total, pos, text = 0.0, 0, str(text)
    while pos < len(text):
        match = _DURATION.match(text, pos)
        if match is None or match.end() == pos:
            return None
        total += float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]
        pos = match.end()
    return total if text.strip() else None


def timeout_seconds(options: Mapping[str, str]) -> float:
    """The store's request timeout in seconds (the ``timeout`` option, default :data:`DEFAULT_TIMEOUT`)."""
    return parse_duration(options.get("timeout", DEFAULT_TIMEOUT)) or 30.0


def _s3_timeouts(given: Mapping[str, str]) -> dict[str, str]:
    """``timeout``, ``retry_timeout`` and ``connect_timeout`` for delta-rs, checked and completed."""
    for key in ("timeout", "retry_timeout", "connect_timeout"):
        if key in given and not parse_duration(given[key]):
            raise ConfigError(
                f"storage option {key}={given[key]!r} is not a positive duration; write it like "
                f"'30s', '500ms' or '2m'"
            )
    timeout = given.get("timeout", DEFAULT_TIMEOUT)
    seconds = parse_duration(timeout) or 30.0
    return {
        "timeout": timeout,
        "retry_timeout": given.get("retry_timeout", f"{min(seconds, RETRY_TIMEOUT_S):g}s"),
        "connect_timeout": given.get("connect_timeout", f"{min(seconds, CONNECT_TIMEOUT_S):g}s"),
    }


# A circuit breaker per endpoint: once a request to it timed out, every store call to it fails at once for
# the next `timeout` seconds instead of waiting a full timeout again. Without it, a stalled step waits once
# for the request that stalled and once more for each clean-up call that follows (removing its uploaded
# files, releasing the lease), which made a stall take two or three timeouts to fail.
_STALLS: dict[str, float] = {}
_STALLS_LOCK = threading.Lock()


class StalledEndpointError(OSError):
    """A call refused by the circuit breaker (the endpoint timed out moments ago); not a new stall."""


def note_stall(options: Mapping[str, str]) -> None:
    """Record that a request to the options' endpoint just timed out."""
    with _STALLS_LOCK:
        _STALLS[endpoint_of(options)] = time.monotonic()


def stalled_since(options: Mapping[str, str]) -> float | None:
    """Seconds since a request to the options' endpoint timed out, if that was less than `timeout` ago."""
    with _STALLS_LOCK:
        at = _STALLS.get(endpoint_of(options))
    if at is None:
        return None
    ago = time.monotonic() - at
    return ago if ago < timeout_seconds(options) else None


def is_s3_options(options: Mapping[str, str]) -> bool:
    """Whether ``options`` were resolved for an S3 root (they always carry a region and a timeout then)."""
    return "timeout" in options and "AWS_REGION" in options


def endpoint_of(options: Mapping[str, str]) -> str:
    """The S3 endpoint the store talks to (for messages): the configured one or AWS's regional one."""
    return (
        options.get("AWS_ENDPOINT_URL")
        or f"https://s3.{options.get('AWS_REGION', 'us-east-1')}.amazonaws.com"
    )


def _normalize_key(key: object) -> str:
    """AWS keys are matched in upper case; others (``max_retries``, ``timeout``...) are case-sensitive."""
    text = str(key)
    return text.upper() if text.upper().startswith("AWS_") else text


def resolve_storage_options(root: str, explicit: Mapping[str, str] | None) -> dict[str, str]:
    """Options delta-rs needs for ``root``: the explicit ones, completed for S3 with the region, the endpoint
    and the timeouts. Credentials are not resolved here (see the module docstring): an explicit profile is
    checked and kept as ``AWS_PROFILE``; the chain is resolved by each client when it is used.

    Raises:
        ConfigError: an unknown or broken AWS profile, or a timeout option that is not a duration.
    """
    given = {_normalize_key(k): str(v) for k, v in (explicit or {}).items() if v is not None}
    if not is_remote(root):
        return given

    options: dict[str, str] = {}
    if "AWS_ACCESS_KEY_ID" not in given:
        session = _aws_session(root, given.get("AWS_PROFILE") or None)
        if session.region_name:
            options["AWS_REGION"] = session.region_name
    else:
        given.pop("AWS_PROFILE", None)  # explicit keys win over a profile
    endpoint = (
        given.get("AWS_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    options.setdefault(
        "AWS_REGION", os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    )
    options.update(_s3_timeouts(given))
    options.update(given)
    warm_client(options)
    return options


def _aws_session(root: str, profile: str | None) -> Any:
    """A boto3 session for ``profile`` (None: the default chain), with its errors (unknown profile, broken
    config) turned into a :class:`ConfigError` that says what to fix. No credentials are resolved here."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.Session(profile_name=profile)
    except BotoCoreError as exc:
        raise ConfigError(
            f"cannot resolve AWS credentials for store {root}: {redact(str(exc))}; check AWS_PROFILE and "
            "~/.aws/config, or give AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the store's storage "
            "options"
        ) from None


# Sessions of the AWS chain, per profile and per state of what the chain reads (environment variables and the
# shared files' modification times): a rewritten credentials file or environment gives a new session, while
# refreshable credentials (web identity, assumed roles, instance/container roles) are refreshed by boto3
# itself inside one session.
_CHAIN_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
_SESSIONS: dict[tuple[object, ...], Any] = {}
_SESSIONS_LOCK = threading.Lock()
#: chain states that found no credentials, and when: not searched again for a minute (anonymous access)
_EMPTY_CHAINS: dict[tuple[object, ...], float] = {}
_EMPTY_CHAIN_S = 60.0


def _chain_state(profile: str | None) -> tuple[object, ...]:
    env = tuple(os.environ.get(name) for name in _CHAIN_ENV)
    files = []
    for variable, default in (
        ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        ("AWS_CONFIG_FILE", "~/.aws/config"),
    ):
        try:
            stat = os.stat(os.path.expanduser(os.environ.get(variable) or default))
            files.append((stat.st_mtime_ns, stat.st_size))
        except OSError:
            files.append(None)
    return (profile, env, tuple(files))


def _chain_session(profile: str | None) -> Any:
    state = _chain_state(profile)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(state)
    if session is None:
        import boto3

        session = boto3.Session(profile_name=profile)
        with _SESSIONS_LOCK:
            if len(_SESSIONS) > 64:
                _SESSIONS.clear()
            _SESSIONS[state] = session
    return session


def chain_credentials(options: Mapping[str, str]) -> dict[str, str]:
    """The AWS chain's credentials as of now, for clients that cannot resolve the chain themselves.

    Empty when the options carry explicit keys (those are used as given) or the chain has none (the client
    then tries anonymous access and the store reports the refusal). Resolved at every call, never cached
    beyond boto3's own refresh, so a rotated key or token reaches the next store call.
    """
    if "AWS_ACCESS_KEY_ID" in options:
        return {}
    from botocore.exceptions import BotoCoreError

    profile = options.get("AWS_PROFILE") or None
    state = _chain_state(profile)
    with _SESSIONS_LOCK:
        empty_at = _EMPTY_CHAINS.get(state)
    if empty_at is not None and time.monotonic() - empty_at < _EMPTY_CHAIN_S:
        return {}
    try:
        credentials = _chain_session(profile).get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials is not None else None
    except BotoCoreError as exc:
        raise ConfigError(f"cannot resolve AWS credentials: {redact(str(exc))}; check AWS_PROFILE") from None
    if frozen is None:  # boto3 does not remember a fruitless search (its last step probes instance metadata)
        with _SESSIONS_LOCK:
            _EMPTY_CHAINS[state] = time.monotonic()
        return {}
    out = {"aws_access_key_id": frozen.access_key, "aws_secret_access_key": frozen.secret_key}
    if frozen.token:
        out["aws_session_token"] = frozen.token
    _WIRE_FILTER.secrets.update(v for v in out.values() if v)
    return out


def secret_values(options: Mapping[str, str] | None) -> list[str]:
    """Values of options that are credentials (access keys, secrets, tokens, passwords), and the ones this
    process resolved from the AWS chain (they are not in the options but could appear in a client's error)."""
    given = [
        str(v)
        for k, v in (options or {}).items()
        if v and len(str(v)) >= 4 and any(h in str(k).upper() for h in _SECRET_HINTS)
    ]
    return given + sorted(s for s in _WIRE_FILTER.secrets if len(s) >= 4 and s not in given)


# ------------------------------------------------------------------------------------------ object metadata
# The store reads a few facts about objects that Delta does not expose: the sizes of the log's commit files
# (an empty one is damage) and their modification times (the storage's clock, for the lock's lease). Local
# paths use the file system; S3 uses boto3, whose requests release the GIL while they wait (delta-rs' Python
# file-system handler holds it, which stalls every other thread of the process for the length of a request,
# and deadlocks against an S3 server running in the same process).
_CLIENTS: dict[tuple[object, ...], Any] = {}
_CLIENTS_LOCK = threading.Lock()  # one build per key (a shared boto3 session is not thread-safe)
_WARMING: set[tuple[object, ...]] = set()


def _client_key(options: Mapping[str, str]) -> tuple[object, ...]:
    explicit = "AWS_ACCESS_KEY_ID" in options
    return (
        tuple(sorted(options.items())),
        None if explicit else _chain_state(options.get("AWS_PROFILE") or None),
    )


def warm_client(options: Mapping[str, str]) -> None:
    """Build the S3 client for ``options`` in a background thread, once per process and options.

    Importing boto3 and building a client takes ~0.2 s; every S3 command needs the client within its first
    store calls (log listings, the lease's fence checks), so the store starts building it when it is created
    and the main thread's first requests (delta-rs opening tables) overlap it instead of waiting for it. The
    thread then imports pyarrow (with numpy, ~0.1 s), which polars' Delta scan imports at a process's first
    read: the lease and migration-log commits before it overlap that too.
    """
    key = _client_key(options)
    with _CLIENTS_LOCK:
        if key in _CLIENTS or key in _WARMING:
            return
        _WARMING.add(key)

    def build() -> None:
        with contextlib.suppress(Exception):  # the first real call builds it again and reports any error
            s3_client(options)
        with contextlib.suppress(ImportError):
            import pyarrow  # noqa: F401

    threading.Thread(target=build, name="metaxy-s3-client", daemon=True).start()


def s3_client(options: Mapping[str, str]) -> Any:
    """A boto3 S3 client for ``options``: explicit keys as given, else the AWS chain's session as it is now
    (a new client when the chain's environment or files changed); requests bounded by the store's timeout."""
    ago = stalled_since(options)
    if ago is not None:  # the endpoint timed out moments ago: fail now rather than wait for it again
        raise StalledEndpointError(
            f"the S3 endpoint {endpoint_of(options)} timed out {ago:.1f} s ago; not called again yet"
        )
    explicit = "AWS_ACCESS_KEY_ID" in options
    key = _client_key(options)
    client = _CLIENTS.get(key)
    if client is not None:
        return client
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is not None:
            return client
        import boto3
        from botocore.config import Config

        endpoint = options.get("AWS_ENDPOINT_URL")
        timeout = timeout_seconds(options)
        session = boto3.session.Session() if explicit else _chain_session(options.get("AWS_PROFILE") or None)
        client = session.client(
            "s3",
            region_name=options.get("AWS_REGION") or None,
            endpoint_url=endpoint or None,
            aws_access_key_id=options.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=options.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=options.get("AWS_SESSION_TOKEN") or None,
            config=Config(
                connect_timeout=min(timeout, CONNECT_TIMEOUT_S),
                # two attempts of half the timeout each: a stalled endpoint fails a call in about `timeout`
                read_timeout=max(timeout / 2, 0.5),
                retries={"mode": "standard", "total_max_attempts": 2},
                s3={"addressing_style": "path"} if endpoint else {},
            ),
        )
        if len(_CLIENTS) > 64:
            _CLIENTS.clear()
        _CLIENTS[key] = client
        _redact_wire_logs(secret_values(options) + [options.get("AWS_ACCESS_KEY_ID", "")])
    return client


# botocore logs every request at DEBUG with its signed headers: the access key id (``Credential=...``) and a
# session token (``X-Amz-Security-Token``) would reach any log handler a user or Dagster attached at DEBUG.
_WIRE_SECRETS = re.compile(
    r"(?P<lead>Credential=)[^/,\s'\"]+"
    r"|(?P<head>(?:X-Amz-Security-Token|x-amz-security-token)['\"]?\s*[:=]\s*b?['\"]?)[^'\",\s}]+"
)


class _RedactWireLogs(logging.Filter):
    """Scrubs credentials from botocore/urllib3 log records before any handler sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        clean = redact(
            _WIRE_SECRETS.sub(lambda m: f"{m['lead'] or m['head']}***", text), (s for s in self.secrets if s)
        )
        if clean != text:
            record.msg, record.args = clean, None
        return True


_WIRE_FILTER = _RedactWireLogs()


def _redact_wire_logs(secrets: list[str]) -> None:
    """Attach the scrubbing filter to every botocore/boto3/urllib3 logger (a logger's filters do not apply to
    its children's records, so each one gets it; they all exist once a client has been built)."""
    _WIRE_FILTER.secrets.update(s for s in secrets if s)
    for name in list(logging.root.manager.loggerDict):
        if name.split(".", 1)[0] in ("botocore", "boto3", "urllib3", "s3transfer"):
            logger = logging.getLogger(name)
            if _WIRE_FILTER not in logger.filters:
                logger.addFilter(_WIRE_FILTER)


def bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key.strip("/")


@contextmanager
def boto_errors() -> Iterator[None]:
    """boto3/botocore failures inside the block as ``OSError`` (what the store's error translation reads)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise _as_os_error(exc) from None


#: error codes S3 answers for an object that is not there
_MISSING_CODES = ("404", "NoSuchKey", "NotFound")


def _as_os_error(exc: Exception) -> OSError:
    """A boto3/botocore failure as an ``OSError`` (what the store's error translation understands); a missing
    object as ``FileNotFoundError``, as for a local path."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
        return FileNotFoundError(f"{type(exc).__name__}: {exc}")
    return OSError(f"{type(exc).__name__}: {exc}")


def list_sizes(folder: str, options: Mapping[str, str]) -> dict[str, int]:
    """Name -> size of the files directly in ``folder`` (a local path or ``s3://bucket/prefix``)."""
    if not is_remote(folder):
        try:
            with os.scandir(folder) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        except FileNotFoundError:
            return {}
    bucket, prefix = bucket_key(folder)
    out: dict[str, int] = {}
    with boto_errors():
        pages = s3_client(options).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=f"{prefix}/", Delimiter="/"):
            for item in page.get("Contents", []):
                out[item["Key"].rsplit("/", 1)[-1]] = int(item["Size"])
    return out


def modified_at(path: str, options: Mapping[str, str]) -> Any:
    """When the storage says ``path`` was last written (a timezone-aware datetime), or None if it is gone."""
    from datetime import UTC, datetime

    if not is_remote(path):
        try:
            return datetime.fromtimestamp(os.stat(path).st_mtime_ns / 1e9, tz=UTC)
        except FileNotFoundError:
            return None
    bucket, key = bucket_key(path)
    try:
        with boto_errors():
            head = s3_client(options).head_object(Bucket=bucket, Key=key)
    except FileNotFoundError:
        return None
    return head["LastModified"]


def log_tail(log: str, version: int, options: Mapping[str, str]) -> tuple[str | None, bool]:
    """(a tag of commit ``version``'s file in the Delta log folder ``log``, whether a later commit exists).

    The tag (S3: the ETag; locally: modification time and size) is None when that commit file is absent.
    One listing request on S3 (from that version on), two ``stat`` calls locally: what a reader that
    cached a table at ``version`` needs to know it is still current without opening the table.
    """
    name = f"{version:020d}.json"
    if not is_remote(log):
        try:
            stat = os.stat(os.path.join(log, name))
            tag: str | None = f"{stat.st_mtime_ns}:{stat.st_size}"
        except FileNotFoundError:
            tag = None
        return tag, os.path.exists(os.path.join(log, f"{version + 1:020d}.json"))
    bucket, prefix = bucket_key(log)
    with boto_errors():
        listed = s3_client(options).list_objects_v2(
            Bucket=bucket, Prefix=f"{prefix}/", StartAfter=f"{prefix}/{version:020d}", MaxKeys=4
        )
    tag, later = None, False
    for item in listed.get("Contents", []):
        entry = item["Key"].rsplit("/", 1)[-1]
        if entry == name:
            tag = str(item.get("ETag"))
        elif entry[:20].isdigit() and int(entry[:20]) > version:
            later = True
    return tag, later


def read_bytes(path: str, options: Mapping[str, str]) -> bytes:
    """The content of one (small) file: a local path or ``s3://bucket/key``."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    bucket, key = bucket_key(path)
    with boto_errors():
        return bytes(s3_client(options).get_object(Bucket=bucket, Key=key)["Body"].read())


def delete_path(path: str, options: Mapping[str, str]) -> None:
    """Delete one file (a local path or ``s3://bucket/key``); one already gone is fine."""
    folder, _, name = path.rstrip("/").rpartition("/")
    delete_files(folder, [name], options)


def list_data_files(folder: str, options: Mapping[str, str]) -> dict[str, tuple[int, Any]]:
    """Relative path -> (size, modification time) of the files under a table's folder, skipping its log and
    every folder whose name starts with ``_`` or ``.`` (Delta's own); partition folders are descended into."""
    from datetime import UTC, datetime

    out: dict[str, tuple[int, Any]] = {}
    if not is_remote(folder):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
            for name in filenames:
                if name.startswith(("_", ".")):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue
                when = datetime.fromtimestamp(stat.st_mtime_ns / 1e9, tz=UTC)
                out[os.path.relpath(path, folder).replace(os.sep, "/")] = (stat.st_size, when)
        return out
    bucket, prefix = bucket_key(folder)
    pending = [f"{prefix}/"]
    with boto_errors():
        pages = s3_client(options).get_paginator("list_objects_v2")
        while pending:
            current = pending.pop()
            for page in pages.paginate(Bucket=bucket, Prefix=current, Delimiter="/"):
                for item in page.get("Contents", []):
                    name = item["Key"][len(current) :]
                    if name and not name.startswith(("_", ".")):
                        out[item["Key"][len(prefix) + 1 :]] = (int(item["Size"]), item["LastModified"])
                for sub in page.get("CommonPrefixes", []):
                    if not sub["Prefix"][len(current) :].startswith(("_", ".")):
                        pending.append(sub["Prefix"])
    return out


def delete_files(folder: str, names: list[str], options: Mapping[str, str]) -> None:
    """Delete ``names`` (paths relative to ``folder``); files already gone are fine."""
    if not is_remote(folder):
        for name in names:
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:
                pass
        return
    bucket, prefix = bucket_key(folder)
    with boto_errors():
        client = s3_client(options)
        for start in range(0, len(names), 1000):
            batch = [{"Key": f"{prefix}/{n}"} for n in names[start : start + 1000]]
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
