"""The ``Feature`` base class: declaring a subclass registers its spec in the active graph."""

from __future__ import annotations

from typing import Any, ClassVar, get_type_hints

from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.spec import FeatureSpec


class Feature:
    """Base class for user features.

    Example:
        >>> class VideoRaw(Feature, spec=FeatureSpec(key="video/raw", id_columns=["sample_uid"],
        ...                                          fields=[FieldSpec(key="frames", code_version="1")])):
        ...     path: str          # a user column; documentation and schema hints only
    """

    spec: ClassVar[FeatureSpec]
    graph: ClassVar[FeatureGraph]

    def __init_subclass__(cls, spec: FeatureSpec | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if spec is None:
            return  # an abstract intermediate base class
        if isinstance(spec, dict):
            spec = FeatureSpec.model_validate(spec)
        cls.spec = spec
        cls.graph = FeatureGraph.get_active()
        cls.graph.add(spec, cls)

    @classmethod
    def user_columns(cls) -> dict[str, Any]:
        """Typed columns declared in the class body (``path: str``)."""
        hints = get_type_hints(cls)
        return {k: v for k, v in hints.items() if k not in ("spec", "graph")}
