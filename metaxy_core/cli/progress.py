"""Progress on the command line, on stderr (stdout keeps the result, so ``--format json`` stays parseable).

On a terminal: a live line per running step (bar, rows done / total, rate, ETA) under a spinner naming the
last finished step; a finished step leaves one permanent line. Piped (CI logs, ``2> file``): plain lines,
one per step every ``every_seconds`` or 10 % of its total, and its last one.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn

from metaxy_core.migrations.results import StepResult
from metaxy_core.reporting import Progress as StepProgress
from metaxy_core.reporting import throttled


class ProgressView:
    """The ``on_step`` and ``on_progress`` callbacks of one command, rendered on ``console`` (stderr).

    Example:
        >>> with ProgressView(console, "applying") as view:
        ...     commands.migrations_apply(project, on_step=view.step, on_progress=view.progress)
    """

    def __init__(self, console: Console, title: str, *, every_seconds: float = 10.0) -> None:
        self.console = console
        self.live = console.is_terminal
        self._bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            console=console,
            transient=True,
            disable=not self.live,
        )
        self._overall = self._bar.add_task(escape(title), total=None)
        self._tasks: dict[str, TaskID] = {}
        self._plain = throttled(self._print, every_seconds=every_seconds, every_fraction=0.1)

    def __enter__(self) -> ProgressView:
        self._bar.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._bar.stop()

    def step(self, step: StepResult) -> None:
        """A step finished: name it next to the spinner."""
        if self.live:
            text = f"{step.op_id} on {step.feature_key}: {step.status} ({step.rows:,} rows)"
            self._bar.update(self._overall, description=escape(text))

    def progress(self, progress: StepProgress) -> None:
        """A long step moved: update its live line, or print a plain line now and then."""
        if not self.live:
            self._plain(progress)
            return
        task = self._tasks.get(progress.label)
        if progress.finished:
            if task is not None:
                self._bar.remove_task(self._tasks.pop(progress.label))
            self._print(progress)
            return
        if task is None:
            task = self._tasks[progress.label] = self._bar.add_task("", total=None)
        self._bar.update(
            task, description=escape(progress.describe()), completed=progress.done, total=progress.total
        )

    def _print(self, progress: StepProgress) -> None:
        self.console.print(escape(progress.describe()), highlight=False)
