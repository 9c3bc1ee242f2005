"""The flat batch encoding that carries records across the host/guest boundary.

A batch travels as one ``list<u8>`` so the boundary costs one copy per batch instead
of several lists and strings per record. The buffer holds ``count`` records back to
back, all integers little-endian::

    offset: i64, timestamp_ms: i64 (i64::MIN when absent),
    key_len: u32 (u32::MAX when absent), value_len: u32 (u32::MAX when absent),
    header_count: u32,
    key bytes, value bytes,
    header_count times:
        name_len: u32, value_len: u32 (u32::MAX when absent), name bytes (UTF-8), value bytes

:func:`decode` checks every length against the buffer, so a corrupt buffer raises
:class:`WireError`, never returns garbage. :class:`BatchEncoder` writes the format
(the test harness uses it). Tenants never need this module.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

#: Timestamp value that marks "no timestamp".
ABSENT_TIMESTAMP = -(1 << 63)
#: Length value that marks an absent key, value or header value.
ABSENT_LEN = 0xFFFF_FFFF
#: Bytes of the fixed part of a record.
RECORD_FIXED_LEN = 8 + 8 + 4 + 4 + 4
#: Bytes of the fixed part of a header.
HEADER_FIXED_LEN = 4 + 4

_RECORD = struct.Struct("<qqIII")
_HEADER = struct.Struct("<II")

#: A header as decoded: its name and its value (``None`` when absent).
Header = Tuple[str, Optional[bytes]]


class WireError(ValueError):
    """The buffer is not a valid batch (same messages as the Rust SDK)."""


@dataclass(frozen=True)
class RawRecord:
    """One decoded record: where its parts are in the buffer.

    Keys and values are kept as ``(start, length)`` spans (``length`` -1: absent) so
    that decoding copies nothing; headers are decoded at once because their names
    must be checked for UTF-8 anyway, and batches only carry them for processors
    that read them.
    """

    offset: int
    timestamp_ms: Optional[int]
    key_start: int
    key_len: int
    value_start: int
    value_len: int
    headers: Tuple[Header, ...]


# The fixed fields, as (end position, name), to name the one a short buffer cuts.
_RECORD_FIELDS = ((8, "offset"), (16, "timestamp"), (20, "key length"), (24, "value length"), (28, "header count"))
_HEADER_FIELDS = ((4, "header name length"), (8, "header value length"))


def _fixed_field(available: int, fields: Tuple[Tuple[int, str], ...]) -> str:
    return next(name for end, name in fields if available < end)


def _truncated(record: int, field: str) -> WireError:
    return WireError(f"corrupt batch: buffer ends inside the {field} of record {record}")


def decode(buf: bytes | memoryview, count: int) -> list[RawRecord]:
    """Decodes and checks ``count`` records; raises :class:`WireError` if the buffer
    is not exactly that."""
    view = memoryview(buf)
    end = len(view)
    pos = 0
    records: list[RawRecord] = []
    unpack_record = _RECORD.unpack_from
    unpack_header = _HEADER.unpack_from
    for index in range(count):
        if end - pos < RECORD_FIXED_LEN:
            raise _truncated(index, _fixed_field(end - pos, _RECORD_FIELDS))
        offset, timestamp, key_len, value_len, header_count = unpack_record(view, pos)
        pos += RECORD_FIXED_LEN
        key_start = pos
        if key_len == ABSENT_LEN:
            key_len = -1
        elif end - pos < key_len:
            raise _truncated(index, "key")
        else:
            pos += key_len
        value_start = pos
        if value_len == ABSENT_LEN:
            value_len = -1
        elif end - pos < value_len:
            raise _truncated(index, "value")
        else:
            pos += value_len
        headers: list[Header] = []
        for h in range(header_count):
            if end - pos < HEADER_FIXED_LEN:
                raise _truncated(index, _fixed_field(end - pos, _HEADER_FIELDS))
            name_len, hvalue_len = unpack_header(view, pos)
            pos += HEADER_FIXED_LEN
            if end - pos < name_len:
                raise _truncated(index, "header name")
            try:
                name = str(view[pos : pos + name_len], "utf-8")
            except UnicodeDecodeError:
                raise WireError(f"corrupt batch: name of header {h} of record {index} is not UTF-8") from None
            pos += name_len
            hvalue: Optional[bytes] = None
            if hvalue_len != ABSENT_LEN:
                if end - pos < hvalue_len:
                    raise _truncated(index, "header value")
                hvalue = bytes(view[pos : pos + hvalue_len])
                pos += hvalue_len
            headers.append((name, hvalue))
        records.append(
            RawRecord(
                offset=offset,
                timestamp_ms=None if timestamp == ABSENT_TIMESTAMP else timestamp,
                key_start=key_start,
                key_len=key_len,
                value_start=value_start,
                value_len=value_len,
                headers=tuple(headers),
            )
        )
    if pos != end:
        raise WireError(f"corrupt batch: {end - pos} bytes left after the {count} records announced")
    return records


def _length(data: Optional[bytes], what: str) -> int:
    if data is None:
        return ABSENT_LEN
    if len(data) >= ABSENT_LEN:
        raise ValueError(f"ferry wire: {what} of {len(data)} bytes does not fit the batch encoding")
    return len(data)


class BatchEncoder:
    """Writes records into the flat batch encoding (for tests and tools)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._count = 0

    def push(
        self,
        offset: int,
        timestamp_ms: Optional[int],
        key: Optional[bytes],
        value: Optional[bytes],
        headers: Iterable[Tuple[str, Optional[bytes]]] = (),
    ) -> None:
        """Appends one record. A ``timestamp_ms`` of i64::MIN reads back as ``None``."""
        header_list: Sequence[Tuple[str, Optional[bytes]]] = list(headers)
        self._buf += _RECORD.pack(
            offset,
            ABSENT_TIMESTAMP if timestamp_ms is None else timestamp_ms,
            _length(key, "key"),
            _length(value, "value"),
            len(header_list),
        )
        if key is not None:
            self._buf += key
        if value is not None:
            self._buf += value
        for name, hvalue in header_list:
            raw_name = name.encode("utf-8")
            self._buf += _HEADER.pack(_length(raw_name, "header name"), _length(hvalue, "header value"))
            self._buf += raw_name
            if hvalue is not None:
                self._buf += hvalue
        self._count += 1

    @property
    def count(self) -> int:
        """How many records were pushed."""
        return self._count

    def bytes(self) -> bytes:
        """The encoded records."""
        return bytes(self._buf)
