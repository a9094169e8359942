"""S3 faults against a real S3 API (moto's server on 127.0.0.1): the server dies mid-apply, the endpoint is
dead from the start, the credentials are wrong, the bucket is missing. Every case ends in one ``FAILED:``
line naming the store and the fix, within a bounded time, with the secret key nowhere in the output; after
an outage the tables are intact and the re-run completes."""

from __future__ import annotations

import json
import os
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
