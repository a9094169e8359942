"""DeltaMetadataStore on S3: the core round trip against a real S3 API (moto's server), credentials from
the AWS chain resolved at each call (a key rotated under a running store), and clear, secret-free, bounded
failures for a missing bucket, an unreachable endpoint or refused credentials."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from botocore.exceptions import ClientError

from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.errors import ConfigError, StoreUnreachableError
from metaxy_core.store._io import polars_options
from metaxy_core.store._storage import parse_duration, resolve_storage_options
from metaxy_core.testing import S3Location, S3Server, video_graph
from metaxy_core.testing import video_raw_rows as raw_rows

RAW, EMB = "video/raw", "video/embeddings"


@pytest.fixture
def video() -> FeatureGraph:
    return video_graph()


def round_trip(store: DeltaMetadataStore, graph: FeatureGraph) -> None:
    """Write a root, compute and write its downstream, change one upstream sample, see it as changed."""
    assert store.write_metadata(RAW, raw_rows([1, 2, 3]), graph=graph) == 3
    added = store.resolve_update(EMB, graph=graph).collect().added
    assert sorted(added["sample_uid"]) == [1, 2, 3]
    store.write_metadata(EMB, added.with_columns(dim=pl.lit(512)), graph=graph)
    assert store.resolve_update(EMB, graph=graph).counts() == {"added": 0, "changed": 0, "removed": 0}

    store.write_metadata(RAW, raw_rows([2], frames="new-"), graph=graph)
    increment = store.resolve_update(EMB, graph=graph).collect()
    assert (increment.added.height, increment.changed["sample_uid"].to_list(), increment.removed.height) == (
        0,
        [2],
        0,
    )
    emb = store.read_metadata(EMB, graph=graph).collect()
    assert sorted(emb["sample_uid"]) == [1, 2, 3] and set(emb["dim"]) == {512}
    assert store.read_metadata(RAW, graph=graph, include_history=True).collect().height == 4


# ------------------------------------------------------------------------------------------- round trip
def test_core_round_trip_on_s3(s3: S3Location, video: FeatureGraph) -> None:
    store = DeltaMetadataStore(s3.root, s3.storage_options)
    round_trip(store, video)

    assert store.push_snapshot(video).already_pushed is False
    assert store.push_snapshot(video).already_pushed is True
    assert store.load_snapshot_graph(video.snapshot_version).snapshot_version == video.snapshot_version
    assert store.table_version(RAW) == 1

    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}/")
    keys = {obj["Key"] for obj in listed["Contents"]}
    assert f"{s3.prefix}/video__raw/_delta_log/00000000000000000001.json" in keys
    assert f"{s3.prefix}/video__embeddings/_delta_log/00000000000000000000.json" in keys
    assert any(k.startswith(f"{s3.prefix}/_metaxy_system/snapshots/") for k in keys)


def test_credentials_come_from_the_aws_chain_when_only_env_vars_are_set(
    s3: S3Location, video: FeatureGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    store = DeltaMetadataStore(s3.root)  # no storage options at all

    options = store.storage_options
    assert "AWS_ACCESS_KEY_ID" not in options and "AWS_SECRET_ACCESS_KEY" not in options  # resolved at use
    assert options["AWS_ENDPOINT_URL"] == s3.endpoint
    assert options["AWS_ALLOW_HTTP"] == "true"  # the endpoint is plain http
    assert options["AWS_REGION"] == "us-east-1"
    round_trip(store, video)


def test_credentials_come_from_a_named_profile(
    s3: S3Location, video: FeatureGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[metaxy-test]\naws_access_key_id = {s3.key_id}\naws_secret_access_key = {s3.secret}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    store = DeltaMetadataStore(s3.root, {"AWS_PROFILE": "metaxy-test", "AWS_ENDPOINT_URL": s3.endpoint})

    assert store.storage_options["AWS_PROFILE"] == "metaxy-test"  # kept: each client resolves it at use
    assert "AWS_SECRET_ACCESS_KEY" not in store.storage_options
    store.write_metadata(RAW, raw_rows([1]), graph=video)
    assert store.read_metadata(RAW, graph=video).collect().height == 1


# -------------------------------------------------------------------------------------------- failures
def test_a_missing_bucket_is_unreachable_with_a_clear_secret_free_message(
    s3: S3Location, video: FeatureGraph
) -> None:
    store = DeltaMetadataStore("s3://no-such-bucket-metaxy/prefix", s3.storage_options)
    uri = "s3://no-such-bucket-metaxy/prefix/video__raw"

    with pytest.raises(StoreUnreachableError) as read_error:
        store.read_metadata(RAW, graph=video)
    with pytest.raises(StoreUnreachableError) as write_error:
        store.write_metadata(RAW, raw_rows([1]), graph=video)

    for exc, action in ((read_error, "open the table at"), (write_error, "write to")):
        message = str(exc.value)
        assert message.startswith(
            f"cannot {action} {uri}: bucket 'no-such-bucket-metaxy' does not exist at the S3 endpoint "
        )
        assert message.endswith(
            "Check that the bucket exists, the endpoint (AWS_ENDPOINT_URL) is up, and the credentials "
            "(AWS_ACCESS_KEY_ID / profile / role) may access it"
        )
        assert s3.secret not in message and s3.secret not in repr(exc.value)
        assert "\x1b[" not in message  # delta-rs' coloured error chain is cleaned up


def test_an_unreachable_endpoint_fails_within_the_default_retry_window(
    closed_endpoint: str, video: FeatureGraph
) -> None:
    secret = "unreachable-secret-Xy7"
    store = DeltaMetadataStore(
        "s3://bucket/prefix",
        {"AWS_ENDPOINT_URL": closed_endpoint, "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": secret},
    )
    started = time.monotonic()
    with pytest.raises(StoreUnreachableError) as exc:
        store.read_metadata(RAW, graph=video)
    assert time.monotonic() - started < 20  # retry_timeout 15s (object_store's own default: 180 s)
    message = str(exc.value)
    assert message.startswith(
        "cannot open the table at s3://bucket/prefix/video__raw: the bucket is unreachable or "
    )
    assert message.endswith("(AWS_ACCESS_KEY_ID / profile / role) may access it")
    assert secret not in message


def test_lower_case_retry_options_reach_delta_rs_and_polars(
    closed_endpoint: str, s3: S3Location, video: FeatureGraph
) -> None:
    options = {**s3.storage_options, "max_retries": "1"}
    dead = DeltaMetadataStore("s3://bucket/prefix", {**options, "AWS_ENDPOINT_URL": closed_endpoint})
    started = time.monotonic()
    with pytest.raises(StoreUnreachableError, match=r"^cannot write to s3://bucket/prefix/video__raw: "):
        dead.write_metadata(RAW, raw_rows([1]), graph=video)
    assert time.monotonic() - started < 5

    live = DeltaMetadataStore(s3.root, options)  # polars' parquet reader takes max_retries only as an int
    live.write_metadata(RAW, raw_rows([1, 2]), graph=video)
    assert live.read_metadata(RAW, graph=video).collect().height == 2


# ---------------------------------------------------------------------------------- storage options
def test_s3_options_get_a_request_timeout_and_bounded_retries_that_explicit_options_override() -> None:
    keys = {"aws_access_key_id": "k", "aws_secret_access_key": "s"}
    defaults = resolve_storage_options("s3://b/p", keys)
    assert (defaults["timeout"], defaults["retry_timeout"], defaults["connect_timeout"]) == (
        "30s",
        "15s",
        "5s",
    )
    options = resolve_storage_options("s3://b/p", {**keys, "max_retries": "7", "connect_timeout": "1s"})
    assert options["AWS_ACCESS_KEY_ID"] == "k"  # AWS keys are normalised to upper case
    assert options["max_retries"] == "7"  # other keys stay as given: delta-rs matches them case-sensitively
    assert options["connect_timeout"] == "1s"  # explicit wins over the default
    assert not {"MAX_RETRIES", "CONNECT_TIMEOUT", "aws_access_key_id"} & set(options)
    # a short timeout shortens the retry budget and the connect timeout with it
    short = resolve_storage_options("s3://b/p", {**keys, "timeout": "4s"})
    assert (short["timeout"], short["retry_timeout"], short["connect_timeout"]) == ("4s", "4s", "4s")


def test_a_timeout_option_that_is_not_a_duration_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"timeout='soon' is not a positive duration.*'30s'"):
        resolve_storage_options("s3://b/p", {"AWS_ACCESS_KEY_ID": "k", "timeout": "soon"})
    assert [parse_duration(t) for t in ("30s", "500ms", "1m 30s", "45", "2 min", "x", "")] == [
        30.0,
        0.5,
        90.0,
        45.0,
        120.0,
        None,
        None,
    ]


def test_polars_reader_gets_the_store_timeout_and_its_retry_budget_as_ints() -> None:
    options = resolve_storage_options(
        "s3://b/p",
        {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "timeout": "4s", "max_retries": "2"},
    )
    assert polars_options(options) == {
        "max_retries": 2,
        "timeout": "4s",
        "connect_timeout": "4s",
        "retry_timeout_ms": 4000,
    }
    assert polars_options({"some_local_option": "x"}) is None  # a local store: nothing for polars


def test_local_roots_get_the_options_as_given() -> None:
    assert resolve_storage_options("/tmp/store", {"some_option": "x"}) == {"some_option": "x"}


def test_the_s3_endpoint_env_var_for_s3_wins_and_https_needs_no_allow_http(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:9000")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3-only:9000")
    options = resolve_storage_options("s3://b/p", {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    assert options["AWS_ENDPOINT_URL"] == "https://s3-only:9000"
    assert "AWS_ALLOW_HTTP" not in options


def test_store_repr_never_shows_storage_options(s3: S3Location) -> None:
    store = DeltaMetadataStore(s3.root, s3.storage_options)
    assert repr(store) == f"DeltaMetadataStore({s3.root!r}, project='default')"
    assert s3.secret in store.secrets


def test_delta_rs_readers_that_hold_the_gil_work_against_the_test_server(
    s3: S3Location, video: FeatureGraph
) -> None:
    """The fixture's server runs in its own process, so a reader that blocks holding the GIL cannot
    deadlock it."""
    from deltalake import DeltaTable

    store = DeltaMetadataStore(s3.root, s3.storage_options)
    store.write_metadata(RAW, raw_rows([1, 2, 3]), graph=video)
    table = DeltaTable(store.table_uri(RAW), storage_options=store.storage_options)
    assert sum(batch.num_rows for batch in table.scan()) == 3


# --------------------------------------------------------------------------- credentials that rotate
@pytest.fixture(scope="module")
def iam_s3() -> Iterator[tuple[S3Server, Any]]:
    """A moto server that checks every request's signature against its IAM users' keys (after the first five
    requests), an admin and a worker user allowed everything, and a bucket; yields (server, the admin's IAM
    client) to create and delete the worker's keys."""
    server = S3Server(env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "5"})
    try:
        bootstrap = server.client("iam", key_id="bootstrap", secret="bootstrap")
        policy = json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        )
        for user in ("admin", "worker"):
            bootstrap.create_user(UserName=user)
            bootstrap.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=policy)
        admin = bootstrap.create_access_key(UserName="admin")["AccessKey"]  # the fifth: auth from now on
        signed = {"key_id": admin["AccessKeyId"], "secret": admin["SecretAccessKey"]}
        server.client(**signed).create_bucket(Bucket="rotating")
        yield server, server.client("iam", **signed)
    finally:
        server.close()


def _new_key(iam: Any) -> tuple[str, str]:
    key = iam.create_access_key(UserName="worker")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _rotated(iam: Any, old: tuple[str, str]) -> tuple[str, str]:
    """A new key for the worker; the old one is deleted (refused from now on)."""
    new = _new_key(iam)
    iam.delete_access_key(UserName="worker", AccessKeyId=old[0])
    return new


@pytest.mark.parametrize("source", ["profile", "environment"])
def test_a_key_rotated_between_two_calls_of_one_store_object_is_used_by_the_second(
    source: str,
    iam_s3: tuple[S3Server, Any],
    video: FeatureGraph,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Credentials come from the AWS chain when each store call is made, not when the store object was
    built: a long-running worker survives a key rotated under it (a rewritten credentials file, as a secrets
    agent does, or a changed environment), and no key ever shows in the store's options or repr."""
    server, iam = iam_s3
    credentials = tmp_path / "credentials"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)

    def provide(key: tuple[str, str]) -> None:
        if source == "profile":
            credentials.write_text(
                f"[worker]\naws_access_key_id = {key[0]}\naws_secret_access_key = {key[1]}\n"
            )
        else:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])

    first = _new_key(iam)
    provide(first)
    options = {
        "AWS_ENDPOINT_URL": server.endpoint,
        **({"AWS_PROFILE": "worker"} if source == "profile" else {}),
    }
    store = DeltaMetadataStore(f"s3://rotating/{source}", options)
    store.write_metadata(RAW, raw_rows([1, 2]), graph=video)
    assert store.read_metadata(RAW, graph=video).collect().height == 2

    second = _rotated(iam, first)
    provide(second)
    with pytest.raises(ClientError):  # the rotation is real: the first key is refused now
        server.client(key_id=first[0], secret=first[1]).list_objects_v2(Bucket="rotating")
    store.write_metadata(RAW, raw_rows([3]), graph=video)  # the same store object, the new key
    assert store.read_metadata(RAW, graph=video).collect().height == 3
    assert store.resolve_update(EMB, graph=video).counts()["added"] == 3

    for key in (first, second):
        assert key[0] not in str(store.storage_options) and key[1] not in str(store.storage_options)
        assert key[1] not in repr(store)
    iam.delete_access_key(UserName="worker", AccessKeyId=second[0])


def test_a_refused_rotated_key_fails_clearly_without_showing_it(
    iam_s3: tuple[S3Server, Any], video: FeatureGraph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, iam = iam_s3
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    key = _new_key(iam)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key[1])
    store = DeltaMetadataStore("s3://rotating/refused", {"AWS_ENDPOINT_URL": server.endpoint})
    store.write_metadata(RAW, raw_rows([1]), graph=video)
    iam.delete_access_key(UserName="worker", AccessKeyId=key[0])  # revoked, nothing replaces it
    with pytest.raises(StoreUnreachableError, match="credentials") as refused:
        store.read_metadata(RAW, graph=video).collect()
    assert key[1] not in str(refused.value) and key[0] not in str(refused.value)


# ------------------------------------------------------------------------------------------ Rust panics
_RELAY_SCRIPT = r"""
import os
from metaxy_core.store._panics import quiet_panics

panic = (
    b"thread 'tokio-runtime-worker' panicked at object_store/src/client/retry.rs:12:34:\n"
    b"called `Result::unwrap()` on an `Err` value: Timeout\n"
    b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n"
)
os.write(2, b"before\n")
with quiet_panics():
    os.write(2, b"inside 1\n")
    os.write(2, panic)
    os.write(2, b"inside 2\n")
    with quiet_panics():  # nested (another guarded call, or another thread's)
        os.write(2, panic.replace(b"tokio-runtime-worker", b"other"))
    os.write(2, b"progress 50%\r")
os.write(2, panic.replace(b"tokio-runtime-worker", b"outside"))
os.write(2, b"after\n")
"""


def test_rust_panic_text_is_kept_off_stderr_during_guarded_calls_and_everything_else_passes() -> None:
    """Rust's panic hook writes straight to descriptor 2; while a guarded S3 call runs, panic blocks are
    dropped (kept at DEBUG) and every other byte reaches stderr in order; outside, nothing is filtered."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _RELAY_SCRIPT], capture_output=True, timeout=60, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert err.startswith("before\ninside 1\ninside 2\nprogress 50%\r"), err
    assert "tokio-runtime-worker" not in err and "'other'" not in err
    assert "thread 'outside' panicked" in err and err.endswith("after\n")  # outside a guarded call: kept
    assert err.count("RUST_BACKTRACE") == 1


def test_a_rust_panic_inside_a_guarded_store_call_becomes_one_store_error() -> None:
    """pyo3 raises PanicException (a BaseException) for a panic on the calling thread; the store reports it
    as a StoreError naming the table, never as a traceback through the user's code."""
    from metaxy_core.errors import StoreError
    from metaxy_core.store._io import guard

    options = resolve_storage_options(
        "s3://b/p", {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "sec-ret"}
    )
    with pytest.raises(
        StoreError, match=r"^cannot write to s3://b/p/t: the storage client failed internally"
    ):
        with guard("write to", "s3://b/p/t", options):
            raise pl.exceptions.PanicException("called `Option::unwrap()` on a `None` value")


# ------------------------------------------------------------------------------------ a stalled endpoint
def test_after_a_timeout_calls_to_that_endpoint_fail_at_once_for_one_timeout_then_go_out_again(
    video: FeatureGraph,
) -> None:
    """The circuit breaker: a stalled step must not wait one more timeout for each clean-up call (log the
    failure, delete uploaded files, release the lease); once the timeout has passed, requests go out again."""
    import socket

    with socket.socket() as blackhole:  # accepts connections, never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(64)
        endpoint = f"http://127.0.0.1:{blackhole.getsockname()[1]}"
        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        store = DeltaMetadataStore("s3://bucket/stalled", {**options, "timeout": "2s"})
        timings, messages = [], []
        for pause in (0.0, 0.0, 2.5):
            time.sleep(pause)
            started = time.monotonic()
            with pytest.raises(StoreUnreachableError, match=rf"the S3 endpoint {endpoint} timed out") as exc:
                store.read_metadata(RAW, graph=video)
            timings.append(time.monotonic() - started)
            messages.append(str(exc.value))
    assert (
        "no answer within the store's timeout, 2s" in messages[0]
        and "`timeout` storage option" in messages[0]
    )
    assert "s ago (store timeout 2s); not called again yet" in messages[1]
    assert "no answer within the store's timeout, 2s" in messages[2]
    first, refused, again = timings
    assert 1.5 < first < 8 and refused < 0.5 and again > 1.5, timings


def test_a_timeout_in_a_frame_an_operation_collected_itself_reads_as_the_stores_stall_error(
    tmp_path: Path,
) -> None:
    """Operations collect lazy frames of the store outside its guarded calls; a request that timed out there
    is reported like any other stall (endpoint, timeout, the setting), other errors are left alone."""
    options = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    store = DeltaMetadataStore("s3://bucket/ops", {**options, "timeout": "3s"})
    raw = TimeoutError(
        "object-store error: Generic S3 error: Error performing GET http://127.0.0.1:9/bucket/ops/p.parquet "
        "in 3.0s - HTTP error: error sending request\n\nCaused by:\n    operation timed out"
    )
    translated = store.storage_error(raw)
    assert isinstance(translated, StoreUnreachableError)
    assert str(translated).startswith(
        "cannot read from s3://bucket/ops: the S3 endpoint http://127.0.0.1:9 timed out "
        "(no answer within the store's timeout, 3s)"
    )
    assert store.storage_error(ValueError("a bug in the operation")) is None
    assert store.storage_error(StoreUnreachableError("already clear")) is None
    assert DeltaMetadataStore(tmp_path / "local").storage_error(raw) is None


def test_other_s3_failures_in_a_frame_an_operation_collected_name_the_table_the_endpoint_and_the_checks(
    tmp_path: Path,
) -> None:
    """A refused key, a bucket gone or a server down, met by an operation's own collect(): one line naming
    the table whose file was requested, the endpoint and what to check, without the secret."""
    secret = "sEcReT-collected-0042"
    options = {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": secret,
    }
    store = DeltaMetadataStore("s3://bucket/ops", options)
    refused = OSError(
        "Generic S3 error: Error performing GET http://127.0.0.1:9/bucket/ops/video__raw/part-0.parquet in "
        f"2ms - Client error with status 403 Forbidden: <Code>InvalidAccessKeyId</Code> {secret}\n\n"
        "stack backtrace:\n   0: <unknown>"
    )
    message = str(store.storage_error(refused))
    assert message.startswith(
        "cannot read from s3://bucket/ops/video__raw: the bucket is unreachable or the credentials are "
        "refused at the S3 endpoint http://127.0.0.1:9 (OSError: Generic S3 error: Error performing GET"
    )
    assert "AWS_ACCESS_KEY_ID" in message and "re-run" in message and "\n" not in message
    assert secret not in message and "backtrace" not in message
    gone = pl.exceptions.ComputeError(
        "object-store error: Generic S3 error: NoSuchBucket for "
        "/bucket/ops/_metaxy_system/lock/_delta_log/0.json"
    )
    assert str(store.storage_error(gone)).startswith(
        "cannot read from s3://bucket/ops/_metaxy_system/lock: bucket 'bucket' does not exist"
    )
    other = OSError("Generic S3 error: Error performing PUT http://127.0.0.1:9/bucket/ops/x - 500 SlowDown")
    assert str(store.storage_error(other)).startswith(
        "cannot read from s3://bucket/ops at the S3 endpoint http://127.0.0.1:9: OSError: Generic S3 error"
    )
    assert store.storage_error(OSError("[Errno 2] No such file or directory: 'model.bin'")) is None
