"""``metaxy migrations import-016``: adopt a Metaxy 0.1.6 store and its migration files."""

from __future__ import annotations

from metaxy_core.commands.project import Project
from metaxy_core.migrations.import016 import Import016Report, import_016


def migrations_import_016(project: Project, source: str | None = None) -> Import016Report:
    """Map a Metaxy 0.1.6 store's snapshots and rows into this project, so its migration files apply.

    SOURCE is the 0.1.6 store's root (default: the configured store's root, where 0.1.6 keeps its tables
    beside this project's). Pushes its snapshots as this project's, writes the map from its snapshot ids
    next to the migrations, and carries its rows over (re-runs write only what is missing).
    """
    config = project.config
    return import_016(
        project.store,
        project=config.project,
        migrations_dir=config.migrations_path,
        source=source,
        bucket_rows=config.bucket_rows,
    )
