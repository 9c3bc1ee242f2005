"""A call's outputs, handed to the host many at a time.

Each call into the host costs far more inside the generated bindings than an
output's own bytes do, so the SDK does not call ``emit`` per output. It asks the
host once per call what ``emit`` would allow (``output.limits``), checks each
output the moment the tenant emits it, exactly as the host checks one, and raises
the same :class:`~ferry_sdk.EmitError` the host would have returned. Accepted
outputs are encoded into one buffer and handed over with ``output.emit-many`` when
the call ends (or when the buffer reaches :data:`FLUSH_BYTES`), in the order they
were emitted, each still tied to its record. The host checks every one again; a
refusal there means the SDK and the host disagree, and the call faults (its outputs
are all dropped and the batch is delivered again), never a silent loss.
"""

from __future__ import annotations

import struct
from typing import Callable, Dict, FrozenSet, NamedTuple, Optional, Tuple

from .context import EmitError, OverBudget, TooLarge, TooMany, TopicNotAllowed, UnknownSource, WireOutput
from .processor import Fault
from .record import Batch
from .wire import ABSENT_LEN

#: A buffer is handed over once it holds this many bytes, which bounds the memory
#: buffering adds to a guest.
FLUSH_BYTES = 1 << 20

#: ``source`` of an output of the whole batch.
WHOLE_BATCH = -(1 << 63)

_HEAD = struct.Struct("<qIIII")
_HEADER = struct.Struct("<II")


class OutputLimits(NamedTuple):
    """The host's ``output-limits``: its bounds and what the batch used of them."""

    topics: FrozenSet[str]
    max_records: int
    records_used: int
    max_record_bytes: int
    batch_bytes: int
    bytes_used: int
    record_cost: int
    header_cost: int


def _sanitized(topic: str) -> str:
    """The topic as the host reports it: at most 200 characters, control characters
    (but tabs) replaced."""
    out = "".join("\ufffd" if (c < " " and c != "\t") or "\x7f" <= c <= "\x9f" else c for c in topic[:200])
    return out + "…[truncated]" if len(topic) > 200 else out


class Outbox:
    """The outputs of one call: checked on emit, buffered, handed over in one go."""

    __slots__ = ("_limits_of", "_send", "_batch", "_offsets", "_limits", "_topics", "_records", "_bytes", "_buffer")

    def __init__(
        self,
        limits_of: Callable[[], OutputLimits],
        send: Callable[[bytes], Optional[Tuple[int, EmitError]]],
    ) -> None:
        self._limits_of = limits_of
        self._send = send
        self._batch: Optional[Batch] = None
        self._offsets: Optional[FrozenSet[int]] = None
        self._limits: Optional[OutputLimits] = None
        #: The granted topics, each with its UTF-8 (encoded once, not per output).
        self._topics: Dict[str, bytes] = {}
        self._records = 0
        self._bytes = 0
        self._buffer = bytearray()

    def begin(self, batch: Batch) -> None:
        """Starts a call over ``batch``: the host's limits are asked again on its
        first emit (the batch may have used some of them in an earlier call)."""
        self._batch = batch
        self._offsets = None
        self._limits = None
        self._buffer.clear()

    def emit(self, source: Optional[int], output: WireOutput) -> None:
        """Checks ``output`` as the host would and buffers it; raises the host's
        :class:`EmitError` if it would refuse it."""
        limits = self._limits
        if limits is None:
            limits = self._limits = self._limits_of()
            self._records, self._bytes = limits.records_used, limits.bytes_used
            if self._topics.keys() != limits.topics:
                self._topics = {topic: topic.encode("utf-8") for topic in limits.topics}
        topic = output.topic
        topic_bytes = self._topics.get(topic)
        if topic_bytes is None:
            raise TopicNotAllowed(_sanitized(topic))
        if source is not None:
            offsets = self._offsets
            if offsets is None:
                batch = self._batch
                assert batch is not None
                offsets = self._offsets = frozenset([batch._offset_at(i) for i in range(len(batch))])
            if source not in offsets:
                raise UnknownSource(source)
        if self._records >= limits.max_records:
            raise TooMany()
        key, value, headers = output.key, output.value, output.headers
        key_len = 0 if key is None else len(key)
        value_len = 0 if value is None else len(value)
        # The host's order: the key and value, and the fixed costs, before headers.
        charged = limits.record_cost + len(topic_bytes) + key_len + value_len + limits.header_cost * len(headers)
        size = key_len + value_len
        if size > limits.max_record_bytes:
            raise TooLarge(limits.max_record_bytes)
        if self._bytes + charged > limits.batch_bytes:
            raise OverBudget(limits.batch_bytes)
        encoded = []
        if headers:
            for name, header_value in headers:
                name_bytes = name.encode("utf-8")
                encoded.append((name_bytes, header_value))
                size += len(name_bytes) + (0 if header_value is None else len(header_value))
            charged += size - key_len - value_len
            if size > limits.max_record_bytes:
                raise TooLarge(limits.max_record_bytes)
            if self._bytes + charged > limits.batch_bytes:
                raise OverBudget(limits.batch_bytes)
        buffer = self._buffer
        buffer += _HEAD.pack(
            WHOLE_BATCH if source is None else source,
            len(topic_bytes),
            ABSENT_LEN if key is None else key_len,
            ABSENT_LEN if value is None else value_len,
            len(headers),
        )
        buffer += topic_bytes
        if key:
            buffer += key
        if value:
            buffer += value
        for name_bytes, header_value in encoded:
            buffer += _HEADER.pack(len(name_bytes), ABSENT_LEN if header_value is None else len(header_value))
            buffer += name_bytes
            if header_value:
                buffer += header_value
        self._records += 1
        self._bytes += charged
        if len(buffer) >= FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hands the buffered outputs to the host."""
        if not self._buffer:
            return
        refused = self._send(bytes(self._buffer))
        self._buffer.clear()
        if refused is not None:
            index, error = refused
            raise Fault(f"ferry-sdk: the host refused an output the SDK had accepted (output {index}): {error}")
