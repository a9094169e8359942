"""The only module that touches Dagster's private API.

Dagster 1.13 has no public name for what ``define_asset_job`` returns (an asset job whose selection resolves
when the ``Definitions`` load), yet sensors and schedules accept it as their job, and a sensor must know
whether a run request may select assets. Everything else imports it from here, so a Dagster upgrade that moves
it breaks one line.
"""

from __future__ import annotations

from typing import TypeAlias

from dagster import JobDefinition
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

#: a job a sensor or schedule can target: an op job, or an asset job from ``define_asset_job``
AnyJob: TypeAlias = JobDefinition | UnresolvedAssetJobDefinition


def is_asset_job(job: AnyJob) -> bool:
    """Whether ``job`` was built by ``define_asset_job`` (its run requests may select assets)."""
    return isinstance(job, UnresolvedAssetJobDefinition)


__all__ = ["AnyJob", "UnresolvedAssetJobDefinition", "is_asset_job"]
