"""S3 faults against a real S3 API (moto's server on 127.0.0.1): the server dies mid-apply, the endpoint is
dead from the start, the credentials are wrong, the bucket is missing. Every case ends in one ``FAILED:``
line naming the store and the fix, within a bounded time, with the secret key nowhere in the output; after
an outage the tables are intact and the re-run completes."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import polars as pl
import pytest
from deltalake import DeltaTable

from metaxy_core import DeltaMetadataStore
from metaxy_core.testing import S3Server, free_port

from . import _support as s

KEY_ID = "AKIARELIABILITY00001"
SECRET = "rel-S3cr3t-k3y-do-not-print-4f9a"
REGION = "us-east-1"
BUCKET = "rel-bucket"
#: an apply against a dead endpoint must give up within this many seconds (measured: see docs/reliability.md)
FAIL_WITHIN_S = 60


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": REGION,
        **extra,
    }


def _options(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": REGION,
    }


def _assert_one_clear_failure(proc: object, *, mentions: list[str]) -> None:
    text = s.output(proc)
    assert proc.returncode == 1, text  # type: ignore[attr-defined]
    assert proc.stderr.count("FAILED:") == 1 and "Traceback" not in text, text  # type: ignore[attr-defined]
    for needle in mentions:
        assert needle in text, f"{needle!r} missing from:\n{text}"
    assert SECRET not in text


@pytest.fixture(scope="module")
def moto() -> Iterator[S3Server]:
    server = S3Server()
    boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name=REGION,
    ).create_bucket(Bucket=BUCKET)
    yield server
    server.close()


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Latest views after an uninterrupted apply of the same migration on a local store."""
    project = s.make_seeded_project(tmp_path_factory.mktemp("s3ref") / "p")
    proc = s.run_cli(["migrations", "apply"], project)
    assert proc.returncode == 0, s.output(proc)
    return s.latest_views(DeltaMetadataStore(project / "store", project=s.PROJECT))


def test_server_stopped_mid_apply_fails_clearly_then_the_rerun_completes(
    moto: S3Server, local_reference: dict[str, object], tmp_path: Path
) -> None:
    root = f"s3://{BUCKET}/mid-apply"
    store = DeltaMetadataStore(root, _options(moto.endpoint), project=s.PROJECT)
    s.seed_store(store)
    project = s.write_project(tmp_path / "p", root=root, migration=s.migration_yaml())
    log = tmp_path / "commits.log"
    apply = s.spawn_cli(
        ["migrations", "apply"],
        project,
        _env(moto.endpoint, METAXY_TEST_HOOK=json.dumps({"log": str(log)})),
        hook=True,
    )
    deadline = time.monotonic() + 120
    while (log.read_text() if log.exists() else "").count("video__emb") < 3:  # mid-way through video/emb
        assert apply.poll() is None and time.monotonic() < deadline, apply.communicate()
        time.sleep(0.01)
    moto.stop()
    stopped = time.monotonic()
    out, err = apply.communicate(timeout=FAIL_WITHIN_S + 60)
    took = time.monotonic() - stopped
    print(f"time to fail after the S3 server stopped mid-apply: {took:.1f} s")
    proc = type("P", (), {"returncode": apply.returncode, "stdout": out, "stderr": err})()
    _assert_one_clear_failure(proc, mentions=[root, "unreachable", "AWS_ENDPOINT_URL", "re-run"])
    assert "video/emb" in err  # the step that was cut off
    assert took < FAIL_WITHIN_S

    moto.start()
    # nothing is corrupt: every table opens and reads at its latest version
    for table in [
        "video__raw",
        "video__emb",
        "video__cap",
        "video__joint",
        "_metaxy_system/migration_events",
        "_metaxy_system/lock",
        "_metaxy_system/snapshots",
    ]:
        dt = DeltaTable(f"{root}/{table}", storage_options=store.storage_options)
        assert pl.scan_delta(dt).select(pl.len()).collect().item() > 0
    assert {k: v.height for k, v in s.latest_views(store, s.G1).items()} == {k: s.N_ROWS for k in s.KEYS}
    status = s.run_cli(["migrations", "status", "--format", "json"], project, _env(moto.endpoint))
    assert status.returncode == 0 and json.loads(status.stdout)[0]["status"] == "in_progress", s.output(
        status
    )

    rerun = s.run_cli(["migrations", "apply"], project, _env(moto.endpoint))
    assert rerun.returncode == 0, s.output(rerun)
    views = s.latest_views(store)
    s.assert_frames_equal(views, local_reference)  # type: ignore[arg-type]
    s.assert_no_duplicates(store, views)
    s.assert_log_consistent(store)


def test_dead_endpoint_fails_within_bounded_time(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    project = s.write_project(tmp_path / "p", root=f"s3://{BUCKET}/dead", migration=s.migration_yaml())
    timings = {}
    for verb in (["push"], ["migrations", "status"], ["migrations", "apply"]):
        start = time.monotonic()
        proc = s.run_cli(verb, project, _env(endpoint), timeout=FAIL_WITHIN_S + 60)
        timings[" ".join(verb)] = round(time.monotonic() - start, 1)
        _assert_one_clear_failure(proc, mentions=[f"s3://{BUCKET}/dead", "unreachable", "AWS_ENDPOINT_URL"])
    print("time to fail against a dead endpoint:", json.dumps(timings))
    assert max(timings.values()) < FAIL_WITHIN_S, timings


def test_missing_bucket_is_named(moto: S3Server, tmp_path: Path) -> None:
    project = s.write_project(tmp_path / "p", root="s3://no-such-bucket/rel", migration=s.migration_yaml())
    for verb in (["push"], ["migrations", "apply"]):
        proc = s.run_cli(verb, project, _env(moto.endpoint))
        _assert_one_clear_failure(proc, mentions=["no-such-bucket", "does not exist"])


@pytest.fixture(scope="module")
def auth_moto() -> Iterator[tuple[str, str, str]]:
    """A moto server enforcing IAM authentication (INITIAL_NO_AUTH_ACTION_COUNT), with one user allowed to use
    one bucket; yields (endpoint, key id, secret)."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = S3Server(env=env)
    try:
        iam = boto3.client(
            "iam",
            endpoint_url=server.endpoint,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
            region_name=REGION,
        )
        iam.create_user(UserName="metaxy")
        iam.put_user_policy(
            UserName="metaxy",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="metaxy")["AccessKey"]
        # from here on every request must be signed by a known key
        boto3.client(
            "s3",
            endpoint_url=server.endpoint,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            region_name=REGION,
        ).create_bucket(Bucket=BUCKET)
        yield server.endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.close()


def test_wrong_credentials_are_refused_clearly_and_the_right_ones_work(
    auth_moto: tuple[str, str, str], tmp_path: Path
) -> None:
    endpoint, key_id, secret = auth_moto
    project = s.write_project(tmp_path / "p", root=f"s3://{BUCKET}/auth", migration=s.migration_yaml())
    good = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key_id,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": REGION,
    }
    ok = s.run_cli(["push"], project, good)
    assert ok.returncode == 0 and "pushed snapshot" in ok.stdout, s.output(ok)
    wrong_secret = {**good, "AWS_SECRET_ACCESS_KEY": SECRET}
    unknown_key = {**good, "AWS_ACCESS_KEY_ID": "AKIANOBODY0000000000", "AWS_SECRET_ACCESS_KEY": SECRET}
    for env in (wrong_secret, unknown_key):
        for verb in (["push"], ["migrations", "status"]):
            proc = s.run_cli(verb, project, env)
            _assert_one_clear_failure(proc, mentions=[f"s3://{BUCKET}/auth", "credentials"])
            assert secret not in s.output(proc)


def test_a_hanging_endpoint_is_bounded_by_the_request_timeout_which_the_user_can_lower(
    tmp_path: Path,
) -> None:
    """An endpoint that accepts connections and never answers (a stuck proxy, a black-holed route)."""
    import socket

    with socket.socket() as blackhole:
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        endpoint = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        project = s.write_project(tmp_path / "p", root=f"s3://{BUCKET}/hang", migration=s.migration_yaml())
        timings = {}
        for label, extra in (
            ("default", {}),
            (
                "timeout=2s,retry_timeout=4s",
                {"METAXY_STORE_STORAGE_OPTIONS": '{"timeout": "2s", "retry_timeout": "4s"}'},
            ),
        ):
            start = time.monotonic()
            proc = s.run_cli(
                ["migrations", "status"], project, _env(endpoint, **extra), timeout=FAIL_WITHIN_S + 60
            )
            timings[label] = round(time.monotonic() - start, 1)
            _assert_one_clear_failure(proc, mentions=[f"s3://{BUCKET}/hang", "unreachable", "timed out"])
    print("time to fail against a hanging endpoint:", json.dumps(timings))
    assert timings["default"] < FAIL_WITHIN_S and timings["timeout=2s,retry_timeout=4s"] < 15, timings


# ------------------------------------------------------------------------------------- a frozen server
#: the store's request timeout in the stall tests; METAXY_TEST_STALL_TIMEOUT_S=30 measures the default (30 s)
STALL_TIMEOUT_S = int(os.environ.get("METAXY_TEST_STALL_TIMEOUT_S", "4"))
#: allowed on top of it: the stalled request's own retry, a second request already in flight, CLI exit
STALL_MARGIN_S = 2 * STALL_TIMEOUT_S + 6
FEATURE_TABLES = ["video__raw", "video__emb", "video__cap", "video__joint"]


def _uncommitted_files(server: S3Server, root: str) -> dict[str, int]:
    """Key -> size of the data files under the feature tables that no table's latest version references."""
    bucket, prefix = root.removeprefix("s3://").split("/", 1)
    client = server.client(key_id=KEY_ID, secret=SECRET)
    out = {}
    for table in FEATURE_TABLES:
        uri = f"{root}/{table}"
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{table}/").get("Contents", [])
        options = {**_options(server.endpoint), "AWS_ALLOW_HTTP": "true"}
        referenced = set(DeltaTable(uri, storage_options=options).file_uris())
        for item in listed:
            if item["Key"].endswith(".parquet") and f"s3://{bucket}/{item['Key']}" not in referenced:
                out[item["Key"]] = int(item["Size"])
    return out


def _watch_freeze(server: S3Server) -> list[float]:
    """Epoch times at which ``server`` was seen stopped (polled every 5 ms in a thread until it is)."""
    seen: list[float] = []

    def poll() -> None:
        deadline = time.monotonic() + 300
        while not server.frozen and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(time.time())

    threading.Thread(target=poll, daemon=True).start()
    return seen


@pytest.mark.parametrize("phase", ["read", "upload", "commit"])
def test_a_server_frozen_mid_step_fails_it_within_the_timeout_and_the_rerun_completes(
    phase: str, local_reference: dict[str, object], tmp_path: Path
) -> None:
    """SIGSTOP on the S3 server (it accepts connections and never answers, like a hung endpoint) while a
    step reads its inputs (``read``), as it uploads its first data file (``upload``), or once its files are
    uploaded and it commits them (``commit``): one clear FAILED line naming the endpoint and the setting, no
    Rust panic text, within the timeout plus a margin; after SIGCONT the re-run removes the files the failed
    step left uncommitted and completes with the latest views of an uninterrupted run."""
    server = S3Server()
    try:
        server.client(key_id=KEY_ID, secret=SECRET).create_bucket(Bucket=BUCKET)
        root = f"s3://{BUCKET}/frozen-{phase}"
        store = DeltaMetadataStore(root, _options(server.endpoint), project=s.PROJECT)
        s.seed_store(store)
        project = s.write_project(tmp_path / "p", root=root, migration=s.migration_yaml())
        timeouts = {} if STALL_TIMEOUT_S == 30 else {"timeout": f"{STALL_TIMEOUT_S}s"}  # 30 s: the default
        env = _env(server.endpoint, METAXY_STORE_STORAGE_OPTIONS=json.dumps(timeouts))
        plan = {"freeze_pid": server.pid, "freeze_at": "write" if phase == "upload" else "read"}
        if phase == "commit":  # the first commit to a feature table: its data file is already uploaded
            plan = {}
            server.freeze_on("PUT", "/video__cap/_delta_log/0")
        frozen = _watch_freeze(server)
        apply = s.spawn_cli(
            ["migrations", "apply"], project, {**env, "METAXY_TEST_HOOK": json.dumps(plan)}, hook=True
        )
        out, err = apply.communicate(timeout=STALL_TIMEOUT_S * 10 + 60)
        ended = time.time()
        assert frozen, (out, err)
        took = ended - frozen[0]
        print(f"{phase}: failed {took:.1f} s after the server froze (timeout {STALL_TIMEOUT_S} s)")
        proc = type("P", (), {"returncode": apply.returncode, "stdout": out, "stderr": err})()
        _assert_one_clear_failure(
            proc, mentions=[root, server.endpoint, "timed out", "`timeout` storage option", "re-run"]
        )
        assert "panicked" not in err and "RUST_BACKTRACE" not in err, err
        assert took < STALL_TIMEOUT_S + STALL_MARGIN_S, (took, err)

        server.thaw()
        time.sleep(3.5)  # requests queued while frozen are dropped for 3 s after a freeze_on freeze
        left = _uncommitted_files(server, root)
        print(f"{phase}: the failed step left {len(left)} uncommitted files, {sum(left.values())} bytes")
        if phase == "commit":
            assert left, "the failed commit's data file is on the server, uncommitted"
        rerun = s.run_cli(["migrations", "apply"], project, env)
        assert rerun.returncode == 0, s.output(rerun)
        views = s.latest_views(store)
        s.assert_frames_equal(views, local_reference)  # type: ignore[arg-type]
        s.assert_no_duplicates(store, views)
        s.assert_log_consistent(store)
        assert _uncommitted_files(server, root) == {}, "the re-run removes what the failed step left"
    finally:
        server.close()


# --------------------------------------------------------------------------------- a key revoked mid-step
@contextlib.contextmanager
def _iam_server() -> Iterator[tuple[S3Server, dict[str, tuple[str, str]]]]:
    """A moto server enforcing IAM authentication, with BUCKET and two access keys of one user allowed
    everything: ``doomed`` (to revoke) and ``spare``; yields (server, {name: (key id, secret)})."""
    server = S3Server(env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        iam = server.client("iam", key_id="bootstrap", secret="bootstrap")
        iam.create_user(UserName="metaxy")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="metaxy", PolicyName="all", PolicyDocument=json.dumps(policy))
        keys = {}
        for name in ("doomed", "spare"):
            key = iam.create_access_key(UserName="metaxy")["AccessKey"]
            keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])
        # from here on every request must be signed by a known key
        server.client(key_id=keys["spare"][0], secret=keys["spare"][1]).create_bucket(Bucket=BUCKET)
        yield server, keys
    finally:
        server.close()


def _keyed(options: dict[str, str], key: tuple[str, str]) -> dict[str, str]:
    return {**options, "AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1]}


def test_a_key_revoked_before_an_operation_collects_its_frame_reads_as_one_error_naming_table_and_endpoint(
    tmp_path: Path,
) -> None:
    """A lazy frame of the store, collected by an operation itself after its key was revoked (403 from the
    real server): :meth:`DeltaMetadataStore.storage_error` turns the raw client error into one line naming
    the table, the endpoint and what to check, without the secret."""
    with _iam_server() as (server, keys):
        root = f"s3://{BUCKET}/collected"
        store = DeltaMetadataStore(root, _keyed(_options(server.endpoint), keys["doomed"]), project=s.PROJECT)
        s.seed_store(store)
        frame = store.read_metadata(s.KEYS[0], graph=s.G1)  # opened now, read at collect()
        iam = server.client("iam", key_id=keys["spare"][0], secret=keys["spare"][1])
        iam.delete_access_key(UserName="metaxy", AccessKeyId=keys["doomed"][0])
        with pytest.raises(Exception) as raw:  # noqa: PT011 - whatever the client raises
            frame.collect()
        assert "403" in str(raw.value) or "InvalidAccessKeyId" in str(raw.value), raw.value
        message = str(store.storage_error(raw.value))
    table = s.KEYS[0].replace("/", "__")
    assert message.startswith(
        f"cannot read from {root}/{table}: the bucket is unreachable or the credentials are refused at "
        f"the S3 endpoint {server.endpoint} ("
    ), message
    assert message.endswith("may access it; then re-run: the step resumes") and "\n" not in message
    assert keys["doomed"][1] not in message


def test_a_key_revoked_while_a_step_reads_fails_it_naming_the_table_and_the_endpoint_and_a_new_key_completes(
    local_reference: dict[str, object], tmp_path: Path
) -> None:
    """The step's access key is deleted (IAM) once it has the lease and starts scanning a feature table, so
    its next requests are refused with 403: one ``FAILED:`` line naming a table of the store, the endpoint
    and what to check, no secret, no raw client error; the re-run with a valid key completes with the latest
    views of an uninterrupted run."""
    with _iam_server() as (server, keys):
        root = f"s3://{BUCKET}/revoked"
        store = DeltaMetadataStore(root, _keyed(_options(server.endpoint), keys["spare"]), project=s.PROJECT)
        s.seed_store(store)
        project = s.write_project(tmp_path / "p", root=root, migration=s.migration_yaml())
        key_id, secret = keys["doomed"]
        revoke = {"endpoint": server.endpoint, "user": "metaxy", "key_id": key_id, "secret": secret}
        plan = {"log": str(tmp_path / "hook.log"), "revoke": revoke}
        env = _keyed(_env(server.endpoint), keys["doomed"])
        apply = s.spawn_cli(
            ["migrations", "apply"], project, {**env, "METAXY_TEST_HOOK": json.dumps(plan)}, hook=True
        )
        out, err = apply.communicate(timeout=180)
        assert "revoked_at" in (tmp_path / "hook.log").read_text(), (out, err)
        proc = type("P", (), {"returncode": apply.returncode, "stdout": out, "stderr": err})()
        _assert_one_clear_failure(
            proc,
            mentions=[f"{root}/", server.endpoint, "credentials are refused", "AWS_ACCESS_KEY_ID", "re-run"],
        )
        failed = next(line for line in err.splitlines() if line.startswith("FAILED:"))
        assert "StoreUnreachableError: cannot " in failed and secret not in out + err, failed
        assert ".." not in failed.replace("...", ""), failed

        rerun = s.run_cli(["migrations", "apply"], project, _keyed(_env(server.endpoint), keys["spare"]))
        assert rerun.returncode == 0, s.output(rerun)
        views = s.latest_views(store)
        s.assert_frames_equal(views, local_reference)  # type: ignore[arg-type]
        s.assert_no_duplicates(store, views)
        s.assert_log_consistent(store)
