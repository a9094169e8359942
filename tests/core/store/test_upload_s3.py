"""Streamed uploads to a real S3 API (moto's server): a file bigger than one part goes up as a multipart
upload while it is written and reads back byte for byte; an abandoned upload leaves no object and no open
upload; a failing endpoint is reported when the upload finishes, not inside the writer's ``write`` call."""

from __future__ import annotations

import os

import pytest

from metaxy_core.store import upload as upload_module
from metaxy_core.store.upload import S3Upload
from metaxy_core.testing import S3Location

PART = 5 * 1024 * 1024  # S3's smallest part


def test_a_file_bigger_than_a_part_is_uploaded_in_parts_while_written_and_reads_back_equal(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload_module, "UPLOAD_PART_BYTES", PART)
    data = os.urandom(2 * PART + 12345)
    upload = S3Upload(f"{s3.root}/big.bin", s3.storage_options)
    for start in range(0, len(data), 64 * 1024):  # the way a Parquet writer writes: many small pieces
        upload.write(data[start : start + 64 * 1024])
    assert s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads"), "parts go up while written"
    upload.finish()
    assert upload.size == len(data)
    body = s3.client().get_object(Bucket=s3.bucket, Key=f"{s3.prefix}/big.bin")["Body"].read()
    assert body == data


def test_an_abandoned_upload_leaves_no_object_and_no_open_upload(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload_module, "UPLOAD_PART_BYTES", PART)
    upload = S3Upload(f"{s3.root}/gone.bin", s3.storage_options)
    upload.write(os.urandom(PART + 1))
    upload.abort()
    client = s3.client()
    assert not client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")
    assert not client.list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}/gone.bin").get("Contents")


def test_a_small_file_is_one_put_at_finish(s3: S3Location) -> None:
    upload = S3Upload(f"{s3.root}/small.bin", s3.storage_options)
    upload.write(b"parquet bytes")
    assert not s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}/small.bin").get("Contents")
    upload.finish()
    assert (
        s3.client().get_object(Bucket=s3.bucket, Key=f"{s3.prefix}/small.bin")["Body"].read()
        == b"parquet bytes"
    )


def test_a_dead_endpoint_fails_the_upload_at_finish_not_inside_write(
    closed_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload_module, "UPLOAD_PART_BYTES", PART)
    options = {"AWS_ENDPOINT_URL": closed_endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    upload = S3Upload("s3://bucket/prefix/x.bin", {**options, "timeout": "2s"})
    assert upload.write(os.urandom(PART + 1)) == PART + 1  # the writer is not interrupted
    with pytest.raises(OSError, match="Could not connect|connect"):
        upload.finish()
    upload.abort(quietly=True)
