"""Views over the records of a batch.

A batch arrives as one buffer (see :mod:`ferry_sdk.wire`). Records are small views
into it: a key or value is only copied out when it is read, and ``*_view`` reads it
without copying at all.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence, Tuple, overload

from . import wire
from .wire import Header


@dataclass(frozen=True, order=True)
class TopicPartition:
    """One partition of an input topic."""

    topic: str
    partition: int

    @staticmethod
    def of(record: "Record") -> "TopicPartition":
        """The partition ``record`` comes from."""
        return TopicPartition(record.topic, record.partition)

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}"


def _no_gate() -> None:
    """Headers may be read (native use without a capability check)."""


class Batch(Sequence["Record"]):
    """A batch of records from one topic-partition, in offset order.

    It is a sequence: ``len(batch)``, ``batch[i]`` and ``for record in batch`` work.
    """

    __slots__ = ("_topic", "_partition", "_view", "_starts", "_records", "_header_gate")

    def __init__(
        self,
        topic: str,
        partition: int,
        count: int,
        records: bytes | memoryview,
        header_gate: Callable[[], None] = _no_gate,
    ) -> None:
        """Wraps an encoded batch after checking that it holds exactly ``count``
        well-formed records (raises :class:`ferry_sdk.wire.WireError` otherwise).

        ``header_gate`` runs before any record's headers are read: the component
        uses it to ask the host for headers once, the test harness to check the
        ``headers`` capability.
        """
        self._topic = topic
        self._partition = partition
        self._view = memoryview(records)
        self._header_gate = header_gate
        self._starts = wire.index(self._view, count)
        # Record objects are made when the processor first looks at the records
        # (a processor that answers the whole batch never needs them).
        self._records: Optional[Tuple["Record", ...]] = None

    def _all(self) -> Tuple["Record", ...]:
        records = self._records
        if records is None:
            records = self._records = tuple([Record(self, start) for start in self._starts])
        return records

    @property
    def topic(self) -> str:
        """The topic every record of the batch comes from."""
        return self._topic

    @property
    def partition(self) -> int:
        """The partition every record of the batch comes from."""
        return self._partition

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> "Record": ...
    @overload
    def __getitem__(self, index: slice) -> Sequence["Record"]: ...
    def __getitem__(self, index: int | slice) -> "Record | Sequence[Record]":
        return self._all()[index]

    def __iter__(self) -> Iterator["Record"]:
        return iter(self._all())

    def _offset_at(self, index: int) -> int:
        """The offset of record ``index``, without making its record object."""
        offset: int = _OFFSET.unpack_from(self._view, self._starts[index])[0]
        return offset

    def __repr__(self) -> str:
        return f"Batch(topic={self._topic!r}, partition={self._partition}, len={len(self._starts)})"


_OFFSET = struct.Struct("<q")
_LENGTH = struct.Struct("<I")
_LENGTHS = struct.Struct("<II")
_ABSENT_TIMESTAMP = wire.ABSENT_TIMESTAMP
_ABSENT_LEN = wire.ABSENT_LEN
_FIXED = wire.RECORD_FIXED_LEN


class Record:
    """One input record: a view into its batch's buffer. Its fields are read from
    the buffer when asked for."""

    __slots__ = ("_batch", "_start")

    def __init__(self, batch: Batch, start: int) -> None:
        self._batch = batch
        self._start = start

    @property
    def topic(self) -> str:
        """The topic the record was read from."""
        return self._batch._topic

    @property
    def partition(self) -> int:
        """The partition the record was read from."""
        return self._batch._partition

    @property
    def offset(self) -> int:
        """The record's offset in its partition."""
        offset: int = _OFFSET.unpack_from(self._batch._view, self._start)[0]
        return offset

    @property
    def timestamp_ms(self) -> Optional[int]:
        """Milliseconds since the Unix epoch, if the record has a timestamp."""
        timestamp: int = _OFFSET.unpack_from(self._batch._view, self._start + 8)[0]
        return None if timestamp == _ABSENT_TIMESTAMP else timestamp

    def _key_span(self) -> Tuple[int, int]:
        """Where the key starts and its length (-1: absent)."""
        key_len: int = _LENGTH.unpack_from(self._batch._view, self._start + 16)[0]
        return self._start + _FIXED, (-1 if key_len == _ABSENT_LEN else key_len)

    def _value_span(self) -> Tuple[int, int]:
        """Where the value starts and its length (-1: absent)."""
        key_len, value_len = _LENGTHS.unpack_from(self._batch._view, self._start + 16)
        start = self._start + _FIXED + (0 if key_len == _ABSENT_LEN else key_len)
        return start, (-1 if value_len == _ABSENT_LEN else value_len)

    @property
    def key(self) -> Optional[bytes]:
        """The key, or ``None`` for a record without one (distinct from ``b""``)."""
        start, length = self._key_span()
        return None if length < 0 else bytes(self._batch._view[start : start + length])

    @property
    def value(self) -> Optional[bytes]:
        """The value, or ``None`` for a tombstone (distinct from ``b""``)."""
        start, length = self._value_span()
        return None if length < 0 else bytes(self._batch._view[start : start + length])

    def key_view(self) -> Optional[memoryview]:
        """The key without copying: valid while the batch is."""
        start, length = self._key_span()
        return None if length < 0 else self._batch._view[start : start + length]

    def value_view(self) -> Optional[memoryview]:
        """The value without copying: valid while the batch is."""
        start, length = self._value_span()
        return None if length < 0 else self._batch._view[start : start + length]

    def key_str(self) -> Optional[str]:
        """The key decoded as UTF-8 (raises ``UnicodeDecodeError`` if it is not)."""
        view = self.key_view()
        return None if view is None else str(view, "utf-8")

    def value_str(self) -> Optional[str]:
        """The value decoded as UTF-8 (raises ``UnicodeDecodeError`` if it is not)."""
        view = self.value_view()
        return None if view is None else str(view, "utf-8")

    @property
    def headers(self) -> Tuple[Header, ...]:
        """The headers as ``(name, value)`` pairs in the order they were produced.
        Names may repeat; a value may be ``None``.

        Batches carry headers only for processors that declare the ``headers``
        capability (reading headers is most of a record's cost on the host);
        reading them without it raises :class:`ferry_sdk.CapabilityError`.
        """
        self._batch._header_gate()
        view = self._batch._view
        header_count: int = _LENGTH.unpack_from(view, self._start + 24)[0]
        if not header_count:
            return ()
        start, length = self._value_span()
        return wire.headers_at(view, start + max(length, 0), header_count)

    def header(self, name: str) -> Optional[bytes]:
        """The value of the first header called ``name``; ``None`` if there is no
        such header or its value is absent."""
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None

    def __repr__(self) -> str:
        return (
            f"Record(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
            f"timestamp_ms={self.timestamp_ms}, key={self.key!r}, value={self.value!r})"
        )
