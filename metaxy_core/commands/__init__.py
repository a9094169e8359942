"""One function per CLI verb, each returning one typed result; the CLI only parses and renders.

Usable from Python as well (``commands.migrations_apply(open_project(), dry_run=True)``). Every function
raises :class:`~metaxy_core.errors.MetaxyError` subclasses with messages ready for users. Every result has
``as_dict()``: the data ``--format json`` prints. A function's docstring's first line is its verb's help.

The verbs live by concept (:mod:`.project`, :mod:`.graph`, :mod:`.migrations`); every public name is
re-exported here, so ``from metaxy_core import commands; commands.migrations_status(...)`` is the one way in.
"""

from __future__ import annotations

from metaxy_core.commands.graph import (
    FeatureInfo,
    FieldInfo,
    GraphInfo,
    MaintenanceReport,
    SnapshotInfo,
    graph_info,
    push,
    snapshot_info,
    store_maintain,
)
from metaxy_core.commands.migrations import (
    ApplyReport,
    ChainListing,
    LogEvent,
    MigrationExplanation,
    MigrationFile,
    MigrationHistory,
    MigrationStatusRow,
    RollbackReport,
    StatusReport,
    UnlockResult,
    VerificationReport,
    migrations_apply,
    migrations_explain,
    migrations_generate,
    migrations_history,
    migrations_list,
    migrations_rollback,
    migrations_status,
    migrations_unlock,
    migrations_verify,
)
from metaxy_core.commands.project import Project, open_project
from metaxy_core.migrations.results import MigrationFailed

__all__ = [
    "ApplyReport",
    "ChainListing",
    "FeatureInfo",
    "FieldInfo",
    "GraphInfo",
    "LogEvent",
    "MaintenanceReport",
    "MigrationExplanation",
    "MigrationFailed",
    "MigrationFile",
    "MigrationHistory",
    "MigrationStatusRow",
    "Project",
    "RollbackReport",
    "SnapshotInfo",
    "StatusReport",
    "UnlockResult",
    "VerificationReport",
    "graph_info",
    "migrations_apply",
    "migrations_explain",
    "migrations_generate",
    "migrations_history",
    "migrations_list",
    "migrations_rollback",
    "migrations_status",
    "migrations_unlock",
    "migrations_verify",
    "open_project",
    "push",
    "snapshot_info",
    "store_maintain",
]
