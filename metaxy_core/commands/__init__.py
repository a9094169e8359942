"""One function per CLI verb, each returning one typed result; the CLI only parses and renders.

Usable from Python as well (``commands.migrations_apply(open_project(), dry_run=True)``). Every function
raises :class:`~metaxy_core.errors.MetaxyError` subclasses with messages ready for users. Every result has
``as_dict()``: the data ``--format json`` prints. A function's docstring's first line is its verb's help.

The verbs live by concept (:mod:`.project`, :mod:`.graph`, :mod:`.migrations`, :mod:`.chain` for the
gates ``check``/``validate``/``heads``, :mod:`.stamping`); every public name is
re-exported here, so ``from metaxy_core import commands; commands.migrations_status(...)`` is the one way in.
"""

from __future__ import annotations

from metaxy_core.commands.chain import (
    CheckReport,
    HeadInfo,
    HeadsReport,
    Problem,
    ProblemKind,
    ValidationReport,
    migrations_check,
    migrations_heads,
    migrations_validate,
)
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
from metaxy_core.commands.import016 import migrations_import_016 as migrations_import_016
from metaxy_core.commands.migrations import (
    ApplyReport,
    ChainListing,
    LogEvent,
    MigrationExplanation,
    MigrationFile,
    MigrationHistory,
    MigrationStatusRow,
    NotConfirmed,
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
from metaxy_core.commands.project import (
    InitResult,
    Project,
    VersionInfo,
    init_project,
    open_project,
    version_info,
)
from metaxy_core.commands.stamping import StampReport, migrations_baseline, migrations_stamp
from metaxy_core.migrations.results import MigrationFailed

__all__ = [
    "ApplyReport",
    "ChainListing",
    "CheckReport",
    "FeatureInfo",
    "FieldInfo",
    "GraphInfo",
    "HeadInfo",
    "HeadsReport",
    "InitResult",
    "LogEvent",
    "MaintenanceReport",
    "MigrationExplanation",
    "MigrationFailed",
    "MigrationFile",
    "MigrationHistory",
    "MigrationStatusRow",
    "NotConfirmed",
    "Problem",
    "ProblemKind",
    "Project",
    "RollbackReport",
    "SnapshotInfo",
    "StampReport",
    "StatusReport",
    "UnlockResult",
    "ValidationReport",
    "VerificationReport",
    "VersionInfo",
    "graph_info",
    "init_project",
    "migrations_apply",
    "migrations_baseline",
    "migrations_check",
    "migrations_explain",
    "migrations_generate",
    "migrations_heads",
    "migrations_history",
    "migrations_list",
    "migrations_rollback",
    "migrations_stamp",
    "migrations_status",
    "migrations_unlock",
    "migrations_validate",
    "migrations_verify",
    "migrations_import_016",
    "open_project",
    "push",
    "snapshot_info",
    "store_maintain",
    "version_info",
]
