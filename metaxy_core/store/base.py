"""The metadata store interface and the result of ``resolve_update``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import polars as pl

from metaxy_core.graph.graph import FeatureGraph
from metaxy_core.graph.keys import CoercibleToFeatureKey
from metaxy_core.store.frames import IncrementData, IncrementFrame

FeatureRef = CoercibleToFeatureKey | type
FrameLike = pl.DataFrame | pl.LazyFrame


@dataclass(frozen=True)
class Increment:
    """Samples to (re)compute for a feature: ``added`` (new), ``changed`` (provenance differs), ``removed``.

    Frames are lazy; :meth:`collect` materialises all three (they share the scans, so collect them together).
    Each frame carries the id columns, the expected ``metaxy_provenance_by_field`` and ``metaxy_provenance``
    (``removed`` carries the stored ones), plus any user columns of the ``samples`` passed in.

    The frames are polars frames that also answer the narwhals idioms of Metaxy's documented migrations
    (``len(increment.added)``, ``increment.added.to_native()``; see :mod:`metaxy_core.store.frames`), and
    Metaxy 0.1.x's names ``new`` / ``stale`` / ``orphaned`` read ``added`` / ``changed`` / ``removed``.
    """

    added: pl.LazyFrame | pl.DataFrame
    changed: pl.LazyFrame | pl.DataFrame
    removed: pl.LazyFrame | pl.DataFrame

    def __post_init__(self) -> None:
        for name in ("added", "changed", "removed"):
            frame = getattr(self, name)
            wrapped = (
                IncrementData.wrap(frame) if isinstance(frame, pl.DataFrame) else IncrementFrame.wrap(frame)
            )
            object.__setattr__(self, name, wrapped)  # frozen dataclass: set once, here

    def collect(self) -> Increment:
        frames = [
            f.lazy() if isinstance(f, pl.DataFrame) else f for f in (self.added, self.changed, self.removed)
        ]
        added, changed, removed = pl.collect_all(frames)
        return Increment(added=added, changed=changed, removed=removed)

    @property
    def new(self) -> pl.LazyFrame | pl.DataFrame:
        """``added`` under Metaxy 0.1.x's name."""
        return self.added

    @property
    def stale(self) -> pl.LazyFrame | pl.DataFrame:
        """``changed`` under Metaxy 0.1.x's name."""
        return self.changed

    @property
    def orphaned(self) -> pl.LazyFrame | pl.DataFrame:
        """``removed`` under Metaxy 0.1.x's name."""
        return self.removed

    def counts(self) -> dict[str, int]:
        eager = self.collect()
        return {name: getattr(eager, name).height for name in ("added", "changed", "removed")}


class MetadataStore(ABC):
    """Where feature metadata lives. :class:`~metaxy_core.DeltaMetadataStore` is the implementation.

    Every method that takes a feature accepts a Feature class, a :class:`FeatureKey` or a ``"a/b"`` string,
    and uses ``graph`` (default: :meth:`FeatureGraph.get_active`) to know the feature's current version.
    """

    def __enter__(self) -> MetadataStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:  # noqa: B027  (an optional hook: most stores hold nothing to release)
        """Release resources; the Delta store holds none between calls, so this is a no-op by default."""

    @abstractmethod
    def write_metadata(self, feature: FeatureRef, df: FrameLike, *, graph: FeatureGraph | None = None) -> int:
        """Append rows for ``feature`` stamped with its current versions; returns the row count."""

    @abstractmethod
    def read_metadata(
        self,
        feature: FeatureRef,
        *,
        filters: pl.Expr | list[pl.Expr] | None = None,
        columns: list[str] | None = None,
        feature_version: str | None = None,
        include_history: bool = False,
        graph: FeatureGraph | None = None,
    ) -> pl.LazyFrame:
        """The latest row per sample of the feature's current version (see the implementation for options)."""

    @abstractmethod
    def resolve_update(
        self, feature: FeatureRef, *, samples: FrameLike | None = None, graph: FeatureGraph | None = None
    ) -> Increment:
        """Compare expected provenance (from upstream data versions) against what is stored."""
