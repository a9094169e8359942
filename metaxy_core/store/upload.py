"""Streamed uploads to S3: a file object whose bytes go up in parts while its writer produces the next ones.

The bulk writer (:mod:`metaxy_core.store.bulk`) encodes a bucket's Parquet file with polars straight into an
:class:`S3Upload`, so on S3 the encoding and the upload of a bucket overlap instead of following each other.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
from collections.abc import Mapping
from typing import Any

from metaxy_core.store._storage import boto_errors, bucket_key, s3_client

#: part size of a streamed upload (S3 wants at least 5 MiB but the last); smaller objects are one PUT
UPLOAD_PART_BYTES = 16 * 1024 * 1024
#: parts uploading at once while the writer produces the next: bounds the memory a stream holds
_PARTS_IN_FLIGHT = 2


class S3Upload(io.RawIOBase):
    """A write-only file that becomes the object ``path`` (``s3://bucket/key``) once :meth:`finish` returns.

    What is written goes up in parts of :data:`UPLOAD_PART_BYTES` (an S3 multipart upload) sent by background
    threads while the writer produces the next part, so encoding a large file and uploading it overlap; an
    object smaller than one part is one PUT at :meth:`finish`. Until then nothing is visible; :meth:`abort`
    (call it on any failure) abandons the parts. A failed part is raised by :meth:`finish`, never inside
    ``write`` (a writer such as polars' Parquet writer would wrap it), so the client's error, with its
    timeout text, reaches the store's error translation as it is. Requests use the store's client (its
    credentials and timeouts).
    """

    def __init__(self, path: str, options: Mapping[str, str]) -> None:
        super().__init__()
        self._bucket, self._key = bucket_key(path)
        self._client = s3_client(options)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[concurrent.futures.Future[dict[str, Any]]] = []
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._error: BaseException | None = None
        #: bytes written so far (the object's size once finished)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.size += view.nbytes
        if self._error is None:
            self._buffer += view
            if len(self._buffer) >= UPLOAD_PART_BYTES:
                chunk, self._buffer = bytes(self._buffer), bytearray()
                self._send(chunk)
        return view.nbytes

    def _send(self, chunk: bytes) -> None:
        try:
            if self._upload_id is None:
                with boto_errors():
                    started = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)
                self._upload_id = str(started["UploadId"])
                self._pool = concurrent.futures.ThreadPoolExecutor(_PARTS_IN_FLIGHT, "metaxy-upload")
            running = [f for f in self._parts if not f.done()]
            if len(running) >= _PARTS_IN_FLIGHT:  # memory stays at a few parts: wait for the oldest
                running[0].result()
            assert self._pool is not None
            self._parts.append(self._pool.submit(self._part, len(self._parts) + 1, chunk))
        except Exception as exc:  # noqa: BLE001 - kept for finish(): the writer must not wrap it
            self._error = exc

    def _part(self, number: int, chunk: bytes) -> dict[str, Any]:
        with boto_errors():
            answer = self._client.upload_part(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=chunk
            )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def finish(self) -> None:
        """Make the object visible (complete the upload, or PUT a small one); raises the first failure."""
        if self._error is None and self._upload_id is None:
            with boto_errors():
                self._client.put_object(Bucket=self._bucket, Key=self._key, Body=bytes(self._buffer))
            return
        if self._error is None and self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            self._send(chunk)
        if self._error is not None:
            raise self._error
        parts = [f.result() for f in self._parts]
        with boto_errors():
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
            )
        self._close_pool()

    def abort(self, *, quietly: bool = False) -> None:
        """Abandon the upload (best effort): its parts are dropped, no object appears. ``quietly``: do not
        call the endpoint (it just timed out: an abort would wait a full timeout again)."""
        for future in self._parts:
            future.cancel()
        self._close_pool()
        if self._upload_id is not None and not quietly:
            with contextlib.suppress(Exception):
                self._client.abort_multipart_upload(
                    Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
                )

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
