"""Pattern 3: operations computed at run time from the feature graph and the environment.

Stage v4 upgraded the frame decoder (``video/frames.frames`` code_version 1 -> 2) with identical frames.
Everything downstream of the frames moved with it: ``video/embeddings`` and ``video/thumbnails`` today, and
whatever is added downstream tomorrow. Instead of listing features by hand, :meth:`build_operations` walks
the feature graph of the migration's target snapshot (the v4 code's, also once the code has moved past v4):

* one :class:`DataVersionReconciliation` per feature, upstream first, so each shows as its own step (its own
  op in Dagster) with its own progress;
* root features are skipped: their provenance comes from their data, reconciliation cannot carry them over;
* environment-specific behaviour: an environment (``EXAMPLE_ENV``) may recompute some features instead of
  reconciling them; those, and everything downstream of them, are left out.

The operations are built whenever the migration is loaded or run (definition load, plan, apply), so they must
depend only on the target graph and the configuration, never on the store's contents.
"""

import os
from datetime import datetime, timezone

from pydantic import Field, field_validator

from metaxy_core import FeatureGraph, FeatureKey
from metaxy_core.migrations import BaseOperation, DataVersionReconciliation, PythonMigration

#: features each environment recomputes rather than reconciles (staging re-embeds on spare GPUs)
RECOMPUTE_INSTEAD = {"dev": [], "staging": ["video/embeddings"], "prod": []}
CHANGED = "video/frames"


class FrameDecoderUpgrade(PythonMigration):
    migration_id: str = "20250410_080000_frame_decoder_upgrade"
    created_at: datetime = datetime(2025, 4, 10, 8, 0, tzinfo=timezone.utc)
    parent: str = "20250301_120000_thumbnails_and_batched_embeddings"
    description: str = (
        "Frame decoder upgraded with identical frames: reconcile video/frames and its downstream"
    )
    from_snapshot_version: str = "be4f3514d857d105"  # stage v3
    to_snapshot_version: str = "fe6661068366e7dc"  # stage v4 (the current code)
    environment: str = Field(default_factory=lambda: os.environ.get("EXAMPLE_ENV", "dev"))

    @field_validator("environment")
    @classmethod
    def _known_environment(cls, value: str) -> str:
        if value not in RECOMPUTE_INSTEAD:
            raise ValueError(f"EXAMPLE_ENV={value!r} is not one of {sorted(RECOMPUTE_INSTEAD)}")
        return value

    def build_operations(self) -> list[BaseOperation | dict]:
        # The graph of this migration's target snapshot (v4), whatever the code is now: metaxy activates it
        # (from .metaxy/snapshots/<to_snapshot_version>.json), so the migration stays loadable and builds the
        # same operations after later code changes.
        graph = FeatureGraph.get_active()
        skipped = {FeatureKey(k) for k in RECOMPUTE_INSTEAD[self.environment]}
        skipped |= set(graph.downstream(skipped))
        ops: list[BaseOperation | dict] = []
        for key in [FeatureKey(CHANGED), *graph.downstream([CHANGED])]:  # topological: upstream first
            if not graph.spec(key).deps or key in skipped:
                continue
            ops.append(
                DataVersionReconciliation(
                    id=f"reconcile_{key.to_table_name()}",
                    features=[key],
                    reason=f"frame decoder upgrade, identical frames ({self.environment})",
                )
            )
        return ops
