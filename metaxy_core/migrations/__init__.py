"""Migrations: files that move stored metadata from one snapshot to the next without recomputing."""

from metaxy_core.migrations.chain import ChainError as ChainError
from metaxy_core.migrations.chain import MigrationChain as MigrationChain
from metaxy_core.migrations.context import OperationContext as OperationContext
from metaxy_core.migrations.executor import MigrationExecutor as MigrationExecutor
from metaxy_core.migrations.loader import load_chain as load_chain
from metaxy_core.migrations.loader import load_migration_file as load_migration_file
from metaxy_core.migrations.lock import LockedError as LockedError
from metaxy_core.migrations.models import APPLY_PHASE as APPLY_PHASE
from metaxy_core.migrations.models import CustomMigration as CustomMigration
from metaxy_core.migrations.models import DiffMigration as DiffMigration
from metaxy_core.migrations.models import FullGraphMigration as FullGraphMigration
from metaxy_core.migrations.models import Migration as Migration
from metaxy_core.migrations.models import PythonMigration as PythonMigration
from metaxy_core.migrations.models import in_apply_phase as in_apply_phase
from metaxy_core.migrations.ops import BaseOperation as BaseOperation
from metaxy_core.migrations.ops import DataVersionReconciliation as DataVersionReconciliation
from metaxy_core.migrations.ops import MetadataBackfill as MetadataBackfill
from metaxy_core.migrations.results import MigrationFailed as MigrationFailed
from metaxy_core.migrations.results import MigrationResult as MigrationResult
from metaxy_core.migrations.results import MigrationStatus as MigrationStatus
from metaxy_core.migrations.results import RunStatus as RunStatus
from metaxy_core.migrations.results import StepOutcome as StepOutcome
from metaxy_core.migrations.results import StepResult as StepResult
from metaxy_core.migrations.results import StepStatus as StepStatus
from metaxy_core.migrations.verify import MigrationVerification as MigrationVerification
from metaxy_core.migrations.verify import verify_migration as verify_migration

__all__ = [
    "APPLY_PHASE",
    "BaseOperation",
    "ChainError",
    "CustomMigration",
    "DataVersionReconciliation",
    "DiffMigration",
    "FullGraphMigration",
    "LockedError",
    "MetadataBackfill",
    "Migration",
    "MigrationChain",
    "MigrationExecutor",
    "MigrationFailed",
    "MigrationResult",
    "MigrationStatus",
    "MigrationVerification",
    "OperationContext",
    "PythonMigration",
    "RunStatus",
    "StepOutcome",
    "StepResult",
    "StepStatus",
    "in_apply_phase",
    "load_chain",
    "load_migration_file",
    "verify_migration",
]
