"""Feature graph: keys, specs, the Feature base class and stable versions."""

from metaxy_core.graph.feature import Feature as Feature
from metaxy_core.graph.graph import FeatureGraph as FeatureGraph
from metaxy_core.graph.graph import resolve_key as resolve_key
from metaxy_core.graph.keys import FeatureKey as FeatureKey
from metaxy_core.graph.keys import FieldKey as FieldKey
from metaxy_core.graph.spec import FeatureDep as FeatureDep
from metaxy_core.graph.spec import FeatureSpec as FeatureSpec
from metaxy_core.graph.spec import FieldDep as FieldDep
from metaxy_core.graph.spec import FieldSpec as FieldSpec

__all__ = [
    "Feature",
    "FeatureDep",
    "FeatureGraph",
    "FeatureKey",
    "FeatureSpec",
    "FieldDep",
    "FieldKey",
    "FieldSpec",
    "resolve_key",
]
