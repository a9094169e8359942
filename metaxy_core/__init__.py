"""metaxy_core: versioned metadata for multimodal pipelines, usable without Dagster.

The public API (see ``shared/DESIGN.md``)::

    from metaxy_core import (Feature, FeatureSpec, FieldSpec, FeatureDep, FieldDep, FeatureKey, FieldKey,
                             FeatureGraph, MetadataStore, DeltaMetadataStore, MetaxyConfig)
"""

from metaxy_core.startup import collection_paused

with collection_paused():  # loading the package: no garbage-collector passes (see collection_paused)
    from metaxy_core.config import MetaxyConfig as MetaxyConfig
    from metaxy_core.errors import MetaxyError as MetaxyError
    from metaxy_core.graph import Feature as Feature
    from metaxy_core.graph import FeatureDep as FeatureDep
    from metaxy_core.graph import FeatureGraph as FeatureGraph
    from metaxy_core.graph import FeatureKey as FeatureKey
    from metaxy_core.graph import FeatureSpec as FeatureSpec
    from metaxy_core.graph import FieldDep as FieldDep
    from metaxy_core.graph import FieldKey as FieldKey
    from metaxy_core.graph import FieldSpec as FieldSpec
    from metaxy_core.store import DeltaMetadataStore as DeltaMetadataStore
    from metaxy_core.store import Increment as Increment
    from metaxy_core.store import MetadataStore as MetadataStore
    from metaxy_core.store.provenance import SYSTEM_COLUMNS as SYSTEM_COLUMNS

__version__ = "0.1.0"

__all__ = [
    "SYSTEM_COLUMNS",
    "DeltaMetadataStore",
    "Feature",
    "FeatureDep",
    "FeatureGraph",
    "FeatureKey",
    "FeatureSpec",
    "FieldDep",
    "FieldKey",
    "FieldSpec",
    "Increment",
    "MetadataStore",
    "MetaxyConfig",
    "MetaxyError",
]
