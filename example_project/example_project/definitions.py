"""Dagster definitions of the example: one asset per migration, the apply and plan jobs, schedule and sensor.

Run ``dagster dev`` in ``example_project/`` (``pyproject.toml`` names this module), or
``python -m example_project.dev`` to start the local S3 and PostgreSQL servers, seed them and the store, and
open the UI with everything in place. Loading these definitions reads files only: no store, no S3, no
database.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

import example_project.features  # noqa: F401  (registers the code's feature graph before the chain loads)
from example_project import CONFIG_FILE
from metaxy_core import MetaxyConfig
from metaxy_dagster import build_migration_definitions


def build_definitions(config: MetaxyConfig | None = None) -> Definitions:
    """The example's definitions for ``config`` (default: ``metaxy.toml`` plus ``METAXY_*`` overrides)."""
    return build_migration_definitions(
        config=config or MetaxyConfig.load(CONFIG_FILE),
        schedule_cron="0 3 * * *",  # apply pending migrations nightly (schedules start stopped)
        include_sensor=True,  # ...and when a new snapshot is pushed (`metaxy push` on deploy)
        # Dagster's default executor starts one process per op (~10 s of imports each on a laptop). The
        # example's migrations are small, so a run executes its ops in one process; remove this line (or
        # pick the k8s / celery / docker executor) in production: the ops are process-separable.
        executor_def=in_process_executor,
    )


defs = build_definitions()
