"""Child process of the concurrent-write test: append ``batches`` frames of distinct samples to a store.

    python writer.py <store root> <worker index> <batches> <rows per batch>

Worker ``w`` writes samples ``w-<batch>-<row>`` to ``video/raw`` (an existing table) and to ``video/extra``
(a table that does not exist when the workers start, so they also race to create it).
"""

from __future__ import annotations

import sys

import polars as pl
from fixture_features import RAW, build_graph

from metaxy_core import DeltaMetadataStore, FeatureSpec, FieldSpec

EXTRA = "video/extra"


def main(root: str, worker: int, batches: int, rows: int) -> int:
    graph = build_graph("1")
    graph.add(
        FeatureSpec(key=EXTRA, id_columns=["sample_uid"], fields=[FieldSpec(key="blob", code_version="1")])
    )
    store = DeltaMetadataStore(root, project="rel")
    for b in range(batches):
        uid = pl.Series("sample_uid", [f"w{worker}-{b:03d}-{r:04d}" for r in range(rows)])
        raw = pl.DataFrame({"sample_uid": uid, "path": "p/" + uid}).with_columns(
            pl.struct(
                frames=pl.lit("f") + pl.col("sample_uid"), audio=pl.lit("a") + pl.col("sample_uid")
            ).alias("metaxy_provenance_by_field")
        )
        assert store.write_metadata(RAW, raw, graph=graph) == rows
        extra = pl.DataFrame({"sample_uid": uid}).with_columns(
            pl.struct(blob=pl.lit("b") + pl.col("sample_uid")).alias("metaxy_provenance_by_field")
        )
        assert store.write_metadata(EXTRA, extra, graph=graph) == rows
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
