"""S3 helpers shared by the example's migrations (boto3, configured only through the standard AWS settings).

Nothing here names an endpoint or a credential: boto3 reads ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``),
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_PROFILE`` / an instance role, and ``AWS_REGION``
/ ``AWS_DEFAULT_REGION`` itself. The example's run script points them at a local moto server; in production
the same code reads the real bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl

#: columns of :func:`objects_frame`
OBJECT_SCHEMA = {
    "key": pl.String,
    "size_bytes": pl.Int64,
    "etag": pl.String,
    "last_modified": pl.Datetime("us", "UTC"),
}


def s3_client() -> Any:
    """A boto3 S3 client from the standard AWS configuration chain."""
    import boto3

    return boto3.client("s3")


def iter_object_pages(
    client: Any, bucket: str, prefix: str, *, page_size: int = 1000
) -> Iterator[pl.DataFrame]:
    """Every object under ``s3://bucket/prefix``, one frame (``OBJECT_SCHEMA``) per listing page."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
        yield objects_frame(page.get("Contents", []))


def objects_frame(contents: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "key": [o["Key"] for o in contents],
            "size_bytes": [int(o["Size"]) for o in contents],
            "etag": [str(o.get("ETag", "")).strip('"') for o in contents],
            "last_modified": [o["LastModified"] for o in contents],
        },
        schema=OBJECT_SCHEMA,
    )


def sample_uid_from_key(prefix: str, suffix: str) -> pl.Expr:
    """``<prefix>[any/folders/]<sample_uid><suffix>`` -> ``sample_uid``; null for keys of another shape.

    The id is the file name without ``suffix``, so date-partitioned layouts (``videos/2024/05/x.mp4``) work.
    """
    key = pl.col("key")
    name = key.str.split("/").list.last()
    stem = name.str.strip_suffix(suffix) if suffix else name
    shaped = key.str.starts_with(prefix) & (name.str.ends_with(suffix) if suffix else pl.lit(True))
    return pl.when(shaped & (stem.str.len_chars() > 0)).then(stem).otherwise(None)


def object_uri(bucket: str) -> pl.Expr:
    return pl.lit(f"s3://{bucket}/") + pl.col("key")
