"""A step's result is recorded only while its run still holds the lease, checked without a renewal commit:
a lease released by hand (``unlock --force``) during a step stops the run before that step is recorded, and a
step under a live lease adds no commit to the lock table (acquire and release are its only commits)."""

from __future__ import annotations

from typing import Literal

import mxtest_support as s
import pytest

from metaxy_core import DeltaMetadataStore
from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import BaseOperation, MigrationExecutor, OperationContext, load_chain, progress
from metaxy_core.migrations.lock import LockLostError, StoreLock
from metaxy_core.migrations.ops import StepOutcome
from metaxy_core.store.system import LOCK

M1 = "20250501_000000_emb"


class UnlockedMidStep(BaseOperation):
    """Has the run's lease released by hand (``metaxy migrations unlock --force``) while it runs."""

    type: Literal["test_step_lease_check.UnlockedMidStep"] = "test_step_lease_check.UnlockedMidStep"

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        StoreLock(ctx.store, "admin").force_release(force=True)
        return StepOutcome(0)


class Idle(BaseOperation):
    """Does nothing (a step with no writes of its own)."""

    type: Literal["test_step_lease_check.Idle"] = "test_step_lease_check.Idle"

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        return StepOutcome(0)


def _migration(store: DeltaMetadataStore, mig_dir, op: str):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=6, n_emb=6)
    store.push_snapshot(g2, project=s.PROJECT)
    s.write_migration(mig_dir, M1, from_=g1.snapshot_version, to=g2.snapshot_version, ops=[{"type": op}])
    return g2


def test_a_lease_released_by_hand_during_a_step_stops_the_run_before_the_step_is_recorded(
    store: DeltaMetadataStore, mig_dir
) -> None:
    g2 = _migration(store, mig_dir, "test_step_lease_check.UnlockedMidStep")
    executor = MigrationExecutor(store, graph=g2, run_id="run-a")
    with pytest.raises(LockLostError, match="run-a lost the migration lock"):
        executor.apply(load_chain(mig_dir))
    events = progress.read_events(store, s.PROJECT)
    steps = events.filter(events["op_index"] >= 0)
    assert steps.height == 0, steps  # nothing recorded for the step whose lease was gone
    assert executor.state(M1).status != progress.COMPLETED


def test_a_step_under_a_live_lease_adds_no_commit_to_the_lock_table(
    store: DeltaMetadataStore, mig_dir
) -> None:
    g2 = _migration(store, mig_dir, "test_step_lease_check.Idle")
    [result] = MigrationExecutor(store, graph=g2, run_id="run-b").apply(load_chain(mig_dir))
    assert result.status == "completed" and result.steps
    assert store.table_version(system=LOCK) == 1  # acquire (version 0) and release (version 1) only
