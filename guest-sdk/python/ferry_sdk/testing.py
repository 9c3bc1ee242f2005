"""Unit-test a processor natively with pytest: no host, no WebAssembly.

Build a batch with :class:`TestBatch`, run it with a :class:`Harness` (which
enforces the host's default limits, the topics you grant, the settings you give and,
if told, the capabilities the project declares) and look at the outcomes, the
outputs the host would publish and the log lines::

    from ferry_sdk.testing import Harness, TestBatch

    batch = TestBatch("in", 0).record("k", "v").value_only("w")
    run = Harness().allow_topic("echo").run(Echo(), batch)
    assert run.all_processed()
    assert run.emitted[1].value_str() == "w"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Type, TypeVar, Union

from . import capabilities as caps
from . import http, limits
from .context import Context, Data, Level, OverBudget, TooLarge, TooMany, TopicNotAllowed, UnknownSource, WireOutput, to_bytes
from .processor import Outcome, Processor, Status, outcome_of
from .record import Batch, TopicPartition
from .settings import Settings
from .state import MemoryStore, State
from .wire import BatchEncoder

__all__ = ["TestBatch", "Emitted", "LogLine", "Run", "Harness", "run"]

P = TypeVar("P", bound=Processor)


def _optional_bytes(data: Optional[Data]) -> Optional[bytes]:
    return None if data is None else to_bytes(data)


class TestBatch:
    """A batch built in a test. Offsets start at 0 and go up by one per record
    unless :meth:`at_offset` says otherwise; records have no timestamp unless
    :meth:`timestamp` sets one. Every method returns the batch, for chaining."""

    __test__ = False  # not a pytest test class

    def __init__(self, topic: str = "in", partition: int = 0) -> None:
        self.topic = topic
        self.partition = partition
        self._next_offset = 0
        self._timestamp_ms: Optional[int] = None
        self._encoder = BatchEncoder()

    def at_offset(self, offset: int) -> "TestBatch":
        """Gives the next record this offset (later ones follow from it)."""
        self._next_offset = offset
        return self

    def timestamp(self, timestamp_ms: Optional[int]) -> "TestBatch":
        """Gives the following records this timestamp (``None`` for none)."""
        self._timestamp_ms = timestamp_ms
        return self

    def record(self, key: Data, value: Data, headers: Iterable[Tuple[str, Optional[Data]]] = ()) -> "TestBatch":
        """Adds a record with a key, a value and optionally headers."""
        return self.raw(key, value, headers)

    def value_only(self, value: Data) -> "TestBatch":
        """Adds a record with a value and no key."""
        return self.raw(None, value)

    def tombstone(self, key: Data) -> "TestBatch":
        """Adds a record with a key and no value."""
        return self.raw(key, None)

    def raw(
        self, key: Optional[Data], value: Optional[Data], headers: Iterable[Tuple[str, Optional[Data]]] = ()
    ) -> "TestBatch":
        """Adds a record where anything may be absent."""
        self._encoder.push(
            self._next_offset,
            self._timestamp_ms,
            _optional_bytes(key),
            _optional_bytes(value),
            [(name, _optional_bytes(v)) for name, v in headers],
        )
        self._next_offset += 1
        return self

    def __len__(self) -> int:
        return self._encoder.count

    def batch(self) -> Batch:
        """The batch as the processor sees it."""
        return Batch(self.topic, self.partition, self._encoder.count, self._encoder.bytes())


@dataclass(frozen=True)
class Emitted:
    """A record the processor emitted."""

    #: The offset of the record it belongs to; ``None``: the whole batch.
    source: Optional[int]
    topic: str
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Tuple[Tuple[str, Optional[bytes]], ...]

    def key_str(self) -> Optional[str]:
        """The key as UTF-8, if present and valid."""
        return _text(self.key)

    def value_str(self) -> Optional[str]:
        """The value as UTF-8, if present and valid."""
        return _text(self.value)


def _text(data: Optional[bytes]) -> Optional[str]:
    try:
        return None if data is None else data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@dataclass(frozen=True)
class LogLine:
    """A line the processor logged (the real host truncates and sanitizes it)."""

    level: Level
    message: str


@dataclass
class Run:
    """What one batch did."""

    #: One outcome per record, in batch order.
    outcomes: List[Outcome]
    #: Outputs the host would publish, in emit order: those of processed records,
    #: and the batch's own if every record was processed. Refused emits are in
    #: neither list.
    emitted: List[Emitted] = field(default_factory=list)
    #: Outputs the host would drop, because their record was not processed.
    dropped: List[Emitted] = field(default_factory=list)
    #: Log lines, in order.
    logs: List[LogLine] = field(default_factory=list)

    def all_processed(self) -> bool:
        """True when every record was processed."""
        return all(outcome.is_processed for outcome in self.outcomes)


class _MemorySink:
    """The host's per-batch checks, in the host's order, recording in memory."""

    def __init__(self, harness: "Harness", offsets: Set[int], store: MemoryStore) -> None:
        self._harness = harness
        self._offsets = offsets
        self.emitted: List[Emitted] = []
        self.emitted_bytes = 0
        self.logs: List[LogLine] = []
        self.store = store
        self._state = State(store)

    def emit(self, source: Optional[int], output: WireOutput) -> None:
        harness = self._harness
        harness._require("output")
        if harness._allowed_topics is not None and output.topic not in harness._allowed_topics:
            raise TopicNotAllowed(output.topic)
        if source is not None and source not in self._offsets:
            raise UnknownSource(source)
        if len(self.emitted) >= harness._max_emits:
            raise TooMany()
        size = output.size()
        if size > harness._max_record_bytes:
            raise TooLarge(harness._max_record_bytes)
        if self.emitted_bytes + size > harness._batch_bytes:
            raise OverBudget(harness._batch_bytes)
        self.emitted_bytes += size
        self.emitted.append(Emitted(source, output.topic, output.key, output.value, output.headers))

    def log(self, level: Level, message: str) -> None:
        self._harness._require("log")
        self.logs.append(LogLine(level, message))

    def state(self) -> State:
        self._harness._require("state")
        return self._state


class Harness:
    """A stand-in host: the limits the real one enforces per batch (its defaults
    unless changed), the topics the pipeline grants, its settings, the capabilities
    the project declares, and the partition lifecycle calls. Configuration methods
    return the harness, for chaining."""

    def __init__(self) -> None:
        #: ``None``: every topic is allowed.
        self._allowed_topics: Optional[Set[str]] = None
        #: ``None``: every capability is available.
        self._capabilities: Optional[frozenset[str]] = None
        self._max_emits = limits.MAX_OUTPUTS_PER_BATCH
        self._max_record_bytes = limits.MAX_OUTPUT_BYTES
        self._batch_bytes = limits.OUTPUT_BYTES_PER_BATCH
        self._settings: dict[str, str] = {}
        #: Partitions the processor was told about, as the host tracks them.
        self._told: Set[TopicPartition] = set()
        #: Each partition's keyed state, as the host keeps it (across instances).
        self._state: Dict[TopicPartition, Dict[bytes, bytes]] = {}
        self._state_bytes = limits.STATE_BYTES_PER_PARTITION
        self._state_writes = limits.STATE_WRITES_PER_BATCH
        #: ``None``: every URL.
        self._http_allow: Optional[List[str]] = None
        self._http_service: Optional[Callable[[http.Request], http.Response]] = None

    def allow_http(self, rule: str) -> "Harness":
        """Allows HTTP requests to ``rule`` (``scheme://host[:port]``, ``*.`` before
        a name for its subdomains, as in ``[pipeline.http] allow``). Once any rule
        is given, requests to other URLs fail with
        :attr:`~ferry_sdk.http.HttpErrorKind.REFUSED`, as on the host."""
        _http_rule(rule)
        if self._http_allow is None:
            self._http_allow = []
        self._http_allow.append(rule)
        return self

    def http_service(self, service: Callable[[http.Request], http.Response]) -> "Harness":
        """Answers the processor's HTTP requests (:mod:`ferry_sdk.http`) that pass
        the rules with ``service``, which returns a :class:`~ferry_sdk.http.Response`
        or raises an :class:`~ferry_sdk.http.HttpError` to play a failing server::

            def rates(request):
                if request.path == "/rate/EUR":
                    return http.Response(200, b"1.08")
                raise http.HttpError(http.HttpErrorKind.TIMEOUT, "HttpResponseTimeout")

            harness = Harness().allow_http("http://127.0.0.1:8089").http_service(rates)
        """
        self._http_service = service
        return self

    def _send_all(self, requests: List[http.Request]) -> List[Union[http.Response, http.HttpError]]:
        self._require("http")
        return [self._send(request) for request in requests]

    def _send(self, request: http.Request) -> http.Response | http.HttpError:
        try:
            scheme, authority, _ = http.split_url(request.url)
            endpoint = _http_rule(f"{scheme}://{authority}")
        except (http.HttpError, ValueError):
            return http.HttpError(http.HttpErrorKind.INVALID, f"`{request.url}` is not http(s)://host[:port]/path")
        if self._http_allow is not None and not any(_http_matches(_http_rule(r), endpoint) for r in self._http_allow):
            scheme, host, port = endpoint
            return http.HttpError(
                http.HttpErrorKind.REFUSED,
                f"HttpRequestDenied: {scheme}://{host}:{port} is not in the pipeline's [pipeline.http] allow",
            )
        if request.method not in http.METHODS:
            return http.HttpError(http.HttpErrorKind.INVALID, f"method {request.method}")
        if self._http_service is None:
            return http.HttpError(
                http.HttpErrorKind.FAILED, "no service answers in this test (give the harness one with http_service)"
            )
        try:
            answer = self._http_service(request)
        except http.HttpError as error:
            return error
        if not isinstance(answer, http.Response):
            raise TypeError(f"the test's http_service returned {answer!r}, not an http.Response")
        return answer

    def allow_topic(self, topic: str) -> "Harness":
        """Allows emitting to ``topic``. Once any topic is allowed, emits to others
        raise :class:`~ferry_sdk.TopicNotAllowed`, as on a host whose pipeline lists
        only these ``output_topics``."""
        if self._allowed_topics is None:
            self._allowed_topics = set()
        self._allowed_topics.add(topic)
        return self

    def deny_all_topics(self) -> "Harness":
        """Refuses every emit: as if the pipeline had no output topic."""
        self._allowed_topics = set()
        return self

    def max_emits(self, count: int) -> "Harness":
        """Allows at most ``count`` outputs per batch (then :class:`~ferry_sdk.TooMany`)."""
        self._max_emits = count
        return self

    def max_record_bytes(self, size: int) -> "Harness":
        """Refuses outputs larger than ``size`` bytes (:class:`~ferry_sdk.TooLarge`)."""
        self._max_record_bytes = size
        return self

    def batch_output_bytes(self, size: int) -> "Harness":
        """Refuses emits once a batch's outputs exceed ``size`` bytes
        (:class:`~ferry_sdk.OverBudget`)."""
        self._batch_bytes = size
        return self

    def state_bytes(self, size: int) -> "Harness":
        """Refuses state writes once a partition's state would exceed ``size``
        bytes (:class:`~ferry_sdk.PartitionFull`), as ``[pipeline.state]
        partition_bytes`` does; each entry counts its key, its value and 128 bytes."""
        self._state_bytes = size
        return self

    def state_writes(self, count: int) -> "Harness":
        """Allows at most ``count`` state writes per batch (then
        :class:`~ferry_sdk.TooManyWrites`)."""
        self._state_writes = count
        return self

    def with_state(self, topic: str, partition: int, entries: Mapping[Data, Data]) -> "Harness":
        """Starts ``topic``/``partition`` with this state, as a restore from its
        changelog would."""
        self._state[TopicPartition(topic, partition)] = {to_bytes(k): to_bytes(v) for k, v in entries.items()}
        return self

    def state(self, topic: str, partition: int) -> Dict[bytes, bytes]:
        """The keyed state of ``topic``/``partition`` (a copy), as the batches run
        so far left it."""
        return dict(self._state.get(TopicPartition(topic, partition), {}))

    def setting(self, key: str, value: str) -> "Harness":
        """Sets one of the pipeline's settings."""
        self._settings[key] = value
        return self

    def capabilities(self, *names: str) -> "Harness":
        """Makes only these capabilities available, as in a component whose project
        declares exactly these: using another raises
        :class:`~ferry_sdk.CapabilityError`."""
        self._capabilities = caps.validate(names)
        return self

    def declared_by(self, project_dir: str | Path) -> "Harness":
        """:meth:`capabilities` as the project's ``pyproject.toml`` declares them."""
        self._capabilities = caps.declared(project_dir)
        return self

    @property
    def settings(self) -> Settings:
        """The settings processors get from this harness."""
        return Settings(self._settings)

    def _require(self, capability: str) -> None:
        if self._capabilities is not None and capability not in self._capabilities:
            raise caps.missing(capability)

    def processor(self, cls: Type[P]) -> P:
        """A fresh processor, configured with this harness's settings, as the host
        makes one for a new instance (raises what ``configure`` raises)."""
        processor = cls()
        processor.configure(self.settings)
        return processor

    def self_test(self, cls: Type[Processor]) -> None:
        """Runs ``self_test`` on a fresh, configured processor, as the host does
        before a deploy (raises what it raises)."""
        self.processor(cls).self_test()

    def revoke(self, processor: Processor, topic: str, partition: int) -> None:
        """Tells ``processor`` that ``topic``/``partition`` was revoked (if it was
        told about it), as the host does when the partition moves away."""
        tp = TopicPartition(topic, partition)
        if tp in self._told:
            self._told.discard(tp)
            processor.revoked(tp)

    def run(self, processor: Processor, batch: TestBatch) -> Run:
        """Runs one batch through ``processor``, which keeps its state for the next
        run. The first batch of a partition is preceded by ``assigned``. Raises
        ``AssertionError`` if ``process_batch`` returns the wrong number of
        outcomes (the host refuses such an answer)."""
        view, sink, ctx = self._start(processor, batch)
        with http.installed(self._send_all):
            outcomes = processor.process_batch(view, ctx)
        if len(outcomes) != len(view):
            raise AssertionError(
                f"process_batch returned {len(outcomes)} outcomes for a batch of {len(view)} records; "
                "the host refuses such an answer"
            )
        return self._finish(view, outcomes, sink)

    def run_each(self, processor: Processor, batch: TestBatch) -> Run:
        """Runs each record through ``process`` directly, bypassing an overridden
        ``process_batch``; useful to check that the two agree."""
        view, sink, ctx = self._start(processor, batch)
        outcomes = []
        with http.installed(self._send_all):
            for record in view:
                with ctx.for_record(record):
                    outcomes.append(outcome_of(lambda: processor.process(record, ctx)))
        return self._finish(view, outcomes, sink)

    def _start(self, processor: Processor, batch: TestBatch) -> Tuple[Batch, _MemorySink, Context]:
        tp = TopicPartition(batch.topic, batch.partition)
        if tp not in self._told:
            self._told.add(tp)
            processor.assigned(tp)
        view = Batch(
            batch.topic, batch.partition, len(batch), batch._encoder.bytes(), lambda: self._require("headers")
        )
        store = MemoryStore(
            self._state.get(tp, {}), lambda: self._require("state"), self._state_bytes, self._state_writes
        )
        sink = _MemorySink(self, {record.offset for record in view}, store)
        return view, sink, Context(sink)

    def _finish(self, view: Batch, outcomes: List[Outcome], sink: _MemorySink) -> Run:
        """Splits what was emitted into published and dropped, and keeps the batch's
        state writes only if every record finished (processed or rejected), as the
        host does: after a retry the whole batch comes again."""
        if sink.store.touched and not any(outcome.status is Status.RETRY for outcome in outcomes):
            self._state[TopicPartition(view.topic, view.partition)] = sink.store.entries
        processed = {record.offset for record, outcome in zip(view, outcomes) if outcome.is_processed}
        everything = len(processed) == len(view)
        run = Run(outcomes=list(outcomes), logs=sink.logs)
        for out in sink.emitted:
            published = everything if out.source is None else out.source in processed
            (run.emitted if published else run.dropped).append(out)
        return run


def _http_rule(rule: str) -> Tuple[str, str, int]:
    """Scheme, host (lower-case) and port of ``scheme://host[:port]``, as the
    host's config reads an ``allow`` rule (its finer checks stay the host's)."""
    scheme, sep, authority = rule.removesuffix("/").partition("://")
    scheme = scheme.lower()
    default = {"http": 80, "https": 443}.get(scheme)
    if not sep or default is None or not authority or any(c in authority for c in "/?#@"):
        raise ValueError(f"`{rule}` is not scheme://host[:port] with scheme http or https")
    host, colon, port = authority.rpartition(":")
    if not colon or "]" in port:
        host, number = authority, default
    elif port.isdigit() and 0 < int(port) < 65536:
        number = int(port)
    else:
        raise ValueError(f"`{rule}`: `{port}` is not a port (1-65535)")
    host = host.lower().removesuffix(".")
    return scheme, host, number


def _http_matches(rule: Tuple[str, str, int], endpoint: Tuple[str, str, int]) -> bool:
    if rule[0] != endpoint[0] or rule[2] != endpoint[2]:
        return False
    if rule[1].startswith("*."):
        label, dot, parent = endpoint[1].partition(".")
        return bool(label) and dot == "." and parent == rule[1][2:]
    return rule[1] == endpoint[1]


def run(processor: Processor, batch: TestBatch) -> Run:
    """Runs one batch under the host's default limits, with every topic allowed."""
    return Harness().run(processor, batch)
