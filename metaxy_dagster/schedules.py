"""A cron schedule for the migration jobs."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, ScheduleDefinition

from metaxy_dagster._compat import AnyJob
from metaxy_dagster.jobs import RUN_KIND_TAG, run_config_for, takes_dry_run
from metaxy_dagster.resources import RUN_RESOURCE_KEY


def build_migration_schedule(
    *,
    cron_schedule: str,
    job: AnyJob,
    dry_run: bool = False,
    name: str | None = None,
    execution_timezone: str | None = None,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
    run_resource_key: str = RUN_RESOURCE_KEY,
    description: str | None = None,
) -> ScheduleDefinition:
    """A schedule that launches ``job`` on ``cron_schedule`` with ``dry_run`` as run configuration.

    Args:
        cron_schedule: e.g. ``"0 3 * * *"``.
        job: the apply job (applies pending migrations) or the plan job (plans them).
        dry_run: plan instead of apply.
        name: default ``<job name>_schedule``.

    Example:
        >>> build_migration_schedule(cron_schedule="0 3 * * *", job=apply_job, dry_run=True)
    """
    return ScheduleDefinition(
        name=name or f"{job.name}_schedule",
        cron_schedule=cron_schedule,
        job=job,
        # the plan job always plans and takes no dry_run
        run_config=(
            run_config_for(dry_run=dry_run, run_resource_key=run_resource_key) if takes_dry_run(job) else {}
        ),
        tags={RUN_KIND_TAG: "plan" if dry_run else "apply", "metaxy/dry_run": str(dry_run).lower()},
        execution_timezone=execution_timezone,
        default_status=default_status,
        description=description
        or f"{'Plan' if dry_run else 'Apply'} pending metaxy migrations on the schedule {cron_schedule}.",
    )
