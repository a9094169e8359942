"""DeltaMetadataStore on S3: the core round trip against a real S3 API (moto's server), credentials from
boto3's chain, and clear, secret-free, bounded failures for a missing bucket or an unreachable endpoint."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl
import pytest

from metaxy_core import DeltaMetadataStore, FeatureGraph
from metaxy_core.errors import ConfigError, StoreUnreachableError
from metaxy_core.store._io import polars_options
from metaxy_core.store._storage import parse_duration, resolve_storage_options
from metaxy_core.testing import S3Location, video_graph
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
        assert message.startswith(f"cannot {action} {uri}: bucket 'no-such-bucket-metaxy' does not exist (")
        assert message.endswith(
            "Check that the bucket exists, the endpoint (AWS_ENDPOINT_URL) is up, and the credentials "
            "(AWS_ACCESS_KEY_ID / profile / role) may access it."
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
    assert message.endswith("(AWS_ACCESS_KEY_ID / profile / role) may access it.")
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
