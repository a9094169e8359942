"""The bad-input catalogue: every way a user can get a file, a setting or a frame wrong ends in ONE message
that names the file or field at fault and the fix, a non-zero exit code, and nothing written to the store.

CLI cases run ``metaxy_core.cli.app.main([...])`` in-process (the console script's entry point; a handful also
go through the installed ``metaxy`` script in a subprocess) against a copy of a seeded project; "nothing
written" compares every file under the store root before and after. Frame and key cases call the Python API
and compare Delta table versions.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import polars as pl
import pytest
from pydantic import Field

from metaxy_core import DeltaMetadataStore, FeatureGraph, FeatureKey
from metaxy_core.cli.app import main
from metaxy_core.errors import InvalidKeyError, MetadataSchemaError, MetaxyError
from metaxy_core.store.provenance import PROVENANCE_BY_FIELD
from metaxy_core.testing.messages import pydantic_message

from . import _support as s
from .fixture_features import CAP, EMB, RAW

MIG = s.MIGRATION_FILE
VALID = s.migration_yaml()


@dataclass
class Case:
    name: str
    setup: Callable[[Path], None]
    expect: list[str]  # substrings of the one FAILED message: the file/field at fault and the fix
    argv: list[str] = field(default_factory=lambda: ["migrations", "apply"])
    code: int = 1
    env: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ set-ups
def mig(project: Path) -> Path:
    return project / ".metaxy" / "migrations" / MIG


def put(text: str, name: str = MIG) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        folder = project / ".metaxy" / "migrations"
        for old in folder.iterdir():
            old.unlink()
        (folder / name).write_text(text) if isinstance(text, str) else (folder / name).write_bytes(text)

    return setup


def replace(old: str, new: str) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        text = mig(project).read_text()
        assert old in text, (old, text)
        mig(project).write_text(text.replace(old, new, 1))

    return setup


def ops(block: str) -> Callable[[Path], None]:
    return put(s.migration_yaml(ops=block))


def chain(*files: tuple[str, str]) -> Callable[[Path], None]:
    """Several migration files: (migration id, parent)."""

    def setup(project: Path) -> None:
        folder = project / ".metaxy" / "migrations"
        for old in folder.iterdir():
            old.unlink()
        for mid, parent in files:
            (folder / f"{mid}.yaml").write_text(s.migration_yaml(migration_id=mid, parent=parent))

    return setup


def toml(extra: str = "", *, root: str = "store", replace_all: str | None = None) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        if replace_all is not None:
            (project / "metaxy.toml").write_text(replace_all)
            return
        (project / "metaxy.toml").write_text(
            f'project = "{s.PROJECT}"\nentrypoints = ["relfeatures"]\n{extra}\n[store]\nroot = "{root}"\n'
        )

    return setup


def damage(table: str, how: str) -> Callable[[Path], None]:
    """Empty or cut in half the newest commit file of ``table`` (a folder under the store root)."""

    def setup(project: Path) -> None:
        log = project / "store" / table / "_delta_log"
        newest = max(log.glob("*.json"))
        data = newest.read_bytes()
        newest.write_bytes(b"" if how == "empty" else data[: len(data) // 2])
        if table == "_metaxy_system/snapshots":  # make the apply read the store's snapshots, not the files
            shutil.rmtree(project / ".metaxy" / "snapshots", ignore_errors=True)

    return setup


def entrypoint(source: str, module: str) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        (project / f"{module}.py").write_text(source)
        toml(replace_all=f'project = "{s.PROJECT}"\nentrypoints = ["{module}"]\n[store]\nroot = "store"\n')(
            project
        )

    return setup


PY_HEAD = f"""
from datetime import datetime, timezone
from pydantic import field_validator
from metaxy_core.migrations import PythonMigration, DataVersionReconciliation

FROM, TO = "{s.G1.snapshot_version}", "{s.G2.snapshot_version}"
"""
PY_CLASS = """
class Bump(PythonMigration):
    migration_id: str = "20250101_000000_bump"
    created_at: datetime = datetime(2025, 1, 1, tzinfo=timezone.utc)
    from_snapshot_version: str = FROM
    to_snapshot_version: str = TO
"""


def py(body: str) -> Callable[[Path], None]:
    return put(PY_HEAD + body, name="20250101_000000_bump.py")


def applied_then_edited(project: Path) -> None:
    with FeatureGraph().use():
        assert main(["--config", str(project / "metaxy.toml"), "migrations", "apply"]) == 0
    _forget_project_modules(project)
    mig(project).write_text(mig(project).read_text() + "description: edited afterwards\n")


BOMB = (
    "\n".join(
        [
            f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]"
            if i
            else "l0: &l0 [x, x, x, x, x, x, x, x, x, x]"
            for i in range(9)
        ]
        + ["kind: diff", "ops: *l8"]
    )
    + "\n"
)
TRAVERSAL_KEY = "- type: relops.LeakyBackfill\n    feature_key: ../../etc\n    dsn: x\n"

CASES = [
    # --- the file as YAML
    Case(
        "malformed YAML",
        put("migration_id: [unclosed\nparent: initial\n"),
        [MIG, "malformed YAML at line", "fix the syntax"],
    ),
    Case("empty file", put(""), [MIG, "must contain a YAML mapping"]),
    Case(
        "YAML list instead of a mapping",
        put("- migration_id: x\n- parent: initial\n"),
        [MIG, "must contain a YAML mapping"],
    ),
    Case("not UTF-8", put(b"migration_id: \xff\xfe\n"), [MIG, "is not UTF-8 text"]),  # type: ignore[arg-type]
    Case(
        "python/object tag",
        put("!!python/object/apply:os.system ['echo pwned']\n"),
        [MIG, "YAML tag not allowed", "remove the tag"],
    ),
    Case("YAML alias bomb", put(BOMB), [MIG, "expands to more than", "write the migration out plainly"]),
    Case(
        "deeply nested YAML",
        put(VALID.replace("ops:\n", "colour: " + "[" * 3000 + "]" * 3000 + "\nops:\n")),
        [MIG, "nested more than", "flatten the file"],
    ),
    # --- the migration's fields
    Case(
        "created_at wrong type",
        replace("'2025-01-01T00:00:00+00:00'", "yesterday"),
        [MIG, "created_at", "datetime"],
    ),
    Case(
        "naive created_at",
        replace("'2025-01-01T00:00:00+00:00'", "'2025-01-01T00:00:00'"),
        [MIG, "created_at", "timezone-aware"],
    ),
    Case(
        "unknown top-level key",
        replace("parent: initial", "parent: initial\ncolour: blue"),
        [MIG, "colour: unknown key", "remove it"],
    ),
    Case("ops not a list", replace("ops:\n", "ops: reconcile\nx_ops:\n"), [MIG, "ops", "valid list"]),
    Case(
        "unknown migration kind",
        replace("parent: initial", "parent: initial\nkind: squash"),
        [MIG, "unknown migration kind", "kind: diff"],
    ),
    Case(
        "migration id with ../",
        replace("migration_id: 20250101_000000_bump", "migration_id: ../../etc/passwd"),
        [MIG, "must look like YYYYMMDD_HHMMSS_description"],
    ),
    Case(
        "migration id with /",
        replace("migration_id: 20250101_000000_bump", "migration_id: 20250101_000000_a/b"),
        [MIG, "must look like YYYYMMDD_HHMMSS_description"],
    ),
    Case(
        "id and file name differ",
        replace("migration_id: 20250101_000000_bump", "migration_id: 20250101_000000_other"),
        [MIG, "does not match the file name", "set it to '20250101_000000_bump'"],
    ),
    Case(
        "file name not a migration name",
        put(VALID, name="bump.yaml"),
        ["bump.yaml", "file name must be YYYYMMDD_HHMMSS_description"],
    ),
    # --- operations
    Case("operation without type", ops("  - id: reconcile\n"), [MIG, "has no `type`", "import path"]),
    Case(
        "unknown operation class",
        ops("  - type: relops.NoSuchOp\n"),
        [MIG, "relops.NoSuchOp", "check the class name"],
    ),
    Case(
        "unknown operation module",
        ops("  - type: no_such_pkg.ops.Op\n"),
        [MIG, "cannot be imported", "check the spelling"],
    ),
    Case(
        "type: os.system", ops("  - type: os.system\n"), [MIG, "'os.system' is not a BaseOperation subclass"]
    ),
    Case(
        "type: builtins.eval",
        ops("  - type: builtins.eval\n"),
        [MIG, "'builtins.eval' is not a BaseOperation subclass"],
    ),
    Case(
        "type: subprocess.Popen",
        ops("  - type: subprocess.Popen\n"),
        [MIG, "'subprocess.Popen' is not a BaseOperation subclass"],
    ),
    Case(
        "abstract operation type",
        ops("  - type: metaxy_core.migrations.MetadataBackfill\n    feature_key: video/raw\n"),
        [MIG, "is abstract", "concrete subclass"],
    ),
    Case(
        "unknown operation field",
        ops("  - type: relops.SmallBatchReconciliation\n    batch_size: 5\n"),
        [MIG, "batch_size: unknown key"],
    ),
    Case(
        "operation field wrong type",
        ops("  - type: relops.SmallBatchReconciliation\n    batch_rows: many\n"),
        [MIG, "batch_rows", pydantic_message(int, "many")],
    ),
    Case("feature_key with ../", ops("  " + TRAVERSAL_KEY), [MIG, "feature_key", "'..' is not allowed"]),
    Case(
        "full-graph operation naming no feature",
        put(
            "migration_id: 20250101_000000_bump\ncreated_at: '2025-01-01T00:00:00+00:00'\n"
            "parent: initial\nkind: full_graph\n"
            "ops:\n  - type: DataVersionReconciliation\n"
        ),
        [MIG, "must name their features", "`feature_key` or `features`"],
    ),
    # --- the chain
    Case(
        "duplicate ids",
        lambda p: (put(VALID)(p), shutil.copy(mig(p), mig(p).with_suffix(".yml"))),
        ["20250101_000000_bump", "defined more than once", "rename one file"],
    ),
    Case(
        "missing parent",
        replace("parent: initial", "parent: 20240101_000000_gone"),
        [MIG, "parent 20240101_000000_gone does not exist", "point `parent` at an existing migration"],
    ),
    Case(
        "fork",
        chain(
            ("20250101_000000_a", "initial"),
            ("20250102_000000_b", "20250101_000000_a"),
            ("20250103_000000_c", "20250101_000000_a"),
        ),
        [
            "20250102_000000_b.yaml",
            "20250103_000000_c.yaml",
            "the chain forks",
            "set the parent of the later one",
        ],
    ),
    Case(
        "cycle",
        chain(
            ("20250101_000000_a", "initial"),
            ("20250102_000000_b", "20250103_000000_c"),
            ("20250103_000000_c", "20250102_000000_b"),
        ),
        ["20250102_000000_b.yaml", "form a cycle", "break it"],
    ),
    Case(
        "orphans (no root)",
        chain(("20250102_000000_b", "20250103_000000_c"), ("20250103_000000_c", "20250102_000000_b")),
        ["no migration has `parent: initial`", "set the first migration's parent to initial"],
    ),
    Case(
        "several roots",
        chain(("20250101_000000_a", "initial"), ("20250102_000000_b", "initial")),
        ["20250102_000000_b.yaml", "several migrations start the chain", "set the parent of the others"],
    ),
    Case(
        "unknown migration id argument",
        lambda p: None,
        ["20990101_000000_nope not found", "metaxy migrations list"],
        argv=["migrations", "apply", "20990101_000000_nope"],
    ),
    # --- against the store and the graph (nothing may be written before these are found)
    Case(
        "snapshot not in the store",
        replace(f"to_snapshot_version: '{s.G2.snapshot_version}'", "to_snapshot_version: 'deadbeefdeadbeef'"),
        [MIG, "deadbeefdeadbeef was never pushed", "metaxy push"],
    ),
    Case(
        "feature not in the graph (features)",
        ops("  - type: relops.SmallBatchReconciliation\n    features: [video/nope]\n"),
        [MIG, "video/nope", "not in the feature graph"],
    ),
    Case(
        "feature not in the graph (feature_key)",
        ops("  - type: relops.LeakyBackfill\n    feature_key: video/nope\n    dsn: x\n"),
        [MIG, "video/nope", "not in the feature graph"],
    ),
    Case(
        "migration edited after apply",
        applied_then_edited,
        [MIG, "was edited after it was applied", "--force"],
    ),
    # --- Python migration files
    Case(
        "python: syntax error",
        py(PY_CLASS + "    def build_operations(self)\n        return []\n"),
        ["20250101_000000_bump.py", "syntax error at line", "fix the code"],
    ),
    Case(
        "python: import error",
        py("import no_such_dependency_xyz\n" + PY_CLASS),
        ["20250101_000000_bump.py", "import failed", "install the missing package"],
    ),
    Case(
        "python: no Migration class",
        py("X = 1\n"),
        ["20250101_000000_bump.py", "exactly one Migration subclass (found 0"],
    ),
    Case(
        "python: two Migration classes",
        py(PY_CLASS + PY_CLASS.replace("class Bump", "class Bump2")),
        ["20250101_000000_bump.py", "found 2: Bump, Bump2", "move the others"],
    ),
    Case(
        "python: sys.exit at import",
        py("import sys\nsys.exit(3)\n" + PY_CLASS),
        ["20250101_000000_bump.py", "raised SystemExit"],
    ),
    Case(
        "python: failing validator",
        py(
            PY_CLASS
            + """
    description: str = "no ticket"

    @field_validator("description")
    @classmethod
    def _ticket(cls, value):
        if "JIRA-" not in value:
            raise ValueError("description must mention a JIRA ticket")
        return value
"""
        ),
        ["20250101_000000_bump.py", "description", "must mention a JIRA ticket"],
    ),
    Case(
        "python: validator raising TypeError",
        py(
            PY_CLASS
            + """
    @field_validator("parent")
    @classmethod
    def _boom(cls, value):
        raise TypeError("validators should raise ValueError")
"""
        ),
        ["20250101_000000_bump.py", "raised TypeError", "fix the validator"],
    ),
    Case(
        "python: created_at not a datetime",
        py(
            PY_CLASS.replace(
                "created_at: datetime = datetime(2025, 1, 1, tzinfo=timezone.utc)",
                'created_at: str = "yesterday"',
            )
        ),
        ["20250101_000000_bump.py", "created_at 'yesterday' is not a datetime", "tzinfo=timezone.utc"],
    ),
    Case(
        "python: build_operations raises",
        py(
            PY_CLASS
            + """
    def build_operations(self):
        return {}["missing"]
"""
        ),
        ["20250101_000000_bump.py", "build_operations() raised KeyError", "fix the migration"],
    ),
    Case(
        "python: build_operations returns os.system",
        py(
            PY_CLASS
            + """
    def build_operations(self):
        return [{"type": "os.system"}]
"""
        ),
        ["20250101_000000_bump.py", "'os.system' is not a BaseOperation subclass"],
    ),
    # --- configuration
    Case(
        "metaxy.toml not TOML",
        toml(replace_all="project = \n"),
        ["metaxy.toml", "not valid TOML", "fix the syntax"],
    ),
    Case("metaxy.toml unknown key", toml("colour = 1"), ["metaxy.toml", "colour: unknown key", "remove it"]),
    Case(
        "metaxy.toml wrong type",
        toml('lock_ttl_seconds = "soon"'),
        ["metaxy.toml", "lock_ttl_seconds", pydantic_message(float, "soon")],
    ),
    Case(
        "metaxy.toml project name with ../",
        toml(replace_all='project = "../evil"\n'),
        ["metaxy.toml", "project", "must be letters"],
    ),
    Case(
        "metaxy.toml [store] not a table",
        toml(replace_all='project = "rel"\nstore = "s3://x"\n'),
        ["metaxy.toml", "store"],
    ),
    Case(
        "unsupported store scheme",
        toml(root="gs://bucket/x"),
        ["metaxy.toml", "gs://bucket/x", "unsupported scheme", "s3://bucket/prefix"],
    ),
    Case(
        "METAXY_STORE_STORAGE_OPTIONS not JSON",
        lambda p: None,
        ["METAXY_STORE_STORAGE_OPTIONS", "not a JSON object"],
        env={"METAXY_STORE_STORAGE_OPTIONS": '{"AWS_REGION": '},
    ),
    Case(
        "METAXY_STORE_STORAGE_OPTIONS a list",
        lambda p: None,
        ["METAXY_STORE_STORAGE_OPTIONS must be a JSON object"],
        env={"METAXY_STORE_STORAGE_OPTIONS": '["a"]'},
    ),
    Case(
        "METAXY_LOCK_TTL_SECONDS negative",
        lambda p: None,
        ["lock_ttl_seconds", pydantic_message(Annotated[float, Field(gt=0)], -1)],
        env={"METAXY_LOCK_TTL_SECONDS": "-1"},
    ),
    Case(
        "METAXY_LOCK_TTL_SECONDS below the minimum",
        lambda p: None,
        ["lock_ttl_seconds", "2 s is too short", "set it to 5 or more (METAXY_LOCK_TTL_SECONDS"],
        env={"METAXY_LOCK_TTL_SECONDS": "2"},
    ),
    Case(
        "lock heartbeat longer than a third of the lease",
        toml("lock_ttl_seconds = 30\nlock_heartbeat_seconds = 20"),
        ["metaxy.toml", "lock_heartbeat_seconds: 20 s does not fit lock_ttl_seconds = 30", "at most 10"],
    ),
    Case(
        "empty commit file in a system table's log",
        damage("_metaxy_system/snapshots", "empty"),
        [
            "the Delta log of",
            "_metaxy_system/snapshots is damaged: commit file",
            "is empty (0 bytes)",
            "Restore that file from a backup",
        ],
    ),
    Case(
        "truncated commit file in a feature table's log",
        damage("video__emb", "truncated"),
        ["video__emb is damaged: commit file", "is truncated or not valid JSON (line", "Restore that file"],
        argv=["migrations", "apply", "--dry-run"],
    ),
    Case(
        "storage option refers to an unset variable",
        toml(
            replace_all='project = "rel"\nentrypoints = ["relfeatures"]\n[store]\nroot = "store"\n'
            '[store.storage_options]\nAWS_SECRET_ACCESS_KEY = "${REL_UNSET_VAR}"\n'
        ),
        ["store.storage_options.AWS_SECRET_ACCESS_KEY", "${REL_UNSET_VAR}", "not set", "export it"],
    ),
    Case(
        "unknown AWS profile",
        toml(root="s3://bucket/prefix"),
        ["cannot resolve AWS credentials", "AWS_PROFILE"],
        env={"AWS_PROFILE": "no-such-profile"},
    ),
    Case(
        "unknown entrypoint module",
        toml(replace_all='project = "rel"\nentrypoints = ["no_such_features"]\n'),
        ["metaxy.toml", "entrypoint 'no_such_features'", "could not be imported", "check `entrypoints`"],
    ),
    Case(
        "entrypoint declares a key with ../",
        entrypoint(
            "from metaxy_core import Feature, FeatureSpec, FieldSpec\n\n"
            "class Evil(Feature, spec=FeatureSpec(key='../evil', fields=[FieldSpec(key='x')])):\n    pass\n",
            "rel_evil_key",
        ),
        ["entrypoint 'rel_evil_key'", "invalid feature", "'..' is not allowed", "rel_evil_key.py, line 3"],
    ),
    Case(
        "entrypoint fails at import",
        entrypoint("raise RuntimeError('no GPU here')\n", "rel_boom"),
        ["entrypoint 'rel_boom'", "raised RuntimeError", "no GPU here", "fix the module"],
    ),
    Case(
        "entrypoint declares a feature twice",
        entrypoint(
            "from metaxy_core import Feature, FeatureSpec, FieldSpec\n\n"
            "class A(Feature, spec=FeatureSpec(key='dup/x', fields=[FieldSpec(key='x')])):\n    pass\n\n"
            "class B(Feature, spec=FeatureSpec(key='dup/x', fields=[FieldSpec(key='x')])):\n    pass\n",
            "rel_dup",
        ),
        ["feature dup/x is declared twice", "unique key"],
    ),
    # --- the command line itself
    Case("misspelt verb", lambda p: None, ["invalid choice: 'aply'"], argv=["migrations", "aply"], code=2),
]


# ------------------------------------------------------------------------------------------------ running
@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return s.make_seeded_project(tmp_path_factory.mktemp("bad") / "template")


def _forget_project_modules(project: Path) -> None:
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if (
            name in ("relfeatures", "relops")
            or name.startswith("_metaxy_migrations")
            or file.startswith(str(project))
        ):
            del sys.modules[name]


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fresh active graph, no project modules cached, sys.path restored: each case is a fresh ``metaxy``."""
    for name in [n for n in __import__("os").environ if n.startswith(("METAXY_", "AWS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(sys, "path", list(sys.path))
    with FeatureGraph().use():
        yield


def _run_case(
    case: Case, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    try:
        case.setup(project)
        capsys.readouterr()
        for k, v in case.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(project)
        try:
            code = main(["--config", str(project / "metaxy.toml"), *case.argv])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err
    finally:
        _forget_project_modules(project)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_with_one_clear_message_and_writes_nothing(
    case: Case,
    template: Path,
    tmp_path: Path,
    isolated: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = s.copy_project(template, tmp_path / "p")
    before: dict[str, int] | None = None

    def snapshot_after_setup(p: Path, setup: Callable[[Path], None] = case.setup) -> None:
        nonlocal before
        setup(p)
        before = s.store_files(p / "store")

    run = Case(case.name, snapshot_after_setup, case.expect, case.argv, case.code, case.env)
    code, out, err = _run_case(run, project, monkeypatch, capsys)
    assert code == case.code, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err
    if case.code == 1:
        failed = [line for line in err.splitlines() if line.startswith("FAILED:")]
        assert len(failed) == 1, err
        message = err[err.index("FAILED:") :]
        assert not out.strip(), out
    else:
        message = err
        assert err.count("error:") == 1, err
    for needle in case.expect:
        assert needle in message, f"{needle!r} not in: {message}"
    assert s.store_files(project / "store") == before, "the store changed"
    with capsys.disabled():  # the messages themselves, for review (pytest -s)
        print(f"\n[{case.name}] {message.strip()}", end="")


def test_the_catalogue_is_broad() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "name",
    ["python/object tag", "type: os.system", "snapshot not in the store", "entrypoint fails at import"],
)
def test_the_installed_metaxy_script_behaves_the_same(name: str, template: Path, tmp_path: Path) -> None:
    case = next(c for c in CASES if c.name == name)
    project = s.copy_project(template, tmp_path / "p")
    case.setup(project)
    before = s.store_files(project / "store")
    proc = s.run_cli(case.argv, project, case.env)
    assert proc.returncode == case.code, s.output(proc)
    assert proc.stderr.count("FAILED:") == 1 and "Traceback" not in s.output(proc)
    for needle in case.expect:
        assert needle in proc.stderr
    assert s.store_files(project / "store") == before


# ------------------------------------------------------------------------------------ frames and keys (API)
def _raw(n: int = 3) -> pl.DataFrame:
    return s.raw_rows(n, start=10_000)


FRAMES = {
    "missing id column": (
        RAW,
        lambda: _raw().drop("sample_uid"),
        ["lack id column(s) ['sample_uid']", "every row needs"],
    ),
    "root rows without provenance": (
        RAW,
        lambda: _raw().drop(PROVENANCE_BY_FIELD),
        [PROVENANCE_BY_FIELD, "one string per field"],
    ),
    "provenance struct missing a field": (
        RAW,
        lambda: _raw().with_columns(pl.struct(frames=pl.lit("f")).alias(PROVENANCE_BY_FIELD)),
        [PROVENANCE_BY_FIELD, "exactly the string fields ['frames', 'audio']"],
    ),
    "provenance struct with an extra field": (
        RAW,
        lambda: _raw().with_columns(
            pl.struct(frames=pl.lit("f"), audio=pl.lit("a"), video=pl.lit("v")).alias(PROVENANCE_BY_FIELD)
        ),
        ["exactly the string fields"],
    ),
    "provenance struct of integers": (
        RAW,
        lambda: _raw().with_columns(pl.struct(frames=pl.lit(1), audio=pl.lit(2)).alias(PROVENANCE_BY_FIELD)),
        ["exactly the string fields", "Int32"],
    ),
    "provenance not a struct": (
        RAW,
        lambda: _raw().with_columns(pl.lit("abc").alias(PROVENANCE_BY_FIELD)),
        ["must be a struct"],
    ),
    "null provenance value": (
        RAW,
        lambda: _raw().with_columns(
            pl.struct(frames=pl.lit(None, pl.String), audio=pl.lit("a")).alias(PROVENANCE_BY_FIELD)
        ),
        ["null value", "every field needs"],
    ),
    "null id": (
        RAW,
        lambda: _raw().with_columns(pl.lit(None, pl.String).alias("sample_uid")),
        ["null id column"],
    ),
    "duplicate ids": (
        RAW,
        lambda: pl.concat([_raw(), _raw()]),
        ["repeat 3 sample id(s)", "one row per sample"],
    ),
    "downstream rows without upstream": (
        EMB,
        lambda: pl.DataFrame({"sample_uid": ["nobody"], "dim": [1]}),
        ["no matching upstream rows", "write the upstream features first"],
    ),
    "downstream rows lacking ids": (CAP, lambda: pl.DataFrame({"text": ["a"]}), ["lack id column(s)"]),
    "a user column whose type changed": (
        RAW,
        lambda: _raw().with_columns(pl.lit(7).alias("path")),
        ["column 'path' is String in the table but Int32", "Cast it back", "pl.col('path').cast(pl.String)"],
    ),
}


@pytest.mark.parametrize("name", list(FRAMES), ids=list(FRAMES))
def test_bad_frames_are_refused_naming_the_column_and_write_nothing(
    name: str, template: Path, tmp_path: Path
) -> None:
    key, frame, expect = FRAMES[name]
    project = s.copy_project(template, tmp_path / "p")
    store = DeltaMetadataStore(project / "store", project=s.PROJECT)
    versions = s.table_versions(project / "store")
    with pytest.raises(MetadataSchemaError) as info:
        store.write_metadata(key, frame(), graph=s.G2)
    message = str(info.value)
    assert f"feature {key}" in message or key in message, message
    for needle in expect:
        assert needle in message, message
    assert s.table_versions(project / "store") == versions


KEYS = [
    "../x",
    "a/../../b",
    "..",
    "/etc/passwd",
    "a\\b",
    "a//b",
    "",
    "a/./b",
    "x/..",
    "abc\n",
    "a__b",
    "-x",
    " a",
]


@pytest.mark.parametrize("key", KEYS + [["..", "x"], ["a", "../b"], ["a/b"]], ids=lambda k: repr(k))
def test_keys_that_could_escape_the_store_root_are_refused(key: object, tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError) as info:
        FeatureKey(key)  # type: ignore[arg-type]
    assert "key" in str(info.value) and isinstance(info.value, MetaxyError)


def test_a_valid_key_stays_inside_the_store_root(tmp_path: Path) -> None:
    store = DeltaMetadataStore(tmp_path / "store")
    for key in ["video/raw", "a.b/c-d/e_f", "x"]:
        uri = Path(store.table_uri(key)).resolve()
        assert uri.parent == (tmp_path / "store").resolve() and re.fullmatch(r"[A-Za-z0-9_.\-]+", uri.name)
