"""Loading migration files: YAML and Python, every way a file can be wrong, and Metaxy 0.1.x files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import mxtest_support as s
import pytest
import yaml

from metaxy_core.migrations import (
    DataVersionReconciliation,
    DiffMigration,
    FullGraphMigration,
    MigrationExecutor,
    PythonMigration,
    load_chain,
    load_migration_file,
)
from metaxy_core.migrations.chain import DuplicateMigrationError
from metaxy_core.migrations.loader import MigrationLoadError, MigrationLoadErrors
from metaxy_core.migrations.ops import OperationError, build_operation

MID = "20250102_030405_refresh"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def yaml_text(migration_id: str = MID, *, ops: str = "  - type: " + s.RECONCILE, extra: str = "") -> str:
    return (
        f"migration_id: {migration_id}\n"
        "created_at: 2025-01-02T03:04:05+00:00\n"
        "parent: initial\n"
        "from_snapshot_version: aaaa\n"
        "to_snapshot_version: bbbb\n"
        f"{extra}"
        f"ops:\n{ops}\n"
    )


# ------------------------------------------------------------------------------------------------ YAML
def test_yaml_migration_loads_with_its_operations_and_a_content_checksum(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", yaml_text())
    m = load_migration_file(path)
    assert type(m) is DiffMigration
    assert (m.migration_id, m.parent, m.from_snapshot_version, m.to_snapshot_version) == (
        MID,
        "initial",
        "aaaa",
        "bbbb",
    )
    assert m.created_at.utcoffset() is not None
    [op] = m.operations()
    assert isinstance(op, DataVersionReconciliation) and op.op_id == "reconcile"
    assert m.source_path == path and len(m.checksum) == 16
    path.write_text(path.read_text() + "# a comment\n")
    assert load_migration_file(path).checksum != m.checksum


def test_yml_extension_and_timestamp_only_id_are_accepted(mig_dir):
    path = write(mig_dir, "20250102_030405.yml", yaml_text("20250102_030405"))
    assert load_migration_file(path).migration_id == "20250102_030405"


def test_yaml_operation_fields_feature_key_as_list_or_string_and_literal_type(mig_dir):
    ops = (
        "  - type: mxtest_ops.BackfillRaw\n    id: fill\n    feature_key: [video, raw]\n"
        "    start: 0\n    count: 1\n"
        "  - type: mxtest_ops.Relabel\n    feature_key: video/emb\n    new_label: x\n"
        "    reason: relabel all\n"
    )
    m = load_migration_file(write(mig_dir, f"{MID}.yaml", yaml_text(ops=ops)))
    fill, relabel = m.operations()
    assert (
        fill.op_id == "fill"
        and str(fill.feature_key) == "video/raw"
        and fill.type == "mxtest_ops.BackfillRaw"
    )
    assert str(relabel.feature_key) == "video/emb" and relabel.reason == "relabel all"
    assert relabel.op_id == "relabel" and relabel.type == "mxtest_ops.Relabel"


@pytest.mark.parametrize(
    "name",
    [
        "refresh.yaml",
        "2025_01_02_refresh.yaml",
        "20250102-030405_refresh.yaml",
        "20250102_030405_bad name.yaml",
    ],
)
def test_badly_named_file_is_an_error_naming_it_and_the_pattern(mig_dir, name):
    write(mig_dir, name, yaml_text())
    with pytest.raises(MigrationLoadError) as info:
        load_chain(mig_dir)
    assert str(info.value).startswith(
        str(mig_dir / name) + ": file name must be YYYYMMDD_HHMMSS_description.yaml"
    )


def test_files_that_are_not_migrations_are_ignored(mig_dir):
    write(mig_dir, "README.md", "notes")
    write(mig_dir, "__init__.py", "")
    write(mig_dir, "_helpers.py", "x = 1")
    write(mig_dir, ".hidden.yaml", "nonsense: [")
    assert len(load_chain(mig_dir)) == 0
    assert len(load_chain(mig_dir / "missing")) == 0


def test_id_that_does_not_match_the_file_name_is_refused_with_the_fix(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", yaml_text("20250102_030405_other"))
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert str(info.value) == (
        f"{path}: migration id '20250102_030405_other' does not match the file name; set it to '{MID}' "
        "(or rename the file after the id)"
    )


def test_malformed_yaml_reports_line_and_column(mig_dir):
    path = write(
        mig_dir, f"{MID}.yaml", "migration_id: x\nparent: initial\nops: [unclosed\ncreated_at: 2025\n"
    )
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: malformed YAML at line ")
    assert ", column " in message and message.endswith("; fix the syntax")
    mark = message.split("at line ")[1]
    line, column = int(mark.split(",")[0]), int(mark.split("column ")[1].split(":")[0])
    assert (line, column) == (4, 11)


def test_yaml_that_is_not_a_mapping_is_refused(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", "- just\n- a list\n")
    with pytest.raises(MigrationLoadError, match="must contain a YAML mapping"):
        load_migration_file(path)


def test_unknown_top_level_key_is_named(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", yaml_text(extra="colour: red\n"))
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert (
        str(info.value)
        == f"{path}: invalid DiffMigration: colour: unknown key; remove it or check its spelling"
    )


def test_unknown_operation_key_is_named(mig_dir):
    ops = f"  - type: {s.RECONCILE}\n    feature: video/emb\n"
    path = write(mig_dir, f"{MID}.yaml", yaml_text(ops=ops))
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "feature: unknown key; remove it or check its spelling" in str(info.value)


def test_missing_required_operation_field_is_named(mig_dir):
    ops = "  - type: mxtest_ops.BackfillRaw\n    feature_key: video/raw\n    start: 0\n"
    path = write(mig_dir, f"{MID}.yaml", yaml_text(ops=ops))
    with pytest.raises(MigrationLoadError, match="count: required field is missing"):
        load_migration_file(path)


def test_naive_created_at_is_refused(mig_dir):
    text = yaml_text().replace("2025-01-02T03:04:05+00:00", "2025-01-02T03:04:05")
    path = write(mig_dir, f"{MID}.yaml", text)
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert "created_at: created_at must be timezone-aware" in str(info.value)


def test_unknown_operation_module_is_refused_with_the_path(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", yaml_text(ops="  - type: no_such_pkg.ops.Fill\n"))
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    message = str(info.value)
    assert message.startswith(
        f"{path}: operation type 'no_such_pkg.ops.Fill': module 'no_such_pkg.ops' cannot"
    )
    assert "check the spelling" in message


def test_unknown_operation_class_in_a_real_module_is_refused(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", yaml_text(ops="  - type: mxtest_ops.NoSuchOp\n"))
    with pytest.raises(MigrationLoadError, match="mxtest_ops has no attribute 'NoSuchOp'"):
        load_migration_file(path)


@pytest.mark.parametrize(
    "type_path",
    ["os.system", "builtins.dict", "mxtest_ops.not_an_operation", "subprocess.Popen", "pathlib.Path"],
)
def test_operation_type_that_is_not_an_operation_class_is_refused(mig_dir, type_path):
    path = write(mig_dir, f"{MID}.yaml", yaml_text(ops=f"  - type: {type_path}\n    args: rm -rf /\n"))
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert str(info.value) == (
        f"{path}: operation type '{type_path}' is not a BaseOperation subclass; "
        "an operation type must name a "
        "class deriving from metaxy_core.migrations.BaseOperation"
    )


def test_abstract_operation_class_is_refused(mig_dir):
    ops = "  - type: metaxy_core.migrations.MetadataBackfill\n    feature_key: video/raw\n"
    path = write(mig_dir, f"{MID}.yaml", yaml_text(ops=ops))
    with pytest.raises(MigrationLoadError, match="is abstract .*execute.*name a concrete subclass"):
        load_migration_file(path)


def test_operation_without_type_is_refused(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", yaml_text(ops="  - id: reconcile\n"))
    with pytest.raises(MigrationLoadError, match="has no `type`; give the import path of its class"):
        load_migration_file(path)


def test_unknown_yaml_kind_is_refused(mig_dir):
    path = write(mig_dir, f"{MID}.yaml", yaml_text(extra="kind: python\n"))
    with pytest.raises(MigrationLoadError, match="unknown migration kind 'python'"):
        load_migration_file(path)


def test_full_graph_yaml_requires_operations_to_name_their_features(mig_dir):
    text = (
        f"migration_id: {MID}\ncreated_at: 2025-01-02T03:04:05+00:00\nparent: initial\nkind: full_graph\n"
        f"ops:\n  - type: {s.RECONCILE}\n"
    )
    path = write(mig_dir, f"{MID}.yaml", text)
    with pytest.raises(
        MigrationLoadError, match="a full-graph migration's operations must name their features"
    ):
        load_migration_file(path)
    path.write_text(text + "    features: [video/emb]\n")
    assert type(load_migration_file(path)) is FullGraphMigration


# ---------------------------------------------------------------------------------- environment
def test_operation_fields_are_never_read_from_environment_variables(mig_dir, monkeypatch):
    for name in ("S3_BUCKET", "s3_bucket", "HOME", "home", "ID", "REASON", "FEATURES"):
        monkeypatch.setenv(name, "from-environment")
    op = build_operation({"type": "mxtest_ops.Probe"})
    assert op.s3_bucket == "bucket-from-default" and op.home is None and op.id is None and op.reason is None
    assert build_operation({"type": s.RECONCILE}).features is None
    with pytest.raises(OperationError, match="s3_bucket: required field is missing"):
        build_operation({"type": "mxtest_ops.NeedsBucket"})
    m = load_migration_file(write(mig_dir, f"{MID}.yaml", yaml_text(ops="  - type: mxtest_ops.Probe\n")))
    assert m.operations()[0].s3_bucket == "bucket-from-default"


# ----------------------------------------------------------------------------------------- Python
PY_HEADER = """\
from datetime import datetime, timezone
from metaxy_core.migrations import PythonMigration, CustomMigration, DataVersionReconciliation
"""


def test_python_migration_file_loads_its_single_class(mig_dir):
    path = write(
        mig_dir,
        f"{MID}.py",
        PY_HEADER
        + f"""
class Refresh(PythonMigration):
    migration_id: str = "{MID}"
    created_at: datetime = datetime(2025, 1, 2, tzinfo=timezone.utc)
    from_snapshot_version: str = "aaaa"
    to_snapshot_version: str = "bbbb"

    def build_operations(self):
        return [DataVersionReconciliation(id="only")]
""",
    )
    m = load_migration_file(path)
    assert isinstance(m, PythonMigration) and type(m).__name__ == "Refresh" and m.kind == "python"
    assert [op.op_id for op in m.operations()] == ["only"]
    assert m.source_path == path


def test_python_file_with_a_syntax_error_names_file_and_line(mig_dir):
    path = write(mig_dir, f"{MID}.py", "x = 1\ndef broken(:\n    pass\n")
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert str(info.value).startswith(f"{path}: syntax error at line 2: ")
    assert str(info.value).endswith("; fix the code")


def test_python_file_with_an_import_error_names_the_module(mig_dir):
    path = write(mig_dir, f"{MID}.py", "import no_such_package_xyz\n")
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert str(info.value) == (
        f"{path}: import failed (No module named 'no_such_package_xyz'); install the missing package or fix "
        "the import"
    )


def test_python_file_raising_at_import_is_reported(mig_dir):
    path = write(mig_dir, f"{MID}.py", "raise KeyError('boom')\n")
    with pytest.raises(MigrationLoadError, match=r"raised KeyError while importing: 'boom'"):
        load_migration_file(path)


def test_python_file_without_a_migration_class_is_refused(mig_dir):
    path = write(mig_dir, f"{MID}.py", PY_HEADER + "class NotAMigration:\n    pass\n")
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert "must define exactly one Migration subclass (found 0: none)" in str(info.value)


def test_python_file_with_two_migration_classes_lists_them(mig_dir):
    body = "".join(
        f"""
class {name}(CustomMigration):
    migration_id: str = "{MID}"
    created_at: datetime = datetime(2025, 1, 2, tzinfo=timezone.utc)
    def execute(self, store, project, *, dry_run=False):
        return 0
"""
        for name in ("First", "Second")
    )
    path = write(mig_dir, f"{MID}.py", PY_HEADER + body)
    with pytest.raises(MigrationLoadError) as info:
        load_migration_file(path)
    assert str(info.value).startswith(
        f"{path}: a migration file must define exactly one Migration subclass (found 2: First, Second)"
    )


def test_python_file_importing_base_classes_is_not_counted_as_defining_them(mig_dir):
    path = write(
        mig_dir,
        f"{MID}.py",
        PY_HEADER
        + "from metaxy_core.migrations import DiffMigration\n"
        + f"""
class Only(CustomMigration):
    migration_id: str = "{MID}"
    created_at: datetime = datetime(2025, 1, 2, tzinfo=timezone.utc)
    def execute(self, store, project, *, dry_run=False):
        return 0
""",
    )
    assert type(load_migration_file(path)).__name__ == "Only"


def test_python_migration_with_naive_created_at_default_is_refused(mig_dir):
    path = write(
        mig_dir,
        f"{MID}.py",
        PY_HEADER
        + f"""
class Naive(CustomMigration):
    migration_id: str = "{MID}"
    created_at: datetime = datetime(2025, 1, 2)
    def execute(self, store, project, *, dry_run=False):
        return 0
""",
    )
    with pytest.raises(MigrationLoadError, match="created_at must be timezone-aware"):
        load_migration_file(path)


def test_python_migration_with_malformed_id_default_is_refused(mig_dir):
    path = write(
        mig_dir,
        f"{MID}.py",
        PY_HEADER
        + """
class BadId(CustomMigration):
    migration_id: str = "my migration"
    created_at: datetime = datetime(2025, 1, 2, tzinfo=timezone.utc)
    def execute(self, store, project, *, dry_run=False):
        return 0
""",
    )
    with pytest.raises(MigrationLoadError, match="must look like YYYYMMDD_HHMMSS_description"):
        load_migration_file(path)


# ------------------------------------------------------------------------------ directory errors
def test_one_bad_file_among_good_ones_is_named(mig_dir):
    s.write_migration(mig_dir, "20250101_000001_first", from_="a", to="b")
    bad = write(mig_dir, "20250101_000002_second.yaml", "migration_id: [\n")
    s.write_migration(mig_dir, "20250101_000003_third", from_="b", to="c", parent="20250101_000002_second")
    with pytest.raises(MigrationLoadError) as info:
        load_chain(mig_dir)
    assert info.value.path == bad
    assert str(info.value).startswith(f"{bad}: malformed YAML at line")


def test_two_bad_files_are_both_named(mig_dir):
    s.write_migration(mig_dir, "20250101_000001_first", from_="a", to="b")
    bad_yaml = write(
        mig_dir, "20250101_000002_second.yaml", yaml_text("20250101_000002_second", extra="oops: 1\n")
    )
    bad_py = write(mig_dir, "20250101_000003_third.py", "import no_such_package_xyz\n")
    misnamed = write(mig_dir, "third.yaml", yaml_text())
    with pytest.raises(MigrationLoadErrors) as info:
        load_chain(mig_dir)
    assert sorted(e.path for e in info.value.errors) == sorted([bad_yaml, bad_py, misnamed])
    message = str(info.value)
    assert message.startswith("3 migration file(s) cannot be loaded:")
    for path in (bad_yaml, bad_py, misnamed):
        assert f"  - {path}: " in message


def test_duplicate_ids_across_files_name_both_files(mig_dir):
    a = write(mig_dir, "20250101_000000_a.yaml", yaml_text("20250101_000000"))
    b = write(mig_dir, "20250101_000000_b.yaml", yaml_text("20250101_000000"))
    with pytest.raises(DuplicateMigrationError) as info:
        load_chain(mig_dir)
    assert f"migration id 20250101_000000 is defined more than once ({a}, {b})" in str(info.value)


# --------------------------------------------------------------------------------- Metaxy 0.1.x
LEGACY = """\
migration_type: metaxy.migrations.models.DiffMigration
id: '{mid}'
created_at: '2025-11-18T19:35:58.587575+00:00'
parent: initial
from_project_version: {from_}
to_project_version: {to}
ops:
- type: metaxy.migrations.ops.DataVersionReconciliation
  features: ["video/emb"]
"""


def test_metaxy_01x_yaml_is_loaded_and_applied_unchanged(store, mig_dir):
    g1, g2 = s.make_graph(emb="1"), s.make_graph(emb="2")
    s.seed(store, g1, n_raw=20, n_emb=15)
    store.push_snapshot(g2, project=s.PROJECT)
    old = s.latest(store, g1, s.EMB)
    path = write(
        mig_dir,
        "20251118_193558_legacy.yaml",
        LEGACY.format(mid="20251118_193558", from_=g1.snapshot_version, to=g2.snapshot_version),
    )
    m = load_migration_file(path)
    assert type(m) is DiffMigration and m.from_snapshot_version == g1.snapshot_version
    [op] = m.operations()
    assert isinstance(op, DataVersionReconciliation) and [str(f) for f in op.features] == [s.EMB]
    assert yaml.safe_load(path.read_text())["id"] == "20251118_193558"  # the file itself is untouched

    [result] = MigrationExecutor(store, graph=g2).apply(load_chain(mig_dir))
    assert result.status == "completed" and result.rows_by_feature() == {s.EMB: 15}
    new = s.latest(store, g2, s.EMB)
    assert new.select(s.IDS, *s.USER_COLUMNS).equals(old.select(s.IDS, *s.USER_COLUMNS))
    assert store.resolve_update(s.EMB, graph=g2).counts() == {"added": 5, "changed": 0, "removed": 0}


def test_unquoted_timestamp_ids_survive_yaml_integer_parsing(mig_dir):
    # YAML 1.1 reads 20250101_000000 (unquoted) as the integer 20250101000000
    write(mig_dir, "20250101_000000.yaml", yaml_text("20250101_000000"))
    second = yaml_text("20250101_000001").replace("parent: initial", "parent: 20250101_000000")
    write(mig_dir, "20250101_000001.yaml", second)
    chain = load_chain(mig_dir)
    assert chain.ids == ["20250101_000000", "20250101_000001"]
    assert chain.get("20250101_000001").parent == "20250101_000000"


def test_an_empty_features_list_is_refused_rather_than_silently_reconciling_nothing() -> None:
    from metaxy_core.migrations.ops import OperationError, build_operation

    with pytest.raises(OperationError, match="`features` is empty; list the features to reconcile"):
        build_operation({"type": "metaxy_core.migrations.ops.DataVersionReconciliation", "features": []})
