"""What a processor can do besides returning outcomes: emit records, log, and
reach the keyed state of the batch's partition."""

from __future__ import annotations

import contextlib
import enum
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple, Optional, Protocol, Sequence, Tuple, TypeVar, Union, overload

from .record import Record

if TYPE_CHECKING:
    from .state import State

#: Bytes, or text (encoded as UTF-8).
Data = Union[bytes, bytearray, memoryview, str]


def to_bytes(data: Data) -> bytes:
    """``data`` as bytes: text is encoded as UTF-8."""
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)


def _optional_bytes(data: Optional[Data]) -> Optional[bytes]:
    if data is None:
        return None
    return data.encode("utf-8") if type(data) is str else to_bytes(data)


class Level(enum.Enum):
    """Severity of a log line."""

    TRACE = "trace"
    DEBUG = "debug"
    INFO = "info"
    WARN = "warn"
    ERROR = "error"


def _quoted(text: str) -> str:
    """Quotes like Rust's ``{:?}``, so messages match the Rust SDK's."""
    return json.dumps(text, ensure_ascii=False)


class EmitError(Exception):
    """The host refused an emitted record. The subclasses say why; their messages
    are the Rust SDK's ``EmitError`` messages. Left uncaught in ``process`` it
    rejects the record (a refused output will be refused next time too)."""


class TopicNotAllowed(EmitError):
    """The pipeline's configuration does not allow producing to this topic."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        super().__init__(
            f"topic {_quoted(topic)} is not allowed for this pipeline (the operator lists the topics it may "
            "write to in the pipeline's `output_topics`)"
        )


class TooLarge(EmitError):
    """The record exceeds the host's size limit (``limit``, in bytes)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"record exceeds the size limit of {limit} bytes")


class TooMany(EmitError):
    """The batch already emitted as many records as the host allows."""

    def __init__(self) -> None:
        super().__init__("batch emitted more records than allowed")


class OverBudget(EmitError):
    """The batch's outputs reached the host's byte budget (``budget``, in bytes)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        super().__init__(f"batch outputs exceed the budget of {budget} bytes")


class UnknownSource(EmitError):
    """The output was attributed to an offset that is not in the current batch."""

    def __init__(self, offset: int) -> None:
        self.offset = offset
        super().__init__(f"offset {offset} is not a record of this batch")


@dataclass
class Output:
    """An output record for :meth:`Context.emit`, when :meth:`Context.emit_kv` and
    :meth:`Context.emit_value` are not enough: a missing key or value (a tombstone),
    or headers::

        Output("audit", key="user-1", headers=[("trace-id", trace_id)])
    """

    topic: str
    key: Optional[Data] = None
    value: Optional[Data] = None
    #: ``(name, value)`` pairs; ``list(record.headers)`` forwards a record's.
    headers: Sequence[Tuple[str, Optional[Data]]] = ()

    def header(self, name: str, value: Optional[Data]) -> "Output":
        """Adds a header and returns the output, for chaining."""
        self.headers = [*self.headers, (name, value)]
        return self


class WireOutput(NamedTuple):
    """An output reduced to bytes, as the host receives it (a named tuple: one is
    made per emitted record)."""

    topic: str
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Tuple[Tuple[str, Optional[bytes]], ...]

    @staticmethod
    def of(output: Output) -> "WireOutput":
        return WireOutput(
            output.topic,
            None if output.key is None else to_bytes(output.key),
            None if output.value is None else to_bytes(output.value),
            tuple((name, None if v is None else to_bytes(v)) for name, v in output.headers),
        )

    def size(self) -> int:
        """Key, value and headers in bytes, as the host counts a record's size."""
        size = len(self.key or b"") + len(self.value or b"")
        for name, value in self.headers:
            size += len(name.encode("utf-8")) + len(value or b"")
        return size


class Sink(Protocol):
    """Where a context's emits, logs and state calls go: the host in a component,
    memory in tests. ``emit`` raises :class:`EmitError` when the host refuses."""

    def emit(self, source: Optional[int], output: WireOutput) -> None: ...

    def log(self, level: Level, message: str) -> None: ...

    def state(self) -> "State": ...


R = TypeVar("R")


class Context:
    """The processor's handle on the host for the duration of one batch.

    Every output belongs to an input record: in :meth:`Processor.process` to the
    record being processed, in an overridden ``process_batch`` to the whole batch
    unless emitted inside :meth:`for_record`. The host publishes an output only if
    its record ends processed (for the whole batch: if every record does).
    """

    __slots__ = ("_sink", "_source")

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        #: The record outputs are attributed to; ``None``: the whole batch. Its
        #: offset is only read when it emits.
        self._source: Optional[Record] = None

    @overload
    def for_record(self, record: Record) -> contextlib.AbstractContextManager["Context"]: ...
    @overload
    def for_record(self, record: Record, fn: Callable[["Context"], R]) -> R: ...
    def for_record(
        self, record: Record, fn: Optional[Callable[["Context"], R]] = None
    ) -> "R | contextlib.AbstractContextManager[Context]":
        """Attributes outputs to ``record``: they are published only if it ends
        processed. Use it as ``with ctx.for_record(record): ...``, or pass a
        function, which is called with the context and whose result is returned."""
        if fn is None:
            return self._attributed(record)
        with self._attributed(record):
            return fn(self)

    @contextlib.contextmanager
    def _attributed(self, record: Record) -> Iterator["Context"]:
        outer = self._source
        self._source = record
        try:
            yield self
        finally:
            self._source = outer

    def _offset(self) -> Optional[int]:
        """The offset outputs are attributed to; ``None``: the whole batch."""
        source = self._source
        return None if source is None else source.offset

    def emit_value(self, topic: str, value: Data) -> None:
        """Emits ``value`` with no key to ``topic``."""
        # Straight to the wire form: no ``Output`` to build and convert.
        self._sink.emit(self._offset(), WireOutput(topic, None, _optional_bytes(value), ()))

    def emit_kv(self, topic: str, key: Data, value: Data) -> None:
        """Emits ``key`` and ``value`` to ``topic``."""
        self._sink.emit(self._offset(), WireOutput(topic, _optional_bytes(key), _optional_bytes(value), ()))

    def emit(self, output: Output) -> None:
        """Queues an output record; raises :class:`EmitError` if the host refuses
        it. The host produces it after the batch returns, if its record ends
        processed, and commits the record's offset only once the broker has it."""
        self._sink.emit(self._offset(), WireOutput.of(output))

    def state(self) -> "State":
        """The keyed state of the batch's input partition (see :class:`~ferry_sdk.State`).
        The project must declare the ``state`` capability."""
        return self._sink.state()

    def log(self, level: Level, message: str) -> None:
        """Writes a line to the host's logs under the tenant's own target. The host
        truncates long lines, strips control characters and rate-limits them."""
        self._sink.log(level, message)

    def trace(self, message: str) -> None:
        """Logs at :attr:`Level.TRACE`."""
        self._sink.log(Level.TRACE, message)

    def debug(self, message: str) -> None:
        """Logs at :attr:`Level.DEBUG`."""
        self._sink.log(Level.DEBUG, message)

    def info(self, message: str) -> None:
        """Logs at :attr:`Level.INFO`."""
        self._sink.log(Level.INFO, message)

    def warn(self, message: str) -> None:
        """Logs at :attr:`Level.WARN`."""
        self._sink.log(Level.WARN, message)

    def error(self, message: str) -> None:
        """Logs at :attr:`Level.ERROR`."""
        self._sink.log(Level.ERROR, message)
