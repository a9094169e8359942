"""Property-based: whatever YAML a migration file holds, the loader either loads it or raises one of the
project's own errors (a ``MetaxyError`` naming the file) -- never a raw ``TypeError``, ``RecursionError``,
pydantic ``ValidationError`` or a hang, and never executes anything."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaxy_core.errors import MetaxyError
from metaxy_core.migrations.loader import load_chain, load_migration_file

from . import fixture_ops
from ._support import G1, G2

FILE = "20250101_000000_fuzz.yaml"
KNOWN_KEYS = [
    "migration_id",
    "created_at",
    "parent",
    "description",
    "from_snapshot_version",
    "to_snapshot_version",
    "ops",
    "kind",
    "snapshot_version",
    "type",
    "id",
    "reason",
    "features",
    "feature_key",
    "batch_rows",
    "operations",
    "from_project_version",
    "id",
    "migration_type",
    "dsn",
    "sleep_s",
]
# Operation types are drawn from a fixed list: importing arbitrary module names could run their top-level
# code.
TYPES = [
    f"{fixture_ops.__name__}.SmallBatchReconciliation",
    f"{fixture_ops.__name__}.LeakyBackfill",
    "metaxy_core.migrations.ops.DataVersionReconciliation",
    "DataVersionReconciliation",
    "metaxy_core.migrations.ops.MetadataBackfill",
    "metaxy_core.migrations.ops.BaseOperation",
    "os.system",
    "builtins.eval",
    "subprocess.Popen",
    "no_such_module_xyz.Op",
    f"{fixture_ops.__name__}.NoSuchOp",
    "metaxy_core",
    "",
    ".",
    "a..b",
    "metaxy_core.migrations.ops.OperationError",
]

VALID: dict[str, Any] = {
    "migration_id": "20250101_000000_fuzz",
    "created_at": "2025-01-01T00:00:00+00:00",
    "parent": "initial",
    "from_snapshot_version": G1.snapshot_version,
    "to_snapshot_version": G2.snapshot_version,
    "ops": [
        {"type": TYPES[0], "id": "up", "features": ["video/cap", "video/emb"], "batch_rows": 40},
        {"type": "metaxy_core.migrations.ops.DataVersionReconciliation", "features": ["video/joint"]},
    ],
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(TYPES),
    st.sampled_from(
        [
            "initial",
            "20250101_000000_fuzz",
            "2025-01-01",
            "video/raw",
            "../x",
            "2025-01-01T00:00:00",
            "a/../../b",
            "20250101_000000",
        ]
    ),
    st.datetimes(),
    st.dates(),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12), st.integers(), st.booleans())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)
documents = st.dictionaries(keys, values, max_size=8)


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A valid migration with a few random edits (delete, replace, add, at the top or inside an operation)."""
    import copy

    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        target: dict[Any, Any] = doc
        if (
            draw(st.booleans())
            and isinstance(doc.get("ops"), list)
            and doc["ops"]
            and isinstance(doc["ops"][0], dict)
        ):
            target = (
                doc["ops"][draw(st.integers(0, len(doc["ops"]) - 1))]
                if all(isinstance(o, dict) for o in doc["ops"])
                else doc
            )
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete" and target:
            target.pop(draw(st.sampled_from(sorted(target, key=str))), None)
        elif action == "replace" and target:
            target[draw(st.sampled_from(sorted(target, key=str)))] = draw(values)
        else:
            target[draw(keys)] = draw(values)
    return doc


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


COUNT = {"inputs": 0, "loaded": 0, "refused": 0}


def _feed(directory: Path, text: str) -> None:
    path = directory / FILE
    path.write_text(text, encoding="utf-8")
    COUNT["inputs"] += 1
    try:
        load_migration_file(path)
        COUNT["loaded"] += 1
    except MetaxyError as exc:
        COUNT["refused"] += 1
        assert str(exc).startswith(str(path)), f"the error does not name the file: {exc}"


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@FUZZ
@given(doc=documents)
def test_random_mappings_only_raise_metaxy_errors(workdir: Path, doc: dict[Any, Any]) -> None:
    _feed(workdir, _dump(doc))


@FUZZ
@given(doc=mutated())
def test_mutations_of_a_valid_migration_only_raise_metaxy_errors(workdir: Path, doc: dict[str, Any]) -> None:
    _feed(workdir, _dump(doc))


@FUZZ
@given(doc=values)
def test_any_yaml_value_at_the_top_level_only_raises_metaxy_errors(workdir: Path, doc: Any) -> None:
    _feed(workdir, _dump(doc))


@FUZZ
@given(
    text=st.text(
        alphabet=st.sampled_from(list("migration_id: []{}-,&*!|>'\"#\n\t %@`?:abc0123\\")), max_size=120
    )
)
def test_random_yaml_syntax_only_raises_metaxy_errors(workdir: Path, text: str) -> None:
    _feed(workdir, text)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    docs=st.lists(mutated(), min_size=1, max_size=3),
    ids=st.lists(
        st.sampled_from(["20250101_000000_a", "20250102_000000_b", "20250103_000000_c"]),
        min_size=3,
        max_size=3,
    ),
    parents=st.lists(
        st.sampled_from(
            ["initial", "20250101_000000_a", "20250102_000000_b", "20250103_000000_c", "20240101_000000_gone"]
        ),
        min_size=3,
        max_size=3,
    ),
)
def test_random_chains_only_raise_metaxy_errors(
    docs: list[dict[str, Any]], ids: list[str], parents: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as d:
        for doc, mid, parent in zip(docs, ids, parents, strict=False):
            doc = {**doc, "migration_id": mid, "parent": parent}
            (Path(d) / f"{mid}.yaml").write_text(_dump(doc))
        COUNT["inputs"] += 1
        try:
            load_chain(Path(d))
        except MetaxyError:
            COUNT["refused"] += 1


def test_fuzz_figures() -> None:
    """Runs last in this file (pytest keeps file order): the number of generated inputs, for the docs."""
    print("fuzz inputs:", COUNT)
    assert COUNT["inputs"] >= 1000 and COUNT["refused"] > 0
