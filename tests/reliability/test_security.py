"""Security: YAML is data only, operation types are restricted, credentials never leave the process in any
output, and keys/ids cannot point outside the store root.

Credentials are planted everywhere a user puts them (storage options in metaxy.toml, ``${VAR}`` references,
METAXY_STORE_STORAGE_OPTIONS, the AWS environment, a session token, a password inside a database URL given
to an operation) and every byte the tool emits is searched for them: stdout and stderr of the CLI in both
formats (success and failure, ``-v`` and ``--raiseerr``), every log record at DEBUG, exception messages, the
migration log in the store, ``repr``/``str`` of the store and the configuration.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from metaxy_core import DeltaMetadataStore, FeatureGraph, FeatureKey, MetaxyConfig
from metaxy_core.cli.app import main
from metaxy_core.errors import InvalidKeyError, MetaxyError
from metaxy_core.migrations import progress
from metaxy_core.migrations.loader import load_migration_file
from metaxy_core.migrations.ops import OperationError, resolve_operation_class
from metaxy_core.testing import S3Server, free_port

from . import _support as s

KEY_ID = "AKIASECURITYTEST0001"
SECRET = "sEcReT-AWS-KEY-3c9f1b7e5a"
TOKEN = "SeSsIoN-ToKeN-77aa11bb22cc"
DB_PASSWORD = "Pg-PaSsW0rD-9913"
SECRETS = [SECRET, TOKEN, DB_PASSWORD]
BUCKET = "sec-bucket"


def assert_clean(text: str, where: str = "") -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:6]}… leaked {where}:\n{text}"


# ---------------------------------------------------------------------------------------------- YAML safety
TAGS = [
    "!!python/object/apply:os.system ['touch {m}']",
    "!!python/object/apply:subprocess.check_call [['touch', '{m}']]",
    "!!python/object/new:subprocess.Popen [['touch', '{m}']]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:builtins.object {{}}",
]


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("where", ["document", "field", "operation field"])
def test_python_yaml_tags_are_refused_and_nothing_runs(tag: str, where: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = tag.format(m=marker)
    text = {
        "document": value + "\n",
        "field": s.migration_yaml().replace("parent: initial", f"parent: initial\ndescription: {value}"),
        "operation field": s.migration_yaml(
            ops=f"  - type: DataVersionReconciliation\n    reason: {value}\n"
        ),
    }[where]
    path = tmp_path / s.MIGRATION_FILE
    path.write_text(text)
    with pytest.raises(MetaxyError) as info:
        load_migration_file(path)
    assert str(info.value).startswith(str(path)) and "YAML tag not allowed" in str(info.value)
    assert not marker.exists()


def test_python_tag_through_the_cli_runs_nothing(tmp_path: Path) -> None:
    project = s.make_seeded_project(
        tmp_path / "p", migration=f"!!python/object/apply:os.system ['touch {tmp_path}/pwned']\n"
    )
    proc = s.run_cli(["migrations", "apply"], project)
    assert proc.returncode == 1 and "YAML tag not allowed" in proc.stderr
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "path",
    [
        "os.system",
        "builtins.eval",
        "builtins.exec",
        "builtins.__import__",
        "subprocess.Popen",
        "subprocess.run",
        "shutil.rmtree",
        "os.remove",
        "pickle.loads",
        "importlib.import_module",
        "metaxy_core.migrations.ops.BaseOperation",
        "metaxy_core.migrations.ops.build_operation",
        "metaxy_core.migrations.ops.OperationError",
        "typing.Any",
    ],
)
def test_operation_types_must_be_concrete_base_operation_subclasses(path: str) -> None:
    with pytest.raises(OperationError) as info:
        resolve_operation_class(path)
    assert path in str(info.value)


# --------------------------------------------------------------------------------------- credentials: S3
@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    server = S3Server()
    boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield server
    server.close()


WAYS = {
    # how the credentials reach the store: (metaxy.toml storage options, environment)
    "explicit in metaxy.toml": (
        {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN},
        {},
    ),
    "${VAR} references": (
        {
            "AWS_ACCESS_KEY_ID": "${REL_KEY}",
            "AWS_SECRET_ACCESS_KEY": "${REL_SECRET}",
            "AWS_SESSION_TOKEN": "${REL_TOKEN}",
        },
        {"REL_KEY": KEY_ID, "REL_SECRET": SECRET, "REL_TOKEN": TOKEN},
    ),
    "METAXY_STORE_STORAGE_OPTIONS": (
        {},
        {
            "METAXY_STORE_STORAGE_OPTIONS": json.dumps(
                {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET, "aws_session_token": TOKEN}
            )
        },
    ),
    "AWS environment (boto3 chain)": (
        {},
        {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN},
    ),
}
VERBS = [
    ["push"],
    ["snapshot"],
    ["graph"],
    ["migrations", "status"],
    ["migrations", "list"],
    ["migrations", "apply", "--dry-run"],
    ["migrations", "apply"],
    ["migrations", "history"],
    ["migrations", "explain", s.MIGRATION_ID],
    ["migrations", "apply"],
    ["migrations", "unlock"],
]


def _project(tmp_path: Path, root: str, options: dict[str, str]) -> Path:
    return s.write_project(tmp_path / "p", root=root, storage_options=options, migration=s.migration_yaml())


def _forget_project_modules() -> None:
    for name in [
        n for n in sys.modules if n in ("relfeatures", "relops") or n.startswith("_metaxy_migrations")
    ]:
        del sys.modules[name]


def _main(
    project: Path,
    argv: list[str],
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str]:
    """``metaxy <argv>`` in-process (a fresh graph, no cached project modules, only ``env``): exit code
    and all output."""
    with monkeypatch.context() as m:
        for name in [n for n in os.environ if n.startswith(("METAXY_", "AWS_"))]:
            m.delenv(name)
        for name, value in {**s.clean_env({}), **env}.items():
            if name.startswith(("METAXY_", "AWS_", "REL_")):
                m.setenv(name, value)
        m.setattr(sys, "path", list(sys.path))
        with FeatureGraph().use():
            try:
                code = main(["--config", str(project / "metaxy.toml"), *argv])
            except SystemExit as exc:
                code = int(exc.code or 0)
        _forget_project_modules()
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("way", list(WAYS))
def test_s3_credentials_never_appear_in_cli_output_or_logs_on_success_or_failure(
    way: str,
    moto: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    options, env = WAYS[way]
    root = f"s3://{BUCKET}/{list(WAYS).index(way)}"
    project = _project(tmp_path, root, options)
    env = {**env, "AWS_ENDPOINT_URL": moto.endpoint, "AWS_REGION": "us-east-1"}
    store = DeltaMetadataStore(
        root,
        {
            "AWS_ENDPOINT_URL": moto.endpoint,
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
        },
        project=s.PROJECT,
    )
    s.seed_store(store, n=50)
    outputs = []
    for verb in VERBS:  # every verb, both formats, verbose
        for fmt in (["--format", "json"], []):
            code, text = _main(project, [*fmt, "-v", *verb], env, monkeypatch, capsys)
            assert code == 0, text
            outputs.append(text)
    # failures: the endpoint is dead, then the bucket is missing (json, table, --raiseerr)
    dead = {
        **env,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "METAXY_STORE_STORAGE_OPTIONS": json.dumps(
            {**json.loads(env.get("METAXY_STORE_STORAGE_OPTIONS", "{}")), "retry_timeout": "1s"}
        ),
    }
    for bad_env in (dead, env):
        if bad_env is env:
            (project / "metaxy.toml").write_text(
                (project / "metaxy.toml").read_text().replace(BUCKET, "no-such-bucket")
            )
        for flags in (["--format", "json"], [], ["--raiseerr"]):
            code, text = _main(project, [*flags, "-v", "migrations", "apply"], bad_env, monkeypatch, capsys)
            assert code == 1 and ("FAILED" in text or "Traceback" in text), text
            outputs.append(text)
    # and once through the installed script, as a user runs it
    proc = s.run_cli(["-v", "migrations", "status"], project, bad_env)
    assert proc.returncode == 1
    outputs.append(s.output(proc))
    logs = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for text in [*outputs, logs]:
        assert_clean(text, f"({way})")
    assert any(root in t for t in outputs)  # the output did talk about the store


@pytest.fixture(scope="module")
def auth_moto() -> Iterator[str]:
    server = S3Server(env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield server.endpoint
    server.close()


def test_refused_credentials_are_not_echoed(auth_moto: str, tmp_path: Path) -> None:
    project = _project(tmp_path, f"s3://{BUCKET}/x", {"AWS_SESSION_TOKEN": "${REL_TOKEN}"})
    env = {
        "AWS_ENDPOINT_URL": auth_moto,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "REL_TOKEN": TOKEN,
    }
    for flags in (["--format", "json"], [], ["--raiseerr"], ["-v"]):
        proc = s.run_cli([*flags, "push"], project, env)
        assert proc.returncode == 1 and "credentials" in proc.stderr, s.output(proc)
        assert_clean(s.output(proc))


# ------------------------------------------------------------------------------ credentials: a database URL
DSN = f"postgresql://metaxy:{DB_PASSWORD}@127.0.0.1:1/annotations"


@pytest.fixture
def leaky_project(tmp_path: Path) -> Path:
    ops = f"  - type: relops.LeakyBackfill\n    feature_key: video/raw\n    dsn: {DSN}\n"
    return s.make_seeded_project(tmp_path / "p", migration=s.migration_yaml(ops=ops))


def test_a_password_in_a_database_url_never_appears_in_cli_output_or_the_log(leaky_project: Path) -> None:
    outputs = []
    for flags in (["--format", "json"], [], ["-v"], ["--raiseerr"]):
        proc = s.run_cli([*flags, "migrations", "apply"], leaky_project)
        assert proc.returncode == 1, s.output(proc)
        assert (
            "could not connect to postgresql://metaxy:***@127.0.0.1:1/annotations"
            in proc.stdout + proc.stderr
        )
        outputs.append(s.output(proc))
    for verb in (
        ["migrations", "status"],
        ["migrations", "history"],
        ["migrations", "explain", s.MIGRATION_ID],
    ):
        for fmt in (["--format", "json"], []):
            proc = s.run_cli([*fmt, *verb], leaky_project)
            assert proc.returncode == 0, s.output(proc)
            outputs.append(s.output(proc))
    for text in outputs:
        assert_clean(text)
    events = progress.read_events(DeltaMetadataStore(leaky_project / "store", project=s.PROJECT), s.PROJECT)
    assert_clean(events.write_csv(), "into the migration log")


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith(("METAXY_", "AWS_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with FeatureGraph().use():
        yield
    for name in [
        n for n in sys.modules if n in ("relfeatures", "relops") or n.startswith("_metaxy_migrations")
    ]:
        del sys.modules[name]


def test_logs_at_debug_level_and_exceptions_hold_no_password(
    leaky_project: Path,
    in_process: None,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    code = main(["--config", str(leaky_project / "metaxy.toml"), "-v", "migrations", "apply"])
    out, err = capsys.readouterr()
    assert code == 1
    records = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "step failed" in records  # the traceback was logged (redacted)
    assert_clean(records, "into the logs")
    assert_clean(out + err)


# -------------------------------------------------------------------------------------- repr and messages
def test_repr_of_store_and_configuration_show_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "metaxy.toml").write_text(
        'project = "sec"\n[store]\nroot = "s3://b/p"\n[store.storage_options]\n'
        f'AWS_SECRET_ACCESS_KEY = "{SECRET}"\n'
        'AWS_SESSION_TOKEN = "${REL_TOKEN}"\n'
    )
    monkeypatch.setenv("REL_TOKEN", TOKEN)
    monkeypatch.setenv("METAXY_STORE_STORAGE_OPTIONS", json.dumps({"password": DB_PASSWORD}))
    config = MetaxyConfig.load(tmp_path / "metaxy.toml")
    store = config.get_store()
    assert store.storage_options["AWS_SESSION_TOKEN"] == TOKEN  # the secret is there, and used...
    for text in (
        repr(store),
        str(store),
        repr(config),
        str(config),
        repr(config.store),
        f"{store!r} {config}",
    ):
        assert_clean(text, "into a repr")  # ...but never shown
    assert "AWS_SECRET_ACCESS_KEY" in repr(config)  # the keys are


@pytest.mark.parametrize(
    "bad",
    [
        '{"AWS_SECRET_ACCESS_KEY": "%s", }',
        '{"AWS_SECRET_ACCESS_KEY": {"nested": "%s"}}',
        '["%s"]',
        '{"AWS_SECRET_ACCESS_KEY": ["%s"]}',
    ],
)
def test_invalid_storage_options_do_not_echo_their_values(
    bad: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METAXY_STORE_STORAGE_OPTIONS", bad % SECRET)
    with pytest.raises(MetaxyError) as info:
        MetaxyConfig.load(start_dir=tmp_path).get_store()
    assert "METAXY_STORE_STORAGE_OPTIONS" in str(info.value) or "storage_options" in str(info.value)
    assert_clean(str(info.value))


# ----------------------------------------------------------------------------------- the store root
@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "..", "/abs", "a\\..\\b", "a\n", ["..", "x"], ["a", "b/../../c"]], ids=repr
)
def test_feature_keys_cannot_escape_the_store_root(key: object, tmp_path: Path) -> None:
    store = DeltaMetadataStore(tmp_path / "store")
    with pytest.raises(InvalidKeyError):
        store.table_uri(FeatureKey(key))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mid",
    [
        "../20250101_000000_x",
        "20250101_000000_a/b",
        "20250101_000000_../../x",
        "20250101_000000_x\n",
        "20250101_000000_a\\b",
        "/etc/passwd",
    ],
    ids=repr,
)
def test_migration_ids_cannot_hold_a_path(mid: str, tmp_path: Path) -> None:
    path = tmp_path / s.MIGRATION_FILE
    path.write_text(s.migration_yaml(migration_id=json.dumps(mid)))
    with pytest.raises(MetaxyError) as info:
        load_migration_file(path)
    assert "must look like YYYYMMDD_HHMMSS_description" in str(info.value)


def test_cli_migration_id_argument_cannot_reach_outside(tmp_path: Path) -> None:
    project = s.make_seeded_project(tmp_path / "p")
    before = s.store_files(project / "store")
    for mid in ("../../etc/passwd", "20250101_000000_bump/../x"):
        proc = s.run_cli(["migrations", "apply", mid], project)
        assert proc.returncode == 1 and "not found" in proc.stderr, s.output(proc)
    assert s.store_files(project / "store") == before
    assert sorted(p.name for p in (project / "store").iterdir()) == sorted(
        ["_metaxy_system", "video__cap", "video__emb", "video__joint", "video__raw"]
    )


# ------------------------------------------------------------------------------------------- over Dagster
def test_a_database_password_never_reaches_dagster_events_run_config_or_logs(
    leaky_project: Path, in_process: None, caplog: pytest.LogCaptureFixture
) -> None:
    import dagster as dg

    from metaxy_dagster import APPLY_JOB_NAME, PLAN_JOB_NAME, build_migration_definitions

    caplog.set_level(logging.DEBUG)
    defs = build_migration_definitions(config_path=leaky_project / "metaxy.toml")
    recorded = []
    with dg.DagsterInstance.ephemeral() as instance:
        for job in (PLAN_JOB_NAME, APPLY_JOB_NAME):
            result = defs.resolve_job_def(job).execute_in_process(instance=instance, raise_on_error=False)
            assert not result.success  # the backfill cannot reach its database...
            failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data.description
            assert "postgresql://metaxy:***@127.0.0.1:1/annotations" in failure  # ...and says so, redacted
            run = instance.get_run_by_id(result.run_id)
            recorded += [repr(run.run_config), repr(run.tags)]
            for entry in instance.all_logs(result.run_id):
                recorded += [entry.user_message or "", repr(entry.dagster_event)]
    recorded.append("\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records))
    for text in recorded:
        assert_clean(text, "into Dagster")
