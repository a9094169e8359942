"""The feature graph of the reliability tests; copied into each test project as ``relfeatures.py``.

``video/raw`` (root: frames, audio) feeds ``video/emb`` (embedding <- frames) and ``video/cap`` (caption <-
audio), which both feed ``video/joint``. Version 2 bumps the code version of ``emb`` and ``cap``, so ``emb``,
``cap`` and ``joint`` change feature version while their stored rows stay valid: what a reconciliation
migration carries over.
"""

from __future__ import annotations

import os

from metaxy_core import Feature, FeatureDep, FeatureGraph, FeatureSpec, FieldDep, FieldSpec

RAW, EMB, CAP, JOINT = "video/raw", "video/emb", "video/cap", "video/joint"
KEYS = [RAW, EMB, CAP, JOINT]


def declare(version: str) -> None:
    """Declare the four features into the active graph at code version ``version`` ("1" or "2")."""

    class Raw(
        Feature,
        spec=FeatureSpec(
            key=RAW,
            id_columns=["sample_uid"],
            fields=[FieldSpec(key="frames", code_version="1"), FieldSpec(key="audio", code_version="1")],
        ),
    ):
        path: str

    class Emb(
        Feature,
        spec=FeatureSpec(
            key=EMB,
            id_columns=["sample_uid"],
            deps=[FeatureDep(feature=Raw)],
            fields=[
                FieldSpec(
                    key="embedding", code_version=version, deps=[FieldDep(feature=Raw, fields=["frames"])]
                )
            ],
        ),
    ):
        dim: int

    class Cap(
        Feature,
        spec=FeatureSpec(
            key=CAP,
            id_columns=["sample_uid"],
            deps=[FeatureDep(feature=Raw)],
            fields=[
                FieldSpec(key="caption", code_version=version, deps=[FieldDep(feature=Raw, fields=["audio"])])
            ],
        ),
    ):
        text: str

    class Joint(
        Feature,
        spec=FeatureSpec(
            key=JOINT,
            id_columns=["sample_uid"],
            deps=[FeatureDep(feature=Emb), FeatureDep(feature=Cap)],
            fields=[FieldSpec(key="score", code_version="1")],
        ),
    ):
        score: float


def build_graph(version: str) -> FeatureGraph:
    graph = FeatureGraph()
    with graph.use():
        declare(version)
    return graph


if __name__ == "relfeatures":  # imported by a test project's `entrypoints`, not by the tests themselves
    declare(os.environ.get("REL_CODE_VERSION", "2"))
