"""Runs a processor behind the component's exports. Free of generated bindings
(``_component`` adapts them), so it is unit-tested natively with a fake host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Type

from . import capabilities
from ._outbox import OutputLimits, Outbox
from .context import Context, EmitError, Level, WireOutput
from .processor import PROCESSED, Fault, Outcome, Processor
from .record import Batch, TopicPartition
from .settings import Settings
from .state import State, Store


@dataclass(frozen=True)
class Host:
    """The host's functions as the component imports them; ``None`` for a
    capability the project does not declare (its interface is not imported)."""

    entries: Callable[[], Sequence[Tuple[str, str]]]
    emit: Optional[Callable[[Optional[int], WireOutput], None]]
    log: Optional[Callable[[Level, str], None]]
    headers_enabled: Optional[Callable[[], bool]]
    state: Optional[Store] = None
    #: ``output.limits`` and ``output.emit-many`` (which returns the index of the
    #: first output refused, and why): with both, outputs are buffered per call.
    output_limits: Optional[Callable[[], OutputLimits]] = None
    emit_many: Optional[Callable[[bytes], Optional[Tuple[int, EmitError]]]] = None


class _HostSink:
    """A context's emits, logs and state calls, straight to the host."""

    __slots__ = ("_host", "_state", "_outbox", "emit")

    def __init__(self, host: Host) -> None:
        self._host = host
        self._state = None if host.state is None else State(host.state)
        self._outbox: Optional[Outbox] = None
        if host.emit is not None and host.output_limits is not None and host.emit_many is not None:
            self._outbox = Outbox(host.output_limits, host.emit_many)
            self.emit = self._outbox.emit
        else:
            self.emit = self._emit_each

    def begin(self, batch: Batch) -> None:
        """A call over ``batch`` starts."""
        if self._outbox is not None:
            self._outbox.begin(batch)

    def finish(self) -> None:
        """The call's processing is done: what it emitted goes to the host."""
        if self._outbox is not None:
            self._outbox.flush()

    def _emit_each(self, source: Optional[int], output: WireOutput) -> None:
        if self._host.emit is None:
            raise capabilities.missing("output")
        self._host.emit(source, output)

    def log(self, level: Level, message: str) -> None:
        if self._host.log is None:
            raise capabilities.missing("log")
        self._host.log(level, message)

    def state(self) -> State:
        if self._state is None:
            raise capabilities.missing("state")
        return self._state


def _offset(batch: Batch, index: int) -> int:
    """The offset of record ``index``; -1 past the batch's end."""
    return batch._offset_at(index) if index < len(batch) else -1


class Guest:
    """One component instance's processor: constructed when the module is imported
    (so at build time, into the snapshot) and configured on first use."""

    def __init__(self, cls: Type[Processor], host: Host) -> None:
        self._cls = cls
        self._host = host
        self._sink = _HostSink(host)
        self._processor = cls()
        self._configured = False
        self._headers_asked = False

    def _configure(self, processor: Processor) -> Processor:
        try:
            processor.configure(Settings(self._host.entries()))
        except Exception as error:
            raise Fault(f"ferry-sdk: the processor refused its settings: {error}") from error
        return processor

    def processor(self) -> Processor:
        """The instance's processor, configured with the pipeline's settings."""
        if not self._configured:
            self._configure(self._processor)
            self._configured = True
        return self._processor

    def _header_gate(self) -> None:
        """Asks the host for headers once; the import is what makes it send them."""
        if self._headers_asked:
            return
        if self._host.headers_enabled is None:
            raise capabilities.missing("headers")
        self._host.headers_enabled()
        self._headers_asked = True

    def process(self, topic: str, partition: int, count: int, records: bytes) -> List[Tuple[int, Outcome]]:
        """Runs one batch; returns ``(offset, outcome)`` pairs. The outcome count is
        not checked here: the host validates it (offset -1 past the batch's end)."""
        batch, outcomes = self._run(topic, partition, count, records)
        return [(_offset(batch, i), outcome) for i, outcome in enumerate(outcomes)]

    def reply(
        self, topic: str, partition: int, count: int, records: bytes
    ) -> Tuple[List[Outcome], List[Tuple[int, str]]]:
        """Runs one batch; returns its outcomes and ``(offset, reason)`` for each
        one that is not processed (an empty list: every record is). Offsets are
        only read for those: a batch that all went well costs no pass for them."""
        batch, outcomes = self._run(topic, partition, count, records)
        if outcomes.count(PROCESSED) == len(outcomes):
            return outcomes, []
        failures = [
            (_offset(batch, i), outcome.reason) for i, outcome in enumerate(outcomes) if not outcome.is_processed
        ]
        return outcomes, failures

    def _run(self, topic: str, partition: int, count: int, records: bytes) -> Tuple[Batch, List[Outcome]]:
        try:
            batch = Batch(topic, partition, count, records, self._header_gate)
        except ValueError as error:
            raise Fault(f"ferry-sdk: the host sent a corrupt batch: {error}") from error
        self._sink.begin(batch)
        outcomes = self.processor().process_batch(batch, Context(self._sink))
        if type(outcomes) is not list:
            outcomes = list(outcomes)
        self._sink.finish()
        return batch, outcomes

    def assigned(self, topic: str, partition: int) -> None:
        """A partition's batches are coming."""
        self.processor().assigned(TopicPartition(topic, partition))

    def revoked(self, topic: str, partition: int) -> None:
        """A partition is gone."""
        self.processor().revoked(TopicPartition(topic, partition))

    def self_test(self) -> Optional[str]:
        """Runs the self-test on a fresh, configured processor; the error, if any."""
        try:
            processor = self._cls()
            processor.configure(Settings(self._host.entries()))
        except Exception as error:
            return f"ferry-sdk: the processor refused its settings: {error}"
        try:
            processor.self_test()
        except Exception as error:
            return str(error) or type(error).__name__
        return None
