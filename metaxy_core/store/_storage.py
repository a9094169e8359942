"""Storage options for Delta Lake: local paths, ``s3://`` URIs, credentials and which of them are secret.

S3 credentials come from boto3's standard chain (explicit profile, environment, shared config, instance or
container role) and are turned into delta-rs storage options; options given explicitly always win. Secret
values never leave the store unredacted: every error message built from a delta-rs/boto3 exception passes
through :func:`metaxy_core.errors.redact` with :func:`secret_values`.
"""

from __future__ import annotations

import os
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
