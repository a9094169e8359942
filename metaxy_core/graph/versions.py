"""Stable definition-level hashes.

Algorithm (documented in docs/concepts.md and pinned by tests/core/test_versions.py):

* ``_digest(payload)`` = first 16 hex digits (64 bits) of SHA-256 over the canonical JSON of ``payload``
  (sorted keys, no whitespace, ASCII). Canonical JSON makes the hash independent of dict order, the process
  and library versions; Python's ``hash()`` and polars' ``Expr.hash`` are never used.
* field version = digest of {feature key, field key, code_version, sorted ["<upstream>:<field>:<version>"]}
  over the upstream fields the field depends on (so a change upstream propagates down field by field);
* feature version = digest of {feature key, {field key: field version}};
* snapshot version = digest of {feature key: feature version} over the whole graph.

Only data-affecting definitions enter the payloads (keys, code versions, lineage). Docstrings, class names,
module paths and user column annotations do not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

VERSION_HEX_DIGITS = 16


def digest(payload: Any) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:VERSION_HEX_DIGITS]


def field_version_payload(feature: str, field: str, code_version: str, upstream: list[str]) -> dict[str, Any]:
    return {"feature": feature, "field": field, "code_version": code_version, "deps": sorted(upstream)}


def feature_version_payload(feature: str, field_versions: dict[str, str]) -> dict[str, Any]:
    return {"feature": feature, "fields": dict(sorted(field_versions.items()))}


def snapshot_version_payload(feature_versions: dict[str, str]) -> dict[str, Any]:
    return {"features": dict(sorted(feature_versions.items()))}
