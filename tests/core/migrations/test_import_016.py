"""Adopting a Metaxy 0.1.6 project: a store and a migration file written by the real 0.1.6 package are
imported with ``metaxy migrations import-016``, after which the 0.1.6 YAML applies without hand edits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from metaxy_core.testing.project import ProjectDir

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "metaxy016"

# The 0.1.6 project's features (FEATURES_016 in fixtures/metaxy016/make_store.py), ported: imports renamed,
# 0.1.6's `mx.BaseFeature` -> `Feature`; the code is at the refined lineage the last 0.1.6 snapshot recorded.
PORTED = """
from metaxy_core import Feature, FeatureDep, FeatureSpec, FieldDep, FieldSpec


class Raw(Feature, spec=FeatureSpec(
        key="video/raw", id_columns=["sample_uid"],
        fields=[FieldSpec(key="frames", code_version="1"), FieldSpec(key="audio", code_version="1")])):
    path: str


class Emb(Feature, spec=FeatureSpec(
        key="video/embeddings", id_columns=["sample_uid"], deps=[FeatureDep(feature=Raw)],
        fields=[FieldSpec(key="embedding", code_version="1", deps=[FieldDep(feature=Raw, fields="frames")]),
                FieldSpec(key="transcript", code_version="1",
                          deps=[FieldDep(feature=Raw, fields="audio")])])):
    dim: int


class Scores(Feature, spec=FeatureSpec(
        key="video/clip_scores", id_columns=["sample_uid"], deps=[FeatureDep(feature=Emb)],
        fields=[FieldSpec(key="score", code_version="1")])):
    score: float
"""
FEATURES = ["video/raw", "video/embeddings", "video/clip_scores"]


def adopt(project_root: Path, store: Path, migrations: Path) -> ProjectDir:
    """A project of this package around a 0.1.6 store (same root: the two layouts live side by side)."""
    project = ProjectDir(project_root, modules={"legacy_features": PORTED}, name="legacy", store="store")
    shutil.copytree(store, project.root / "store")
    shutil.copytree(migrations, project.migrations)
    return project


def adopted_and_applied(project: ProjectDir, n_samples: int) -> None:
    """What a user does, with what each step must show."""
    [yaml_file] = project.migrations.glob("*.yaml")
    original = yaml_file.read_bytes()

    before = project.run("migrations", "status", "--format", "json")
    assert (
        before.code == 1
    )  # the 0.1.6 ids are unknown until imported, and status says which command maps them
    [row] = json.loads(before.out)
    assert (
        "Metaxy 0.1.6 snapshot ids" in row["load_error"]
        and "metaxy migrations import-016" in row["load_error"]
    )

    imported = project.run("migrations", "import-016", "--format", "json")
    assert imported.code == 0, imported.err
    report = json.loads(imported.out)
    assert len(report["snapshots"]) == 2 and len(report["pushed"]) == 2
    assert report["rows"] == {f: n_samples for f in FEATURES}
    with project.session() as p:  # the ported code is the last 0.1.6 snapshot, rebuilt
        assert list(report["snapshots"].values())[-1] == p.graph.snapshot_version

    plan = project.run("migrations", "apply", "--dry-run", "--format", "json")
    assert plan.code == 0, plan.err
    steps = json.loads(plan.out)[0]["steps"]
    assert [(s["feature_key"], s["rows"]) for s in steps] == [
        ("video/embeddings", n_samples),
        ("video/clip_scores", n_samples),
    ]
    applied = project.run("migrations", "apply")
    assert applied.code == 0, applied.err
    assert project.run("migrations", "verify").code == 0
    with project.session() as p:
        g = p.graph
        for feature in (
            "video/embeddings",
            "video/clip_scores",
        ):  # carried to the new versions, nothing to do
            assert len(p.store.resolve_update(feature, graph=g).changed) == 0
            assert len(p.store.resolve_update(feature, graph=g).added) == 0
        emb = p.store.read_metadata("video/embeddings", graph=g).collect()
        assert emb.height == n_samples and set(emb["dim"].to_list()) == {512}  # user columns kept
        assert emb["path"].str.starts_with("s3://videos/").all()  # 0.1.6 copied the upstream's columns too
        scores = p.store.read_metadata("video/clip_scores", graph=g).collect()
        assert set(scores["score"].to_list()) == {0.5}
    assert yaml_file.read_bytes() == original  # no hand edits, no rewrites

    again = project.run("migrations", "import-016", "--format", "json")
    assert again.code == 0 and json.loads(again.out)["pushed"] == []
    assert set(json.loads(again.out)["rows"].values()) == {0}


def test_a_0_1_6_store_and_its_yaml_are_adopted_and_applied(tmp_path: Path) -> None:
    project = adopt(tmp_path / "adopted", FIXTURE / "store", FIXTURE / "migrations")
    adopted_and_applied(project, n_samples=20)


def imported_rows(project: ProjectDir) -> dict[str, pl.DataFrame]:
    """Every row of every feature (all versions), without the columns that differ between two writes."""
    with project.session() as p:
        return {
            f: p.store.scan_feature(f)  # type: ignore[union-attr]
            .collect()
            .drop("metaxy_created_at", "metaxy_commit_order")
            .sort("sample_uid", "metaxy_feature_version")
            for f in FEATURES
        }


def test_an_import_in_buckets_of_samples_equals_the_import_in_one_piece(tmp_path: Path) -> None:
    """``bucket_rows`` 3 splits each 0.1.6 feature version (20 samples) into 7 hash buckets, spilled once:
    what memory follows on a large store; the imported rows are exactly those of an import in one piece."""
    whole = adopt(tmp_path / "whole", FIXTURE / "store", FIXTURE / "migrations")
    bucketed = adopt(tmp_path / "bucketed", FIXTURE / "store", FIXTURE / "migrations")
    assert whole.run("migrations", "import-016").code == 0
    run = bucketed.run("migrations", "import-016", "--format", "json", env={"METAXY_BUCKET_ROWS": "3"})
    assert run.code == 0, run.err
    assert json.loads(run.out)["rows"] == {f: 20 for f in FEATURES}
    expected, got = imported_rows(whole), imported_rows(bucketed)
    for feature in FEATURES:
        assert got[feature].height == 20 and got[feature].equals(expected[feature]), feature
    with whole.session() as w, bucketed.session() as b:  # one commit per bucket, instead of one
        assert w.store.table_version("video/raw") == 0 and b.store.table_version("video/raw") >= 4


def test_an_import_that_fails_midway_is_finished_by_the_next_one_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses the 5th write (a crash, a lost connection): the import fails with one line, the
    buckets written stay, and the next import writes only what is missing."""
    from metaxy_core.errors import StoreError
    from metaxy_core.store.delta import DeltaMetadataStore

    reference = adopt(tmp_path / "reference", FIXTURE / "store", FIXTURE / "migrations")
    assert reference.run("migrations", "import-016").code == 0
    project = adopt(tmp_path / "crashed", FIXTURE / "store", FIXTURE / "migrations")
    real, calls = DeltaMetadataStore.write_metadata, []

    def failing(self: DeltaMetadataStore, *args: object, **kwargs: object) -> int:
        calls.append(1)
        if len(calls) == 5:
            raise StoreError("cannot write to the table: connection reset by peer")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DeltaMetadataStore, "write_metadata", failing)
    failed = project.run("migrations", "import-016", env={"METAXY_BUCKET_ROWS": "3"})
    assert failed.code == 1 and len(failed.failed_lines) == 1 and "connection reset" in failed.err
    monkeypatch.setattr(DeltaMetadataStore, "write_metadata", real)
    rerun = project.run("migrations", "import-016", "--format", "json", env={"METAXY_BUCKET_ROWS": "3"})
    assert rerun.code == 0, rerun.err
    report = json.loads(rerun.out)
    assert 0 < sum(report["skipped"].values()) and sum(report["rows"].values()) < 3 * 20
    expected, got = imported_rows(reference), imported_rows(project)
    for feature in FEATURES:
        assert got[feature].height == 20 and got[feature].equals(expected[feature]), feature


def test_importing_from_a_folder_without_a_0_1_6_store_names_the_fix(tmp_path: Path) -> None:
    project = ProjectDir(tmp_path / "empty", modules={"legacy_features": PORTED}, name="legacy")
    run = project.run("migrations", "import-016", str(tmp_path / "nowhere"))
    assert run.code == 1
    [line] = run.failed_lines
    assert "no Metaxy 0.1.6 store at" in line and "pass the root of the 0.1.6 store" in line


def test_importing_another_project_s_store_names_the_projects_it_has(tmp_path: Path) -> None:
    project = ProjectDir(tmp_path / "other", modules={"legacy_features": PORTED}, name="other")
    run = project.run("migrations", "import-016", str(FIXTURE / "store"))
    assert run.code == 1 and "has no snapshot of project 'other' (it has: legacy)" in run.err


@pytest.mark.slow
def test_a_store_made_now_by_the_real_metaxy_0_1_6_package_is_adopted_and_applied(tmp_path: Path) -> None:
    """The committed fixture is not stale: the package from the index makes a store adopted the same way."""
    import sys

    sys.path.insert(0, str(FIXTURE))
    try:
        import make_store
    finally:
        sys.path.remove(str(FIXTURE))
    python = make_store.ensure_venv(Path("/tmp/metaxy016-venv"))
    store, migrations = make_store.make_project(tmp_path / "legacy016", python)
    adopted_and_applied(adopt(tmp_path / "adopted", store, migrations), n_samples=make_store.N_SAMPLES)


KILLHOOK = Path(__file__).resolve().parents[2] / "reliability" / "killhook.py"


def _import_under_hook(project: ProjectDir, plan: dict[str, object], *args: str) -> tuple[int, str, str]:
    """``metaxy migrations import-016`` in its own process under the kill hook, in 3-sample buckets: its
    exit code, stdout and stderr."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("METAXY_", "AWS_"))}
    env.update(
        METAXY_TEST_HOOK=json.dumps(plan),
        METAXY_BUCKET_ROWS="3",
        METAXY_SPILL_DIR=str(project.root / "spill"),
        PYTHONPATH=str(project.root),
    )
    cmd = [sys.executable, str(KILLHOOK), "--config", str(project.root / "metaxy.toml"), "migrations"]
    proc = subprocess.run(
        [*cmd, "import-016", *args], cwd=project.root, env=env, capture_output=True, text=True, timeout=120
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_sigkill_anywhere_in_an_import_then_rerun_equals_an_uninterrupted_import(tmp_path: Path) -> None:
    """The process is SIGKILLed before, inside or just after one of its commits (a bucket of rows, a
    snapshot push), at points drawn over the whole import; the next import finishes it: every feature
    version's rows exactly once, equal to an uninterrupted import, the snapshots pushed once, no spill
    files of the killed process left, and a third import has nothing left to do."""
    import random

    reference = adopt(tmp_path / "reference", FIXTURE / "store", FIXTURE / "migrations")
    log = tmp_path / "reference.log"
    code, _, err = _import_under_hook(reference, {"log": str(log)})
    assert code == 0, err
    commits = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = {c["kind"] for c in commits}
    assert {"data", "snapshot"} <= kinds and len(commits) >= 10, commits
    expected = imported_rows(reference)

    rng = random.Random(16)
    points = rng.sample(range(1, len(commits) + 1), 8)
    hows = ["before", "after", "during", "before", "after", "during", "before", "after"]
    killed_at, resumed = [], 0
    for trial, (n, how) in enumerate(zip(points, hows, strict=True)):
        project = adopt(tmp_path / f"trial{trial}", FIXTURE / "store", FIXTURE / "migrations")
        plan = {"kill_at": n, "how": how, "delay": rng.uniform(0.0, 0.02)}
        code, out, err = _import_under_hook(project, plan)
        assert code == -9, f"trial {trial} ({how} commit {n}): exited {code}, not killed:\n{out}{err}"
        killed_at.append(commits[n - 1]["kind"])
        code, out, err = _import_under_hook(project, {}, "--format", "json")
        assert code == 0, f"trial {trial} ({how} commit {n}): the re-run failed:\n{err}"
        resumed += sum(json.loads(out)["skipped"].values()) > 0  # it found work done and kept it
        got = imported_rows(project)
        for feature in FEATURES:
            assert got[feature].height == 20 and got[feature].equals(expected[feature]), (trial, feature)
        spill = project.root / "spill"
        assert not (list(spill.iterdir()) if spill.exists() else []), f"trial {trial}: spill files left"
        again = project.run("migrations", "import-016", "--format", "json")
        assert again.code == 0 and json.loads(again.out)["pushed"] == [], (trial, again.out)
        assert set(json.loads(again.out)["rows"].values()) == {0}, (trial, again.out)
    assert "data" in killed_at and resumed >= 3, (killed_at, resumed)
