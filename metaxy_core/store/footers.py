"""Row groups of a local Parquet file: their row counts and the min/max of one column, from the file's footer.

Why: bucketing a table by id ranges only saves work if a bucket's scan skips what lies outside its range, and
polars skips *row groups* by their footer statistics. The Delta log has statistics per *file* only; a file
of a million rows written in id order holds many row groups of disjoint id ranges, which cut buckets inside
the file when the footer is known (see :func:`metaxy_core.store.layout.row_group_layout`).

The footer is Thrift (compact protocol, ``FileMetaData`` of ``parquet.thrift``); only row counts and the
statistics of one column are decoded, everything else is skipped. pyarrow would read it too, but it is not a
dependency (and would cost ~40 MiB of memory in every process that imports it). Anything unexpected (not
Parquet, a truncated or corrupt footer, missing or legacy statistics) answers None: the caller then treats
the file as one unit, as the Delta log describes it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

#: footers larger than this are not read (a wide table's footer holds every column's metadata)
MAX_FOOTER_BYTES = 16 << 20

# Thrift compact protocol type codes
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)
# Parquet physical types whose plain encoding this module decodes
_INT32, _INT64, _BYTE_ARRAY = 1, 2, 6


class FooterError(ValueError):
    """The bytes are not a footer this module can read."""


@dataclass(frozen=True)
class RowGroup:
    """One row group: its rows and the min/max of the column asked for (None when not recorded)."""

    rows: int
    lo: int | str | None
    hi: int | str | None


class _Reader:
    """A cursor over Thrift compact-protocol bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise FooterError("truncated footer")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise FooterError("varint too long")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def binary(self) -> bytes:
        n = self.varint()
        if n < 0 or self.pos + n > len(self.data):
            raise FooterError("truncated binary")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def field(self, last: int) -> tuple[int, int]:
        """(field id, type) of the next struct field; type ``_STOP`` at the struct's end."""
        header = self.byte()
        kind = header & 0x0F
        if kind == _STOP:
            return 0, _STOP
        delta = header >> 4
        return (last + delta if delta else self.zigzag()), kind

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        return size, header & 0x0F

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > 32:
            raise FooterError("nesting too deep")
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            self.binary()
        elif kind in (_LIST, _SET):
            size, elem = self.list_header()
            for _ in range(size):
                self.skip_element(elem, depth + 1)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip_element(types >> 4, depth + 1)
                    self.skip_element(types & 0x0F, depth + 1)
        elif kind == _STRUCT:
            last = 0
            while True:
                last, ftype = self.field(last)
                if ftype == _STOP:
                    return
                self.skip(ftype, depth + 1)
        else:
            raise FooterError(f"unknown thrift type {kind}")

    def skip_element(self, kind: int, depth: int) -> None:
        if kind in (_TRUE, _FALSE):  # a bool inside a list or map is one byte
            self.byte()
        else:
            self.skip(kind, depth)


def _decode(raw: bytes | None, physical: int | None) -> int | str | None:
    if raw is None or physical is None:
        return None
    if physical == _BYTE_ARRAY:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if physical == _INT64 and len(raw) == 8:
        return int(struct.unpack("<q", raw)[0])
    if physical == _INT32 and len(raw) == 4:
        return int(struct.unpack("<i", raw)[0])
    return None


def _column_stats(r: _Reader, column: str) -> tuple[bool, bytes | None, bytes | None, int | None]:
    """Read a ``ColumnMetaData``: (is it ``column``, min, max, physical type)."""
    last, name, lo, hi, physical = 0, None, None, None, None
    while True:
        last, kind = r.field(last)
        if kind == _STOP:
            return name == column, lo, hi, physical
        if last == 1 and kind == _I32:
            physical = r.zigzag()
        elif last == 3 and kind == _LIST:
            size, _ = r.list_header()
            parts = [r.binary().decode("utf-8", "replace") for _ in range(size)]
            name = ".".join(parts)
        elif last == 12 and kind == _STRUCT:
            slast = 0
            while True:
                slast, skind = r.field(slast)
                if skind == _STOP:
                    break
                if slast == 5 and skind == _BINARY:  # max_value (legacy max/min use another sort order)
                    hi = r.binary()
                elif slast == 6 and skind == _BINARY:
                    lo = r.binary()
                else:
                    r.skip(skind)
        else:
            r.skip(kind)


def _row_group(r: _Reader, column: str) -> RowGroup:
    last, rows, lo, hi = 0, None, None, None
    while True:
        last, kind = r.field(last)
        if kind == _STOP:
            if rows is None:
                raise FooterError("row group without a row count")
            return RowGroup(rows, lo, hi)
        if last == 1 and kind == _LIST:
            size, _ = r.list_header()
            for _ in range(size):  # ColumnChunk structs
                clast = 0
                while True:
                    clast, ckind = r.field(clast)
                    if ckind == _STOP:
                        break
                    if clast == 3 and ckind == _STRUCT:
                        found, raw_lo, raw_hi, physical = _column_stats(r, column)
                        if found:
                            lo, hi = _decode(raw_lo, physical), _decode(raw_hi, physical)
                    else:
                        r.skip(ckind)
        elif last == 3 and kind == _I64:
            rows = r.zigzag()
        else:
            r.skip(kind)


def parse_row_groups(footer: bytes, column: str) -> list[RowGroup]:
    """The row groups of a serialized ``FileMetaData`` (min/max of top-level ``column``).

    Raises:
        FooterError: the bytes are not a footer this module can read.
    """
    r = _Reader(footer)
    last, groups = 0, None
    while True:
        last, kind = r.field(last)
        if kind == _STOP:
            break
        if last == 4 and kind == _LIST:
            size, elem = r.list_header()
            if elem != _STRUCT:
                raise FooterError("row groups are not structs")
            groups = [_row_group(r, column) for _ in range(size)]
        else:
            r.skip(kind)
    if groups is None:
        raise FooterError("footer without row groups")
    return groups


def row_groups(path: str, column: str) -> list[RowGroup] | None:
    """The row groups of the local Parquet file at ``path``, or None when its footer cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < 12:
                return None
            f.seek(size - 8)
            tail = f.read(8)
            if tail[4:] != b"PAR1":
                return None
            length = int.from_bytes(tail[:4], "little")
            if length <= 0 or length > min(MAX_FOOTER_BYTES, size - 12):
                return None
            f.seek(size - 8 - length)
            footer = f.read(length)
        return parse_row_groups(footer, column)
    except (OSError, FooterError):
        return None
