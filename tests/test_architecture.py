"""The architecture as tests: layers that only point down, no private imports across packages, small modules.

Every ``import`` in ``metaxy_core/`` and ``metaxy_dagster/`` is read with ``ast`` -- at module level, inside
functions and under ``TYPE_CHECKING`` alike (a lazy import is still a dependency) -- and checked against the
layer order ``errors -> graph -> store -> migrations -> config -> commands -> cli`` of
``shared/ARCHITECTURE.md``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metaxy_core", "metaxy_dagster")
MAX_LINES = 600

#: module (or package) -> layer; a module may import its own layer and the ones below. The longest matching
#: prefix decides. ``_process`` (pid/host liveness) is a bottom helper used by the store and the lock;
#: ``config`` loads features, stores and chains (so it sits above migrations) and the commands use it; the
#: package's ``__init__`` re-exports the config, so it sits with it. ``testing`` may use everything in
#: metaxy_core and nothing there may use it; metaxy_dagster sits on top of metaxy_core.
LAYERS: dict[str, int] = {
    "metaxy_core._process": 0,
    "metaxy_core.startup": 0,  # loading our modules cheaply: the package, the CLI and the plugin use it
    "metaxy_core.reporting": 0,  # progress values and meters: every layer reports long work
    "metaxy_core.errors": 0,
    "metaxy_core.graph": 1,
    "metaxy_core.store": 2,
    "metaxy_core.migrations": 3,
    "metaxy_core.config": 4,
    "metaxy_core": 4,  # the package's __init__ (the public API)
    "metaxy_core.commands": 5,
    "metaxy_core.cli": 6,
    "metaxy_core.testing": 7,
    "metaxy_dagster": 8,
}
#: importers allowed to reach into a library's privates (``dagster._core``): the one compatibility shim
PRIVATE_IMPORT_SHIMS = {"metaxy_dagster._compat": ("dagster",)}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    package: str  # the package the importing file belongs to
    where: str  # file:line
    target: str  # dotted name of the imported module (or of the module a name is imported from)
    name: str | None  # the imported name, for ``from target import name`` when it is not a module

    def __str__(self) -> str:
        what = f"from {self.target} import {self.name}" if self.name else f"import {self.target}"
        return f"{self.where}: {what}"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(path: Path, root: Path = ROOT) -> str:
    """The package a file belongs to (a package's ``__init__`` belongs to the package itself)."""
    return module_name(path.parent / "__init__.py", root)


def is_module(dotted: str, root: Path = ROOT) -> bool:
    """Whether ``dotted`` is one of our modules or packages (third-party ones are never ours)."""
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports_of(path: Path, root: Path = ROOT) -> Iterator[Import]:
    """Every import in ``path``, wherever it is written (module level, functions, ``if TYPE_CHECKING``)."""
    importer = module_name(path, root)
    package = package_of(path, root)
    file = path.relative_to(root).as_posix()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(importer, package, f"{file}:{node.lineno}", alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing file's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if alias.name != "*" and target.startswith(PACKAGES) and is_module(submodule, root):
                    yield Import(importer, package, f"{file}:{node.lineno}", submodule, None)
                else:
                    yield Import(importer, package, f"{file}:{node.lineno}", target, alias.name)


def all_imports(root: Path = ROOT) -> list[Import]:
    return [
        imp
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
        for imp in imports_of(path, root)
    ]


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (longest matching prefix in LAYERS), None for a module outside our packages."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def layer_name(module: str) -> str:
    parts = module.split(".")
    return next(".".join(parts[:end]) for end in range(len(parts), 0, -1) if ".".join(parts[:end]) in LAYERS)


def upward_edges(imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        if not imp.target.startswith(PACKAGES):
            continue
        mine, theirs = layer_of(imp.importer), layer_of(imp.target)
        if mine is None or theirs is None:
            continue  # reported by test_every_module_has_a_layer
        if theirs > mine:
            problems.append(
                f"{imp}  ({layer_name(imp.importer)} may not import {layer_name(imp.target)}: "
                f"{layer_name(imp.target)} is a higher layer)"
            )
    return problems


def _private_part(dotted: str) -> int | None:
    """Index of the first private component (``_x``, not ``__x__``) after the top-level package, or None."""
    parts = dotted.split(".")
    for i, part in enumerate(parts[1:], start=1):
        if part.startswith("_") and not (part.startswith("__") and part.endswith("__")):
            return i
    return None


def private_imports(imports: list[Import], root: Path = ROOT) -> list[str]:
    """Imports of a private module or name from outside the package that owns it.

    ``a.b._m`` (a private module) and ``_n`` imported from ``a.b.m`` (a private name) are owned by package
    ``a.b`` (``_n`` from a package ``a.b`` itself: by ``a.b``); only modules inside the owner may import them.
    """
    problems = []
    for imp in imports:
        dotted = imp.target if imp.name is None else f"{imp.target}.{imp.name}"
        index = _private_part(dotted)
        if index is None:
            continue
        parts = dotted.split(".")
        owner = ".".join(parts[:index])
        if imp.name is not None and index == len(parts) - 1 and not is_module(imp.target, root):
            pass  # a private name of a third-party module: never ours to import
        elif (
            imp.name is not None
            and index == len(parts) - 1
            and not ((root.joinpath(*imp.target.split(".")) / "__init__.py").is_file())
        ):
            owner = ".".join(parts[: index - 1])  # a private name of a plain module: owned by its package
        if imp.package == owner or imp.package.startswith(owner + "."):
            continue
        if any(
            owner == lib or owner.startswith(lib + ".") for lib in PRIVATE_IMPORT_SHIMS.get(imp.importer, ())
        ):
            continue
        problems.append(f"{imp}  (private to {owner})")
    return problems


# ------------------------------------------------------------------------------------------------ tests
def test_every_module_has_a_layer() -> None:
    missing = [
        module_name(path)
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if layer_of(module_name(path)) is None
    ]
    assert not missing, f"modules without a layer (add them to LAYERS in {Path(__file__).name}): {missing}"


def test_layers_only_point_down() -> None:
    problems = upward_edges(all_imports())
    assert not problems, "upward imports (lazy ones count too):\n" + "\n".join(problems)


def test_metaxy_core_never_imports_metaxy_dagster_or_its_test_helpers() -> None:
    problems = [
        str(imp)
        for imp in all_imports()
        if (imp.importer.startswith("metaxy_core") and imp.target.startswith("metaxy_dagster"))
        or (
            imp.target.startswith("metaxy_core.testing")
            and not imp.importer.startswith("metaxy_core.testing")
        )
    ]
    assert not problems, "\n".join(problems)


def test_no_private_imports_across_packages() -> None:
    problems = private_imports(all_imports())
    assert not problems, (
        "private modules or names imported from outside their package (make what is needed a small public "
        "function; private Dagster imports go through metaxy_dagster/_compat.py):\n" + "\n".join(problems)
    )


def test_no_module_exceeds_the_size_limit() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    too_big = {path: n for path, n in sorted(sizes.items()) if n > MAX_LINES}
    assert not too_big, f"modules over {MAX_LINES} lines (split them by concept): {too_big}"


def test_importing_the_library_and_its_test_helpers_needs_no_test_extras() -> None:
    code = (
        "import sys, metaxy_core, metaxy_core.testing, metaxy_core.cli.app\n"
        "test_only = {'pytest', '_pytest', 'moto', 'hypothesis'}\n"
        "leaked = sorted({m.split('.')[0] for m in sys.modules} & test_only)\n"
        "print(','.join(leaked))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"importing metaxy_core pulls in test-only packages: {proc.stdout}"


# ------------------------------------------------------------------- the checks catch what they should
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A miniature tree with one violation of each kind (and allowed imports next to them)."""
    return _tree(
        tmp_path,
        {
            "metaxy_core/__init__.py": "",
            "metaxy_core/_process.py": "",
            "metaxy_core/errors.py": "",
            "metaxy_core/store/__init__.py": "",
            "metaxy_core/store/_io.py": "def _helper(): ...\n",
            "metaxy_core/store/delta.py": (
                "from metaxy_core.store._io import _helper\n"  # own package: allowed
                "from metaxy_core._process import alive\n"  # a bottom helper of the parent package: allowed
                "from . import _io\n"
                "def f():\n"
                "    from metaxy_core.migrations.lock import TABLE  # lazy, upward\n"
            ),
            "metaxy_core/migrations/__init__.py": "",
            "metaxy_core/migrations/lock.py": (
                "from metaxy_core.store.delta import _SCOPE\n"  # private name across packages
                "from metaxy_core.store import _io\n"  # private module across packages
                "from ..errors import MetaxyError\n"
            ),
            "metaxy_dagster/__init__.py": "",
            "metaxy_dagster/_compat.py": "from dagster._core.definitions import X\n",
            "metaxy_dagster/jobs.py": "from dagster._core.definitions import X\nimport metaxy_core.store\n",
        },
    )


def test_the_layer_check_catches_a_lazy_upward_import(planted: Path) -> None:
    imports = all_imports(planted)
    problems = upward_edges(imports)
    assert (
        len(problems) == 1
        and "metaxy_core/store/delta.py:5: from metaxy_core.migrations.lock import TABLE" in problems[0]
    )


def test_the_private_check_catches_names_modules_and_dagster_internals(planted: Path) -> None:
    imports = all_imports(planted)
    problems = private_imports(imports, planted)
    assert [p.split("  ")[0] for p in problems] == [
        "metaxy_core/migrations/lock.py:1: from metaxy_core.store.delta import _SCOPE",
        "metaxy_core/migrations/lock.py:2: import metaxy_core.store._io",
        "metaxy_dagster/jobs.py:1: from dagster._core.definitions import X",
    ]
