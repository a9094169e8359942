"""Progress of long steps: rows done out of a total, the rate and the time left, reported while a step runs.

Long work (a reconciliation's buckets, a backfill's batches, maintenance's tables) reports through one kind of
callback, ``Callable[[Progress], None]``. The engine produces :class:`Progress` values with a
:class:`ProgressMeter`; the CLI renders them (a live line on a terminal, plain lines when piped) and Dagster
logs them. :func:`throttled` keeps a log readable: it passes an update on only every so many seconds or
percent, and always the last one.

This module sits at the bottom of the layers (nothing here knows about stores or migrations), so every layer
can report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """Where one long step stands.

    Attributes:
        label: what is running, e.g. ``20250101_000000_clip_v2: reconcile on video/embeddings``.
        done: units done so far.
        total: units in all, when known (an estimate from file statistics may be a little off: ``done`` is
            capped by nothing, and :attr:`fraction` by 1).
        unit: what is counted (``rows``, ``tables``...).
        elapsed_s: seconds since the step started.
        finished: the last update of the step.
    """

    label: str
    done: int
    total: int | None = None
    unit: str = "rows"
    elapsed_s: float = 0.0
    finished: bool = False

    @property
    def rate(self) -> float | None:
        """Units per second so far (None before anything was timed)."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(self.done / self.total, 1.0)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None without a total or a rate)."""
        if self.finished:
            return 0.0
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(self.total - self.done, 0) / rate

    def describe(self) -> str:
        """One plain line: ``label: 1,200,000 / 3,000,000 rows (40%), 650k rows/s, ETA 3s``."""
        text = f"{self.label}: {self.done:,}"
        if self.total is not None:
            text += f" / {self.total:,}"
        text += f" {self.unit}"
        if self.fraction is not None:
            text += f" ({self.fraction:.0%})"
        if self.rate is not None:
            text += f", {human_count(self.rate)} {self.unit}/s"
        if self.finished:
            text += f", done in {human_duration(self.elapsed_s)}"
        elif self.eta_s is not None:
            text += f", ETA {human_duration(self.eta_s)}"
        return text


ProgressCallback = Callable[[Progress], None]


@dataclass
class ProgressMeter:
    """Turns "n more done" into :class:`Progress` updates for ``callback`` (nothing happens without one).

    Example:
        >>> meter = ProgressMeter("backfill video/files", callback, total=1_000_000)
        >>> for batch in batches:
        ...     write(batch)
        ...     meter.advance(batch.height)
        >>> meter.finish()
    """

    label: str
    callback: ProgressCallback | None = None
    total: int | None = None
    unit: str = "rows"
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    _start: float = field(init=False)

    def __post_init__(self) -> None:
        self._start = self.clock()

    def update(self, done: int, total: int | None = None) -> None:
        """Report ``done`` units so far (and a new ``total`` when it became known)."""
        self.done = done
        if total is not None:
            self.total = total
        self._emit(finished=False)

    def advance(self, n: int) -> None:
        """Report ``n`` more units done."""
        self.update(self.done + n)

    def finish(self) -> None:
        """Report the step's end (the total becomes what was done when it was unknown or an estimate)."""
        self.total = self.done
        self._emit(finished=True)

    def _emit(self, *, finished: bool) -> None:
        if self.callback is not None:
            progress = Progress(
                self.label, self.done, self.total, self.unit, self.clock() - self._start, finished
            )
            self.callback(progress)


def throttled(
    callback: ProgressCallback,
    *,
    every_seconds: float = 10.0,
    every_fraction: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
) -> ProgressCallback:
    """``callback``, called at most every ``every_seconds`` per label unless the step moved by
    ``every_fraction`` of its total since the last call; the first and the finishing update always pass
    (an update at 100 % does not: the finishing one follows it).

    For logs (Dagster's event log, a CI job's output): a reconciliation of 100 buckets says where it is
    every 10 s or 10 %, not 100 times.
    """
    last: dict[str, tuple[float, float]] = {}
    lock = threading.Lock()

    def maybe(progress: Progress) -> None:
        now = clock()
        fraction = progress.fraction or 0.0
        with lock:
            seen = last.get(progress.label)
            due = progress.finished or (
                fraction < 1.0  # at 100 % the finishing update follows: one line, not two
                and (
                    seen is None
                    or now - seen[0] >= every_seconds
                    or fraction - seen[1] >= every_fraction - 1e-9
                )  # 0.3 - 0.2 < 0.1 in floats
            )
            if due:
                last[progress.label] = (now, fraction)
                if progress.finished:
                    last.pop(progress.label)
        if due:
            callback(progress)

    return maybe


def human_count(value: float) -> str:
    """``950``, ``12.3k``, ``4.56M``: counts and rates at a glance."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            scaled = value / limit
            return f"{scaled:.3g}{suffix}"
    return f"{value:.0f}"


def human_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
