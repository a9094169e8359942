"""Storage options for Delta Lake: local paths, ``s3://`` URIs, credentials and which of them are secret.

S3 credentials come from boto3's standard chain (explicit profile, environment, shared config, instance or
container role) and are turned into delta-rs storage options; options given explicitly always win. Secret
values never leave the store unredacted: every error message built from a delta-rs/boto3 exception passes
through :func:`metaxy_core.errors.redact` with :func:`secret_values`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
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


# Bounded retries for S3: object_store retries a failing request for up to 180 s by default, so an endpoint
# that does not answer (or a bucket behind a firewall) hangs a command for minutes. These keys are
# case-sensitive in delta-rs, so they stay lower case; explicit options win. ``max_retries`` is deliberately
# not defaulted: polars re-reads a DeltaTable's options for its parquet reader and rejects it as a string.
S3_DEFAULT_OPTIONS = {"retry_timeout": "15s", "connect_timeout": "5s"}


def _normalize_key(key: object) -> str:
    """AWS keys are matched in upper case; others (``max_retries``, ``timeout``...) are case-sensitive."""
    text = str(key)
    return text.upper() if text.upper().startswith("AWS_") else text


def resolve_storage_options(root: str, explicit: Mapping[str, str] | None) -> dict[str, str]:
    """Options delta-rs needs for ``root``: explicit ones, completed from boto3's chain for S3."""
    given = {_normalize_key(k): str(v) for k, v in (explicit or {}).items() if v is not None}
    if not is_remote(root):
        return given

    options: dict[str, str] = {}
    if "AWS_ACCESS_KEY_ID" not in given:
        session, frozen = _aws_chain(root, given.pop("AWS_PROFILE", None) or None)
        if frozen is not None:
            options["AWS_ACCESS_KEY_ID"] = frozen.access_key
            options["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
            if frozen.token:
                options["AWS_SESSION_TOKEN"] = frozen.token
        if session.region_name:
            options["AWS_REGION"] = session.region_name
    given.pop("AWS_PROFILE", None)
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
    options.update(S3_DEFAULT_OPTIONS)
    options.update(given)
    return options


def _aws_chain(root: str, profile: str | None) -> tuple[Any, Any]:
    """boto3's session and frozen credentials (or None), with its errors (unknown profile, broken config,
    failing credential_process/SSO) turned into a :class:`ConfigError` that says what to fix."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.Session(profile_name=profile)
        credentials = session.get_credentials()
        return session, (credentials.get_frozen_credentials() if credentials is not None else None)
    except BotoCoreError as exc:
        raise ConfigError(
            f"cannot resolve AWS credentials for store {root}: {redact(str(exc))}; check AWS_PROFILE and "
            "~/.aws/config, or give AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the store's storage "
            "options"
        ) from None


def secret_values(options: Mapping[str, str] | None) -> list[str]:
    """Values of options that are credentials (access keys, secrets, tokens, passwords)."""
    return [
        str(v)
        for k, v in (options or {}).items()
        if v and len(str(v)) >= 4 and any(h in str(k).upper() for h in _SECRET_HINTS)
    ]


# ------------------------------------------------------------------------------------------ object metadata
# The store reads a few facts about objects that Delta does not expose: the sizes of the log's commit files
# (an empty one is damage) and their modification times (the storage's clock, for the lock's lease). Local
# paths use the file system; S3 uses boto3, whose requests release the GIL while they wait (delta-rs' Python
# file-system handler holds it, which stalls every other thread of the process for the length of a request,
# and deadlocks against an S3 server running in the same process).
_CLIENTS: dict[tuple[tuple[str, str], ...], Any] = {}


def _s3_client(options: Mapping[str, str]) -> Any:
    key = tuple(sorted(options.items()))
    client = _CLIENTS.get(key)
    if client is None:
        import boto3
        from botocore.config import Config

        endpoint = options.get("AWS_ENDPOINT_URL")
        client = boto3.session.Session().client(
            "s3",
            region_name=options.get("AWS_REGION") or None,
            endpoint_url=endpoint or None,
            aws_access_key_id=options.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=options.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=options.get("AWS_SESSION_TOKEN") or None,
            config=Config(
                connect_timeout=5,
                read_timeout=30,
                retries={"max_attempts": 3},
                s3={"addressing_style": "path"} if endpoint else {},
            ),
        )
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


def _bucket_key(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key.strip("/")


def _as_os_error(exc: Exception) -> OSError:
    """A boto3/botocore failure as an ``OSError`` (what the store's error translation understands)."""
    return OSError(f"{type(exc).__name__}: {exc}")


def list_sizes(folder: str, options: Mapping[str, str]) -> dict[str, int]:
    """Name -> size of the files directly in ``folder`` (a local path or ``s3://bucket/prefix``)."""
    if not is_remote(folder):
        try:
            with os.scandir(folder) as entries:
                return {e.name: e.stat().st_size for e in entries if e.is_file()}
        except FileNotFoundError:
            return {}
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _bucket_key(folder)
    out: dict[str, int] = {}
    try:
        pages = _s3_client(options).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=bucket, Prefix=f"{prefix}/", Delimiter="/"):
            for item in page.get("Contents", []):
                out[item["Key"].rsplit("/", 1)[-1]] = int(item["Size"])
    except (BotoCoreError, ClientError) as exc:
        raise _as_os_error(exc) from None
    return out


def modified_at(path: str, options: Mapping[str, str]) -> Any:
    """When the storage says ``path`` was last written (a timezone-aware datetime), or None if it is gone."""
    from datetime import UTC, datetime

    if not is_remote(path):
        try:
            return datetime.fromtimestamp(os.stat(path).st_mtime_ns / 1e9, tz=UTC)
        except FileNotFoundError:
            return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(path)
    try:
        head = _s3_client(options).head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise _as_os_error(exc) from None
    except BotoCoreError as exc:
        raise _as_os_error(exc) from None
    return head["LastModified"]


def read_bytes(path: str, options: Mapping[str, str]) -> bytes:
    """The content of one (small) file: a local path or ``s3://bucket/key``."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(path)
    try:
        return bytes(_s3_client(options).get_object(Bucket=bucket, Key=key)["Body"].read())
    except (BotoCoreError, ClientError) as exc:
        raise _as_os_error(exc) from None
