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

:func:`index` (and :func:`decode`, built on it) checks every length against the
buffer, so a corrupt buffer raises :class:`WireError`, never returns garbage. :class:`BatchEncoder` writes the format
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
#: The three lengths of a record, 16 bytes into it.
_LENGTHS = struct.Struct("<III")

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


def index(buf: bytes | memoryview, count: int) -> list[int]:
    """Checks that the buffer holds exactly ``count`` well-formed records (raises
    :class:`WireError` otherwise) and returns where each record starts.

    This is the only pass over the whole batch: a record's fields are read from
    its start when asked for (:func:`fields`, :func:`headers_at`), so a batch
    costs one small unpack per record until the processor looks at it.
    """
    view = memoryview(buf)
    end = len(view)
    pos = 0
    starts = [0] * count
    unpack_lengths = _LENGTHS.unpack_from
    fixed, absent = RECORD_FIXED_LEN, ABSENT_LEN
    for index in range(count):
        if end - pos < fixed:
            raise _truncated(index, _fixed_field(end - pos, _RECORD_FIELDS))
        key_len, value_len, header_count = unpack_lengths(view, pos + 16)
        starts[index] = pos
        # The common record in as few steps as possible; anything else (headers,
        # or a length past the end) takes the careful path, which names the fault.
        after = pos + fixed + (0 if key_len == absent else key_len) + (0 if value_len == absent else value_len)
        if after > end or header_count:
            after = _check_record(view, pos + fixed, end, index, key_len, value_len, header_count)
        pos = after
    if pos != end:
        raise WireError(f"corrupt batch: {end - pos} bytes left after the {count} records announced")
    return starts


def _check_record(view: memoryview, pos: int, end: int, index: int, key_len: int, value_len: int, header_count: int) -> int:
    """Checks the key, value and headers of record ``index`` (from ``pos``, past
    its fixed part); returns where the record ends."""
    if key_len != ABSENT_LEN:
        if end - pos < key_len:
            raise _truncated(index, "key")
        pos += key_len
    if value_len != ABSENT_LEN:
        if end - pos < value_len:
            raise _truncated(index, "value")
        pos += value_len
    return _check_headers(view, pos, end, index, header_count) if header_count else pos


def _check_headers(view: memoryview, pos: int, end: int, index: int, header_count: int) -> int:
    """Checks the headers of record ``index`` from ``pos``; returns where they end."""
    unpack_header = _HEADER.unpack_from
    for h in range(header_count):
        if end - pos < HEADER_FIXED_LEN:
            raise _truncated(index, _fixed_field(end - pos, _HEADER_FIELDS))
        name_len, hvalue_len = unpack_header(view, pos)
        pos += HEADER_FIXED_LEN
        if end - pos < name_len:
            raise _truncated(index, "header name")
        try:
            str(view[pos : pos + name_len], "utf-8")
        except UnicodeDecodeError:
            raise WireError(f"corrupt batch: name of header {h} of record {index} is not UTF-8") from None
        pos += name_len
        if hvalue_len != ABSENT_LEN:
            if end - pos < hvalue_len:
                raise _truncated(index, "header value")
            pos += hvalue_len
    return pos


def fields(view: memoryview, start: int) -> RawRecord:
    """The record that starts at ``start`` of a buffer :func:`index` checked."""
    offset, timestamp, key_len, value_len, header_count = _RECORD.unpack_from(view, start)
    key_start = start + RECORD_FIXED_LEN
    value_start = key_start
    if key_len == ABSENT_LEN:
        key_len = -1
    else:
        value_start += key_len
    headers_start = value_start
    if value_len == ABSENT_LEN:
        value_len = -1
    else:
        headers_start += value_len
    return RawRecord(
        offset=offset,
        timestamp_ms=None if timestamp == ABSENT_TIMESTAMP else timestamp,
        key_start=key_start,
        key_len=key_len,
        value_start=value_start,
        value_len=value_len,
        headers=headers_at(view, headers_start, header_count),
    )


def headers_at(view: memoryview, pos: int, header_count: int) -> Tuple[Header, ...]:
    """``header_count`` headers from ``pos`` of a buffer :func:`index` checked."""
    headers: list[Header] = []
    unpack_header = _HEADER.unpack_from
    for _ in range(header_count):
        name_len, hvalue_len = unpack_header(view, pos)
        pos += HEADER_FIXED_LEN
        name = str(view[pos : pos + name_len], "utf-8")
        pos += name_len
        hvalue: Optional[bytes] = None
        if hvalue_len != ABSENT_LEN:
            hvalue = bytes(view[pos : pos + hvalue_len])
            pos += hvalue_len
        headers.append((name, hvalue))
    return tuple(headers)


def decode(buf: bytes | memoryview, count: int) -> list[RawRecord]:
    """Decodes and checks ``count`` records; raises :class:`WireError` if the buffer
    is not exactly that."""
    view = memoryview(buf)
    return [fields(view, start) for start in index(view, count)]


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
