"""Uploads to S3 that overlap the writing of the file: a local file is uploaded in parts while it grows.

The bulk writer (:mod:`metaxy_core.store.bulk`) has polars encode a bucket's Parquet file into a local spool
file (its native writer: no Python call per chunk, so no wait for the GIL while upload threads run) while a
thread uploads what is already written, part by part (an S3 multipart upload); the object appears when the
last part is in. Encoding and uploading a bucket thus overlap instead of following each other.

A file that stays under :data:`SINGLE_PUT_BYTES` while it is written (a bucket of up to ~2M rows of a typical
feature table) is sent as one PUT once written instead: assembling a multipart upload costs the server a pass
over the whole object on top of receiving it (moto: 0.5 s for 60 MB, against 0.3 s for one PUT of it), and the
bucket pipeline (:class:`metaxy_core.store.bulk.BackgroundWriter`) overlaps that PUT with the next bucket's
work anyway. The multipart upload starts only once the file grows past that size.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from metaxy_core.store._storage import boto_errors, bucket_key, s3_client
from metaxy_core.store.buckets import remove_stale_spills, spill_prefix, spill_root

#: part size of a multipart upload (S3 wants at least 5 MiB but the last)
UPLOAD_PART_BYTES = 16 * 1024 * 1024
#: files up to this size are one PUT of the finished file (no multipart upload, see the module docs)
SINGLE_PUT_BYTES = 128 * 1024 * 1024
#: parts uploading at once: bounds what is held in memory
_PARTS_IN_FLIGHT = 2
#: how often the uploader looks whether the file grew
_POLL_S = 0.01


def upload_while_writing(
    path: str, options: Mapping[str, str], write: Callable[[str], None], *, timed_out: Callable[..., bool]
) -> int:
    """Call ``write(local_path)`` (it writes a file there, sequentially) and upload that file as the object
    ``path`` (``s3://bucket/key``) while it is written; returns its size.

    Nothing is visible at ``path`` until the whole file is in. On any failure the upload is abandoned (its
    parts dropped; not when ``timed_out(exc)``: the endpoint stalled, an abort would wait again) and the
    first error is raised: the writer's, or the client's own (as ``OSError``, for the store's error
    translation). The uploaded bytes are checked against the finished file (CRC32) before the object is
    completed, so a writer that went back over what it wrote is never committed half-updated.
    """
    return _staged(path, options, write, timed_out)()


def upload_pieces(
    files: Iterable[tuple[str, Callable[[str], None]]],
    options: Mapping[str, str],
    *,
    timed_out: Callable[..., bool],
) -> list[int]:
    """Upload files written one after the other (``(path, write)`` pairs, see :func:`upload_while_writing`),
    each one's upload overlapping the writing of the next; returns their sizes, in order.

    A bucket split into a few files goes up while it is still being encoded without a multipart upload
    (whose assembly costs the server a pass over the object): one PUT in flight, the next file being written.
    On a failure nothing more is written or sent and the first error is raised once the upload in flight
    ended; objects already uploaded stay (uncommitted files: the caller removes them, or the step's re-run).
    """
    sizes: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metaxy-upload-put") as pool:
        pending: concurrent.futures.Future[int] | None = None
        try:
            for path, write in files:
                finish = _staged(path, options, write, timed_out)
                if pending is not None:
                    sizes.append(pending.result())
                pending = pool.submit(finish)
            if pending is not None:
                sizes.append(pending.result())
        except BaseException:
            if pending is not None:
                concurrent.futures.wait([pending])  # it removes its own spool file, whatever happens
            raise
    return sizes


def _staged(
    path: str, options: Mapping[str, str], write: Callable[[str], None], timed_out: Callable[..., bool]
) -> Callable[[], int]:
    """Call ``write`` on a spool file while uploading the parts it grows (a big file); returns the call that
    ends the upload (one PUT of the finished file, or the multipart completion), removes the spool file and
    returns the size. A failure before that abandons the upload and removes the file (see
    :func:`upload_while_writing`)."""
    root = spill_root()  # a bucket's file: the spill folder (METAXY_SPILL_DIR), not a small default /tmp
    os.makedirs(root, exist_ok=True)
    remove_stale_spills(root)  # spool files of processes that died mid-upload (named like spill folders)
    fd, spool = tempfile.mkstemp(prefix=f"{spill_prefix()}upload-", suffix=".parquet", dir=root)
    os.close(fd)

    def fail(exc: BaseException, uploader: _Uploader) -> None:
        uploader.abort(quietly=timed_out(exc))
        with contextlib.suppress(OSError):
            os.remove(spool)

    uploader = _Uploader(path, options, spool)
    thread = threading.Thread(target=uploader.run, name="metaxy-upload", daemon=True)
    thread.start()
    try:
        try:
            write(spool)
        finally:
            uploader.written.set()
            thread.join()
        if uploader.error is not None:
            raise uploader.error
    except BaseException as exc:
        fail(exc, uploader)
        raise

    def finish() -> int:
        try:
            uploader.complete()
        except BaseException as exc:
            fail(exc, uploader)
            raise
        with contextlib.suppress(OSError):
            os.remove(spool)
        return uploader.size

    return finish


class _Uploader:
    """Uploads the spool file as it grows (see :func:`upload_while_writing`); errors are kept, not raised."""

    def __init__(self, path: str, options: Mapping[str, str], spool: str) -> None:
        self.bucket, self.key = bucket_key(path)
        self.client = s3_client(options)
        self.spool = spool
        self.written = threading.Event()  # the writer returned (successfully or not)
        self.error: BaseException | None = None
        self.size = 0
        self._crc = 0
        self._upload_id: str | None = None
        self._parts: list[concurrent.futures.Future[dict[str, Any]]] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._single = False  # the finished file stayed under SINGLE_PUT_BYTES: one PUT at complete()

    def run(self) -> None:
        try:
            with open(self.spool, "rb") as f:
                while True:
                    done = self.written.is_set()  # before the size: once set, the size is final
                    size = os.fstat(f.fileno()).st_size
                    if self._upload_id is None and size <= SINGLE_PUT_BYTES:
                        if done:  # never grew past a single PUT: complete() sends the finished file
                            self._single = True
                            return
                        self.written.wait(_POLL_S)
                        continue
                    ready = size - self.size
                    if ready >= UPLOAD_PART_BYTES or (done and ready):
                        last = done and ready < 2 * UPLOAD_PART_BYTES  # no part below the minimum
                        chunk = os.pread(f.fileno(), ready if last else UPLOAD_PART_BYTES, self.size)
                        self.size += len(chunk)
                        self._crc = zlib.crc32(chunk, self._crc)
                        self._send(chunk)
                        if last:
                            return
                    elif done:
                        return
                    else:
                        self.written.wait(_POLL_S)
        except Exception as exc:  # noqa: BLE001 - raised by upload_while_writing
            self.error = exc

    def _send(self, chunk: bytes) -> None:
        if self._upload_id is None:
            with boto_errors():
                started = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)
            self._upload_id = str(started["UploadId"])
            self._pool = concurrent.futures.ThreadPoolExecutor(_PARTS_IN_FLIGHT, "metaxy-upload-part")
        running = [f for f in self._parts if not f.done()]
        if len(running) >= _PARTS_IN_FLIGHT:  # memory stays at a few parts: wait for the oldest
            running[0].result()
        assert self._pool is not None
        self._parts.append(self._pool.submit(self._part, len(self._parts) + 1, chunk))

    def _part(self, number: int, chunk: bytes) -> dict[str, Any]:
        with boto_errors():
            answer = self.client.upload_part(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=chunk
            )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def complete(self) -> None:
        """Make the object visible, once every part is in and they are the finished file."""
        if self._single:  # the writer returned: the file is final, sent as it is now
            self.size = os.path.getsize(self.spool)
            with boto_errors(), open(self.spool, "rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body)
            return
        parts = [f.result() for f in self._parts]
        self._close_pool()
        crc = 0
        with open(self.spool, "rb") as f:
            while block := f.read(8 * 1024 * 1024):
                crc = zlib.crc32(block, crc)
        if crc != self._crc or os.path.getsize(self.spool) != self.size:
            raise OSError(f"the file written for {self.key} changed while it was uploaded; nothing committed")
        with boto_errors():
            done = {"Parts": parts}
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload=done
            )

    def abort(self, *, quietly: bool) -> None:
        for future in self._parts:
            future.cancel()
        self._close_pool()
        if self._upload_id is not None and not quietly:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id)

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
