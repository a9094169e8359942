"""Pattern 1: a refactor that did not change results -> reconcile instead of recomputing.

Stage v2 rewrote the audio resampler (``video/audio.waveform`` code_version 1 -> 2) and the new code produces
bit-identical waveforms. Bumping the code version changed the feature version of ``video/audio`` and, through
field-level lineage, of ``text/transcript`` (its ``text`` uses ``waveform``), so both would be recomputed.
:class:`DataVersionReconciliation` carries the stored rows over to the new versions instead: it keeps every
user column, recomputes provenance from the upstream data versions and appends the rows, upstream first.
Embeddings, frames and raw videos are untouched: nothing they use changed.

Only reconcile when you *know* the results are the same (same outputs on a sample, a pure refactor); if they
might differ, recompute the features instead.
"""

from datetime import datetime, timezone

from metaxy_core.migrations import BaseOperation, DataVersionReconciliation, PythonMigration


class AudioResamplerRefactor(PythonMigration):
    migration_id: str = "20250115_090000_audio_resampler_refactor"
    created_at: datetime = datetime(2025, 1, 15, 9, 0, tzinfo=timezone.utc)
    parent: str = "initial"
    description: str = (
        "Audio resampler rewritten with identical output: reconcile video/audio and text/transcript"
    )
    from_snapshot_version: str = "7f4edc58f5d5b607"  # stage v1
    to_snapshot_version: str = "673c7d259fc8cf51"  # stage v2

    def build_operations(self) -> list[BaseOperation | dict]:
        return [
            DataVersionReconciliation(
                id="reconcile_audio_lineage",
                reason="resampler refactor, outputs verified identical on 500 samples",
            )
        ]
