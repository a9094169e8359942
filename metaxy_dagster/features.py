"""Feature tables as Dagster assets, so lineage runs migration -> the features it writes.

In dagster-dbt the models *are* the assets; here the feature tables are. :func:`build_feature_assets` makes
one external asset per feature of the code's graph (key, deps, kinds, code version and table metadata from the
translator), unless one of the user's own assets stands for the feature: an asset carrying the
``metaxy/feature`` metadata entry (upstream Metaxy's convention) is used instead of a new one, and receives
the lineage and the migrations' events. Nothing here reads the store: locations come from the configuration.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dagster import AssetKey, AssetsDefinition, AssetSpec

from metaxy_core.errors import MetaxyError
from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import FeatureKey
from metaxy_dagster.errors import MetaxyDefinitionsError
from metaxy_dagster.translator import FEATURE_METADATA_KEY, MetaxyMigrationTranslator

UserAsset = AssetsDefinition | AssetSpec


@dataclass
class FeatureAssets:
    """How the features of one code location map to Dagster assets.

    Attributes:
        keys: feature key (``"video/raw"``) -> the asset that stands for it (ours or the user's).
        specs: the external assets created for features no user asset stands for.
        user_assets: the user's assets, those standing for a feature given the feature's lineage.
    """

    keys: dict[str, AssetKey] = field(default_factory=dict)
    specs: list[AssetSpec] = field(default_factory=list)
    user_assets: list[UserAsset] = field(default_factory=list)


def feature_of(metadata: Mapping[str, object]) -> FeatureKey | None:
    """The feature a user asset stands for: its ``metaxy/feature`` metadata entry (``"a/b"`` or parts)."""
    value = metadata.get(FEATURE_METADATA_KEY)
    value = getattr(value, "value", value)  # a MetadataValue once Dagster normalised it
    if value is None:
        return None
    try:
        return FeatureKey(value)  # type: ignore[arg-type]
    except (MetaxyError, ValueError, TypeError) as exc:
        raise MetaxyDefinitionsError(
            f"metadata {FEATURE_METADATA_KEY}={value!r} is not a feature key ({exc}); write it like "
            '"video/raw"'
        ) from None


def _specs_of(asset: UserAsset) -> Iterable[AssetSpec]:
    return [asset] if isinstance(asset, AssetSpec) else asset.specs


def claimed_features(graph: FeatureGraph, user_assets: Sequence[UserAsset]) -> dict[FeatureKey, AssetKey]:
    """Feature -> the user asset standing for it (``metaxy/feature`` metadata).

    Raises:
        MetaxyDefinitionsError: two user assets stand for one feature, or one names a feature the graph
            lacks.
    """
    claimed: dict[FeatureKey, AssetKey] = {}
    for asset in user_assets:
        for spec in _specs_of(asset):
            feature = feature_of(spec.metadata)
            if feature is None:
                continue
            if feature not in graph:
                raise MetaxyDefinitionsError(
                    f"asset {spec.key.to_user_string()} has {FEATURE_METADATA_KEY}={str(feature)!r}, which "
                    f"is not a feature of the code's graph (features: {', '.join(map(str, graph.keys))}); "
                    "fix the metadata or add the module declaring the feature to `entrypoints`"
                )
            if feature in claimed:
                raise MetaxyDefinitionsError(
                    f"assets {claimed[feature].to_user_string()} and {spec.key.to_user_string()} both "
                    f"stand for feature {feature} ({FEATURE_METADATA_KEY}); keep the entry on one of them"
                )
            claimed[feature] = spec.key
    return claimed


def elsewhere_features(
    graph: FeatureGraph, elsewhere: Mapping[FeatureKey, AssetKey] | Mapping[str, str]
) -> dict[FeatureKey, AssetKey]:
    """Feature -> the asset standing for it outside these definitions (``"video/embeddings"`` ->
    ``"pipeline/embeddings"``), checked against the graph.

    Raises:
        MetaxyDefinitionsError: a feature the graph lacks, or a key that is not a feature key.
    """
    out: dict[FeatureKey, AssetKey] = {}
    for feature, asset_key in elsewhere.items():
        try:
            key: FeatureKey | None = FeatureKey(str(feature))
        except (MetaxyError, ValueError, TypeError):
            key = None
        if key is None or key not in graph:
            raise MetaxyDefinitionsError(
                f"feature_assets_elsewhere names {str(feature)!r}, which is not a feature of the code's "
                f"graph (features: {', '.join(map(str, graph.keys))}); fix the name or add the module "
                "declaring the feature to `entrypoints`"
            )
        out[key] = asset_key if isinstance(asset_key, AssetKey) else AssetKey.from_user_string(asset_key)
    return out


def feature_asset_keys(
    graph: FeatureGraph,
    translator: MetaxyMigrationTranslator,
    claimed: Mapping[FeatureKey, AssetKey] | None = None,
) -> dict[str, AssetKey]:
    """Feature key (``"video/raw"``) -> the asset standing for it: a user's (``claimed``) or the
    translator's."""
    claimed = claimed or {}
    return {str(k): claimed.get(k) or translator.get_feature_asset_key(k) for k in graph.topological_order()}


def build_feature_assets(
    *,
    graph: FeatureGraph,
    translator: MetaxyMigrationTranslator,
    writers: Mapping[FeatureKey, Sequence[AssetKey]] | None = None,
    table_uri: Mapping[FeatureKey, str] | None = None,
    user_assets: Sequence[UserAsset] = (),
    include_features: bool = True,
    elsewhere: Mapping[FeatureKey, AssetKey] | None = None,
) -> FeatureAssets:
    """The assets of every feature of ``graph``.

    Args:
        graph: the code's feature graph.
        translator: keys, groups, kinds, metadata of feature assets.
        writers: feature -> the migration assets that write it (lineage migration -> feature).
        table_uri: feature -> its Delta table's location (credentials already removed).
        user_assets: the code location's own assets; one with ``metaxy/feature`` metadata stands for its
            feature (no asset is created for it) and gets the feature's deps added.
        include_features: create external assets for the other features (``False``: user assets only).
        elsewhere: features whose asset is defined outside these definitions (another component or module of
            the code location): no asset is made for them and their events go to the given key.

    Raises:
        MetaxyDefinitionsError: two user assets stand for one feature, or one names a feature the graph
            lacks, or a feature asset key collides with another asset.
    """
    writers = writers or {}
    table_uri = table_uri or {}
    claimed = {**elsewhere_features(graph, elsewhere or {}), **claimed_features(graph, user_assets)}
    out = FeatureAssets(keys=feature_asset_keys(graph, translator, claimed))

    def deps_of(key: FeatureKey) -> list[AssetKey]:
        upstream = [out.keys[str(u)] for u in graph.upstream(key)]
        return list(dict.fromkeys([*upstream, *writers.get(key, ())]))

    if include_features:
        for key in graph.topological_order():
            if key in claimed:
                continue
            out.specs.append(
                translator.get_feature_asset_spec(
                    graph.spec(key), graph, deps=deps_of(key), table_uri=table_uri.get(key)
                )
            )
    by_asset_key = {asset_key: feature for feature, asset_key in claimed.items()}
    for asset in user_assets:
        out.user_assets.append(_with_lineage(asset, by_asset_key, deps_of))
    return out


def _with_lineage(
    asset: UserAsset,
    features: Mapping[AssetKey, FeatureKey],
    deps_of: Callable[[FeatureKey], list[AssetKey]],
) -> UserAsset:
    """``asset`` with its feature's upstream features and writing migrations added to its deps."""

    def add(spec: AssetSpec) -> AssetSpec:
        feature = features.get(spec.key)
        if feature is None:
            return spec
        have = {dep.asset_key for dep in spec.deps}
        extra = [key for key in deps_of(feature) if key not in have and key != spec.key]
        return spec.merge_attributes(deps=extra) if extra else spec

    if isinstance(asset, AssetSpec):
        return add(asset)
    if not any(spec.key in features for spec in asset.specs):
        return asset
    try:
        return asset.map_asset_specs(add)
    except Exception as exc:  # graph-backed assets cannot take extra deps in Dagster 1.13
        keys = ", ".join(s.key.to_user_string() for s in asset.specs if s.key in features)
        warnings.warn(
            f"metaxy: cannot add the feature lineage to asset {keys} ({exc}); it still receives the "
            "migrations' events; declare its deps yourself (upstream features, the migrations writing it)",
            stacklevel=2,
        )
        return asset


__all__ = [
    "FeatureAssets",
    "build_feature_assets",
    "claimed_features",
    "elsewhere_features",
    "feature_asset_keys",
    "feature_of",
]
