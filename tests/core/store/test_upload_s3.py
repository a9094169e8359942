"""Uploads that overlap the writing of the file, to a real S3 API (moto's server): a file that grows past the
single-PUT size goes up in parts while it grows and reads back byte for byte; one that stays under it is one
PUT of the finished file (no multipart upload); a writer that fails leaves no object and no open upload; a
file the writer went back over is never completed; a dead endpoint fails the call with the client's error,
after the writer finished."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from metaxy_core.store import upload as upload_module
from metaxy_core.store._io import timed_out
from metaxy_core.store.upload import upload_pieces, upload_while_writing
from metaxy_core.testing import S3Location

PART = 5 * 1024 * 1024  # S3's smallest part


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of S3's smallest size, and a multipart upload for anything bigger than one part."""
    monkeypatch.setattr(upload_module, "UPLOAD_PART_BYTES", PART)
    monkeypatch.setattr(upload_module, "SINGLE_PUT_BYTES", PART)


def _open_uploads(s3: S3Location) -> list[object]:
    return s3.client().list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])


def _objects(s3: S3Location, name: str) -> list[object]:
    return s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"{s3.prefix}/{name}").get("Contents", [])


@pytest.mark.usefixtures("small_parts")
def test_a_file_bigger_than_a_part_goes_up_in_parts_while_it_is_written_and_reads_back_equal(
    s3: S3Location,
) -> None:
    data = os.urandom(3 * PART + 12345)
    seen_open: list[int] = []

    def write(path: str) -> None:  # a slow sequential writer, as polars' Parquet writer is
        with open(path, "wb") as f:
            for start in range(0, len(data), PART // 2):
                f.write(data[start : start + PART // 2])
                f.flush()
                time.sleep(0.05)
            seen_open.append(len(_open_uploads(s3)))

    size = upload_while_writing(f"{s3.root}/big.bin", s3.storage_options, write, timed_out=timed_out)
    assert size == len(data)
    assert seen_open == [1], "parts went up before the writer finished"
    body = s3.client().get_object(Bucket=s3.bucket, Key=f"{s3.prefix}/big.bin")["Body"].read()
    assert body == data and not _open_uploads(s3)


def test_a_small_file_is_one_put_once_written(s3: S3Location) -> None:
    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"parquet bytes")

    assert upload_while_writing(f"{s3.root}/small.bin", s3.storage_options, write, timed_out=timed_out) == 13
    assert s3.client().get_object(Bucket=s3.bucket, Key=f"{s3.prefix}/small.bin")["Body"].read() == (
        b"parquet bytes"
    )


def test_a_file_under_the_single_put_size_is_one_put_of_the_finished_file_without_a_multipart_upload(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload_module, "UPLOAD_PART_BYTES", PART)
    monkeypatch.setattr(upload_module, "SINGLE_PUT_BYTES", 4 * PART)
    data = os.urandom(3 * PART + 7)
    seen_open: list[int] = []

    def write(path: str) -> None:  # several parts' worth, written slowly, then rewritten at its start
        with open(path, "wb") as f:
            for start in range(0, len(data), PART):
                f.write(data[start : start + PART])
                f.flush()
                time.sleep(0.05)
            seen_open.append(len(_open_uploads(s3)))
            f.seek(0)
            f.write(b"final header")  # nothing was sent yet: the object is the finished file

    size = upload_while_writing(f"{s3.root}/one.bin", s3.storage_options, write, timed_out=timed_out)
    assert size == len(data) and seen_open == [0]
    body = s3.client().get_object(Bucket=s3.bucket, Key=f"{s3.prefix}/one.bin")["Body"].read()
    assert body == b"final header" + data[12:] and not _open_uploads(s3)


@pytest.mark.usefixtures("small_parts")
def test_a_writer_that_fails_leaves_no_object_and_no_open_upload(s3: S3Location) -> None:
    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(os.urandom(2 * PART + 1))
            f.flush()
            time.sleep(0.3)  # its first part is uploading
        raise ValueError("the encoder failed")

    with pytest.raises(ValueError, match="the encoder failed"):
        upload_while_writing(f"{s3.root}/gone.bin", s3.storage_options, write, timed_out=timed_out)
    assert not _open_uploads(s3) and not _objects(s3, "gone.bin")


@pytest.mark.usefixtures("small_parts")
def test_a_file_the_writer_went_back_over_is_never_completed(s3: S3Location) -> None:

    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(os.urandom(2 * PART))
            f.flush()
            time.sleep(0.3)  # the first part was read and sent
            f.seek(0)
            f.write(b"rewritten header")

    with pytest.raises(OSError, match="changed while it was uploaded"):
        upload_while_writing(f"{s3.root}/moved.bin", s3.storage_options, write, timed_out=timed_out)
    assert not _open_uploads(s3) and not _objects(s3, "moved.bin")


def test_a_dead_endpoint_fails_the_upload_with_the_clients_error(closed_endpoint: str) -> None:
    options = {"AWS_ENDPOINT_URL": closed_endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}

    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"x" * 1000)

    with pytest.raises(OSError, match="connect"):
        upload_while_writing(
            "s3://bucket/prefix/x.bin", {**options, "timeout": "2s"}, write, timed_out=timed_out
        )


def test_the_file_is_written_in_the_spill_folder_and_removed_after_the_upload(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"  # METAXY_SPILL_DIR: a large disk rather than a small default /tmp
    monkeypatch.setenv("METAXY_SPILL_DIR", str(spill))
    seen: list[Path] = []

    def write(path: str) -> None:
        seen.append(Path(path))
        Path(path).write_bytes(b"bucket file")

    assert (
        upload_while_writing(f"{s3.root}/spilled.bin", s3.storage_options, write, timed_out=timed_out) == 11
    )
    assert [p.parent for p in seen] == [spill] and list(spill.iterdir()) == []


def test_pieces_go_up_each_while_the_next_is_written_and_read_back_equal(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("METAXY_SPILL_DIR", str(tmp_path / "spill"))
    data = [os.urandom(100_000 + i) for i in range(3)]
    sent_during: list[bool] = []

    def writer(i: int):
        def write(path: str) -> None:
            if i:  # give the previous piece's PUT time to land while this one is written
                deadline = time.monotonic() + 5
                while not _objects(s3, f"piece{i - 1}.bin") and time.monotonic() < deadline:
                    time.sleep(0.02)
                sent_during.append(bool(_objects(s3, f"piece{i - 1}.bin")))
            Path(path).write_bytes(data[i])

        return write

    files = [(f"{s3.root}/piece{i}.bin", writer(i)) for i in range(3)]
    assert upload_pieces(files, s3.storage_options, timed_out=timed_out) == [len(d) for d in data]
    assert sent_during == [True, True]
    for i, expected in enumerate(data):
        assert (
            s3.client().get_object(Bucket=s3.bucket, Key=f"{s3.prefix}/piece{i}.bin")["Body"].read()
            == expected
        )
    assert list((tmp_path / "spill").iterdir()) == []


def test_a_failing_piece_stops_the_upload_and_leaves_no_local_file(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("METAXY_SPILL_DIR", str(tmp_path / "spill"))

    def write(i: int):
        def run(path: str) -> None:
            Path(path).write_bytes(b"rows")
            if i == 1:
                raise ValueError("the encoder failed")

        return run

    files = [(f"{s3.root}/p{i}.bin", write(i)) for i in range(3)]
    with pytest.raises(ValueError, match="the encoder failed"):
        upload_pieces(files, s3.storage_options, timed_out=timed_out)
    assert not _objects(s3, "p1.bin") and not _objects(s3, "p2.bin")  # nothing after the failure
    assert list((tmp_path / "spill").iterdir()) == []


def test_a_big_bulk_append_to_s3_is_one_commit_of_pieces_in_id_order_that_reads_back_equal(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    import polars as pl
    from deltalake import DeltaTable

    from metaxy_core.store import bulk
    from metaxy_core.store._io import delta_options
    from metaxy_core.store._storage import resolve_storage_options
    from metaxy_core.store.provenance import COMMIT_ORDER

    options = resolve_storage_options(s3.root, s3.storage_options)
    uri = f"{s3.root}/t"
    first = pl.DataFrame({"id": [0], "v": ["seed"], COMMIT_ORDER: [0]})
    first.write_delta(uri, storage_options=delta_options(options))
    rows = pl.DataFrame(
        {"id": range(1, 10_001), "v": [f"value-{i}" for i in range(10_000)], COMMIT_ORDER: [1] * 10_000},
        schema=first.schema,
    )
    monkeypatch.setattr(bulk, "_PIECE_BYTES", rows.estimated_size() // 4 + 1)
    assert bulk.append_frames(uri, [rows], options, ids=["id"]) == rows.height
    table = DeltaTable(uri, storage_options=delta_options(options))
    assert table.version() == 1  # one commit
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    added = actions.filter(pl.col("path").str.ends_with(".zstd.parquet")).to_dicts()
    ranges = sorted((a["min.id"], a["max.id"]) for a in added)
    assert len(added) == 4 and ranges == [(1, 2500), (2501, 5000), (5001, 7500), (7501, 10000)]
    back = pl.scan_delta(table).filter(pl.col("id") > 0).collect().sort("id")
    assert back.equals(rows)


KILLED_MID_UPLOAD = """
import json, os, signal, sys
from metaxy_core.store._io import timed_out
from metaxy_core.store.upload import upload_while_writing

target, options = sys.argv[1], json.loads(sys.argv[2])

def write(path):
    with open(path, "wb") as f:
        f.write(b"half a bucket")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # an OOM kill or a SIGKILL while the bucket file is written

upload_while_writing(target, options, write, timed_out=timed_out)
"""


def test_the_spool_file_of_a_process_killed_mid_upload_is_removed_by_the_next_upload(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    from metaxy_core.store.buckets import spill_prefix

    spill = tmp_path / "spill"
    monkeypatch.setenv("METAXY_SPILL_DIR", str(spill))
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MID_UPLOAD, f"{s3.root}/killed.bin", json.dumps(s3.storage_options)],
        env={**os.environ, "METAXY_SPILL_DIR": str(spill)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -9, child.stderr
    [left] = list(spill.iterdir())  # what the killed process left behind
    assert left.read_bytes() == b"half a bucket"
    alive = spill / f"{spill_prefix(os.getppid())}upload-x.parquet"  # a live process's spool: never touched
    alive.write_bytes(b"in use")

    assert (
        upload_while_writing(
            f"{s3.root}/next.bin",
            s3.storage_options,
            lambda p: Path(p).write_bytes(b"next"),
            timed_out=timed_out,
        )
        == 4
    )
    assert not left.exists() and alive.read_bytes() == b"in use"
