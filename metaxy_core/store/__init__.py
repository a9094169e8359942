"""Metadata stores: the interface and the Delta Lake implementation."""

from metaxy_core.store.base import Increment as Increment
from metaxy_core.store.base import MetadataStore as MetadataStore
from metaxy_core.store.delta import DeltaMetadataStore as DeltaMetadataStore
from metaxy_core.store.delta import MetadataNotFoundError as MetadataNotFoundError
from metaxy_core.store.system import PushResult as PushResult
from metaxy_core.store.system import SnapshotRecord as SnapshotRecord

__all__ = [
    "DeltaMetadataStore",
    "Increment",
    "MetadataNotFoundError",
    "MetadataStore",
    "PushResult",
    "SnapshotRecord",
]
