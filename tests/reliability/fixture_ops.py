"""Operations used by the reliability tests; copied into each test project as ``relops.py``.

They are ordinary user operations (subclasses of the public ones); nothing in the engine knows about them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from metaxy_core.graph.keys import FeatureKey
from metaxy_core.migrations import DataVersionReconciliation, MetadataBackfill
from metaxy_core.migrations.context import OperationContext
from metaxy_core.migrations.ops import StepOutcome


class SmallBatchReconciliation(DataVersionReconciliation):
    """The built-in reconciliation, committing every ``batch_rows`` rows (many commits = many kill points).

    ``sleep_s`` pauses before each feature step, to keep an apply running while another process watches it
    (the test-only ``REL_SLEEP_S`` environment variable overrides it for one process, and ``REL_WAIT_FOR``
    stalls each step until the named file exists).
    """

    batch_rows: int = 40
    sleep_s: float = 0.0

    def run(self, ctx: OperationContext, feature: FeatureKey) -> StepOutcome:
        sleep = float(os.environ.get("REL_SLEEP_S", self.sleep_s))
        if sleep:
            time.sleep(sleep)
        wait_for = os.environ.get("REL_WAIT_FOR")  # test-only: stall until the test creates this file
        deadline = time.monotonic() + 120
        while wait_for and not os.path.exists(wait_for) and time.monotonic() < deadline:
            time.sleep(0.05)
        ctx.batch_rows = self.batch_rows
        return super().run(ctx, feature)


class LeakyBackfill(MetadataBackfill):
    """A backfill whose source is a database URL with a password, failing with the URL in its message
    (as many drivers do): the engine must not repeat the password anywhere."""

    dsn: str

    def execute(
        self, store: Any, *, from_snapshot_version: Any, to_snapshot_version: str, dry_run: bool = False
    ) -> int:
        raise ConnectionError(f"could not connect to {self.dsn}: connection refused")
