"""A project folder on disk driven through the ``metaxy`` command line, in process, as a user drives it.

Each :meth:`ProjectDir.run` imports the project's modules afresh into a fresh feature graph (as a new
``metaxy`` process would), so a test can change the code between two commands (bump a code version through
an environment variable) and migration files are loaded from disk every time.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from metaxy_core.cli.app import main
from metaxy_core.commands import Project, open_project
from metaxy_core.graph import FeatureGraph


@dataclass(frozen=True)
class CliRun:
    """What one ``metaxy`` command printed and its exit code."""

    code: int
    out: str
    err: str

    @property
    def failed_lines(self) -> list[str]:
        """The ``FAILED:`` lines on stderr (a user error is exactly one)."""
        return [line for line in self.err.splitlines() if line.startswith("FAILED:")]


class ProjectDir:
    """``metaxy.toml``, the project's modules and its migrations folder under ``root``.

    Args:
        root: the project folder (created).
        name: the project's name in ``metaxy.toml``.
        modules: module name -> source; the first is the entrypoint that declares the features.
        store: the ``[store]`` table's ``root`` (default: ``.metaxy/store`` under ``root``).
        storage_options: the ``[store.storage_options]`` table (values may be ``${VAR}``).
    """

    def __init__(
        self,
        root: Path,
        *,
        modules: Mapping[str, str],
        name: str = "demo",
        store: str | None = None,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.modules = list(modules)
        for module, source in modules.items():
            self.write(f"{module}.py", source)
        lines = [f'project = "{name}"', f'entrypoints = ["{self.modules[0]}"]']
        if store is not None or storage_options:
            lines += ["", "[store]", f'root = "{store or ".metaxy/store"}"']
        if storage_options:
            lines += ["", "[store.storage_options]", *(f'{k} = "{v}"' for k, v in storage_options.items())]
        self.write("metaxy.toml", "\n".join(lines) + "\n")

    @property
    def migrations(self) -> Path:
        return self.root / ".metaxy" / "migrations"

    def write(self, relative: str, text: str) -> Path:
        """Write ``text`` (dedented) at ``root/relative`` and return the path."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def migration(self, filename: str, text: str) -> Path:
        """Write a migration file (dedented) into the migrations folder."""
        return self.write(f".metaxy/migrations/{filename}", text)

    def run(self, *args: str, env: Mapping[str, str | None] | None = None) -> CliRun:
        """``metaxy ARGS`` with this project's config; ``env`` is set (None: unset) for the command only."""
        out, err = io.StringIO(), io.StringIO()
        with self.fresh(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--config", str(self.root / "metaxy.toml"), *args])
        return CliRun(code, out.getvalue(), err.getvalue())

    @contextlib.contextmanager
    def session(self, env: Mapping[str, str | None] | None = None) -> Iterator[Project]:
        """The loaded project (graph, store, chain) as commands see it, with fresh modules and graph."""
        with self.fresh(env):
            yield open_project(self.root / "metaxy.toml")

    @contextlib.contextmanager
    def fresh(self, env: Mapping[str, str | None] | None = None) -> Iterator[None]:
        """A fresh feature graph and freshly imported project and migration modules, with ``env`` set."""
        saved = {k: os.environ.get(k) for k in env or {}}
        for key, value in (env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._forget_modules()
        try:
            with FeatureGraph().use():
                yield
        finally:
            self._forget_modules()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _forget_modules(self) -> None:
        for name in [n for n in sys.modules if n in self.modules or n.startswith("_metaxy_migrations.")]:
            sys.modules.pop(name, None)
