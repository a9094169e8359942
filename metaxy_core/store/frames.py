"""Frames in and out of the store: what kinds of frame the store accepts, and the increments it returns.

The store computes in polars, but code written for Metaxy speaks narwhals (Metaxy's frame API) and pipelines
hold pyarrow tables or pandas frames. :func:`to_polars_lazy` is the one place such a frame becomes a polars
lazy frame, at the store's public entry points, so everything behind them sees polars only. Frames of any
other kind are refused with a message naming the accepted kinds (rather than failing later with a polars
error about a method or dtype the user never wrote).

:class:`IncrementFrame` is what ``resolve_update`` returns for ``added`` / ``changed`` / ``removed``: a polars
lazy frame that also answers the narwhals idioms Metaxy's documented migrations use on increments
(``len(frame)``, ``frame.to_native()``), so such code runs unchanged.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from metaxy_core.errors import MetadataSchemaError

#: what the store's frame parameters accept, as worded in errors and docs
ACCEPTED_FRAMES = (
    "a polars DataFrame or LazyFrame, a narwhals DataFrame or LazyFrame, or a frame narwhals can wrap "
    "(pyarrow Table, pandas DataFrame, ...)"
)


def to_polars(frame: Any, *, what: str) -> pl.DataFrame | pl.LazyFrame:
    """``frame`` as a polars frame (eager stays eager, lazy stays lazy), whatever library it comes from.

    Polars frames pass through (no copy); narwhals frames are unwrapped (a non-polars backend is converted,
    collected first when lazy); pyarrow tables, pandas frames and the other eager frames narwhals knows are
    converted through narwhals.

    Args:
        frame: the frame a caller handed to the store.
        what: how the parameter is named in errors, e.g. ``"rows for feature video/raw"``.

    Raises:
        MetadataSchemaError: ``frame`` is not a frame of any accepted kind (the message names them).
    """
    if isinstance(frame, (pl.DataFrame, pl.LazyFrame)):
        return frame
    import narwhals as nw  # only for frames of other libraries: keeps ~40 ms off every process' start-up

    wrapped: Any = frame
    if not isinstance(frame, (nw.DataFrame, nw.LazyFrame)):
        try:
            wrapped = nw.from_native(frame)
        except TypeError:
            wrapped = None
    if isinstance(wrapped, (nw.DataFrame, nw.LazyFrame)):
        native = wrapped.to_native()
        if isinstance(native, (pl.DataFrame, pl.LazyFrame)):
            return native
        eager = wrapped.collect() if isinstance(wrapped, nw.LazyFrame) else wrapped
        return eager.to_polars()
    raise MetadataSchemaError(
        f"{what} must be {ACCEPTED_FRAMES}; got {type(frame).__module__}.{type(frame).__qualname__}"
    )


def to_polars_lazy(frame: Any, *, what: str) -> pl.LazyFrame:
    """``frame`` as a polars lazy frame (see :func:`to_polars`)."""
    return to_polars(frame, what=what).lazy()


class IncrementFrame(pl.LazyFrame):
    """A polars lazy frame of an increment, with the narwhals idioms Metaxy's migrations use on increments.

    Everything polars offers works as on any lazy frame (and frames derived from it keep these extras).
    ``len(frame)`` counts its rows (one query); ``frame.to_native()`` and ``frame.to_polars()`` collect it
    into a polars ``DataFrame``, the frame Metaxy's eager increments hand out, so
    ``nw.from_native(increment.added.to_native())`` works as it did there.
    """

    @classmethod
    def wrap(cls, frame: pl.LazyFrame | pl.DataFrame) -> IncrementFrame:
        """``frame`` (lazy or eager) as an increment frame (no copy, nothing computed)."""
        lazy = frame.lazy()
        return lazy if isinstance(lazy, cls) else cls._from_pyldf(lazy._ldf)

    def __len__(self) -> int:
        return int(self.select(pl.len()).collect().item())

    def to_native(self) -> pl.DataFrame:
        """The rows as a polars ``DataFrame`` (what a narwhals frame's ``to_native()`` gives back)."""
        return self.collect()

    def to_polars(self) -> pl.DataFrame:
        """The rows as a polars ``DataFrame`` (narwhals' name for it)."""
        return self.collect()


class IncrementData(pl.DataFrame):
    """A collected increment frame (:meth:`Increment.collect`): a polars ``DataFrame`` that also answers
    ``to_native()`` / ``to_polars()`` (itself), as Metaxy's collected increments (narwhals frames) do."""

    @classmethod
    def wrap(cls, frame: pl.DataFrame) -> IncrementData:
        """``frame`` as a collected increment frame (no copy)."""
        return frame if isinstance(frame, cls) else cls._from_pydf(frame._df)

    def to_native(self) -> pl.DataFrame:
        """The rows as a polars ``DataFrame`` (this frame)."""
        return self

    def to_polars(self) -> pl.DataFrame:
        """The rows as a polars ``DataFrame`` (this frame)."""
        return self


def apply_filter(lf: pl.LazyFrame, expr: Any) -> pl.LazyFrame:
    """``lf`` filtered by a polars expression or a narwhals one (Metaxy's ``filters=[nw.col(...) == x]``).

    Raises:
        MetadataSchemaError: ``expr`` is neither.
    """
    if isinstance(expr, pl.Expr):
        return lf.filter(expr)
    import narwhals as nw  # see to_polars

    if isinstance(expr, nw.Expr):
        return nw.from_native(lf).filter(expr).to_native()
    raise MetadataSchemaError(
        f"a filter must be a polars or narwhals expression (e.g. pl.col('x') == 1); got {type(expr).__name__}"
    )
