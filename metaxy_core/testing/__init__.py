"""Public test helpers: a small feature graph, a seeded store, a migration writer and an S3 server.

Nothing in ``metaxy_core`` imports this package, and importing it needs no test extras: moto is imported by
the S3 server's child process only, pytest by :mod:`metaxy_core.testing.fixtures` only (a pytest plugin).
"""

from metaxy_core.testing.data import seed_video_store as seed_video_store
from metaxy_core.testing.data import video_raw_rows as video_raw_rows
from metaxy_core.testing.graphs import EMBEDDINGS as EMBEDDINGS
from metaxy_core.testing.graphs import RAW as RAW
from metaxy_core.testing.graphs import VideoFeatures as VideoFeatures
from metaxy_core.testing.graphs import declare_video_features as declare_video_features
from metaxy_core.testing.graphs import video_features as video_features
from metaxy_core.testing.graphs import video_graph as video_graph
from metaxy_core.testing.migrations import RECONCILE as RECONCILE
from metaxy_core.testing.migrations import write_migration as write_migration
from metaxy_core.testing.s3 import S3Location as S3Location
from metaxy_core.testing.s3 import S3Server as S3Server
from metaxy_core.testing.s3 import free_port as free_port

__all__ = [
    "EMBEDDINGS",
    "RAW",
    "RECONCILE",
    "S3Location",
    "S3Server",
    "VideoFeatures",
    "declare_video_features",
    "free_port",
    "seed_video_store",
    "video_features",
    "video_graph",
    "video_raw_rows",
    "write_migration",
]
