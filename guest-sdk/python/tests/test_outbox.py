"""Buffered outputs (``output.limits`` and ``output.emit-many``), driven by a fake
host that decodes the buffer and checks it as the real host does."""

import struct
from typing import List, Optional, Sequence, Set, Tuple

import pytest

from ferry_sdk import Context, EmitError, Fault, Outcome, Output, Processor, Record
from ferry_sdk import _outbox
from ferry_sdk._guest import Guest, Host
from ferry_sdk._outbox import OutputLimits
from ferry_sdk.context import OverBudget, TooLarge, TooMany, TopicNotAllowed, UnknownSource, WireOutput
from ferry_sdk.wire import ABSENT_LEN, BatchEncoder

Sent = Tuple[Optional[int], str, Optional[bytes], Optional[bytes], Tuple[Tuple[str, Optional[bytes]], ...]]

RECORD_COST, HEADER_COST = 300, 100


def decode(buf: bytes) -> List[Sent]:
    """``emit-many``'s buffer, as the host reads it."""
    out: List[Sent] = []
    at = 0

    def take(n: int) -> bytes:
        nonlocal at
        assert at + n <= len(buf)
        at += n
        return buf[at - n : at]

    def optional(n: int) -> Optional[bytes]:
        return None if n == ABSENT_LEN else take(n)

    while at < len(buf):
        source, topic_len, key_len, value_len, count = struct.unpack("<qIIII", take(24))
        topic = take(topic_len).decode()
        key, value = optional(key_len), optional(value_len)
        headers = []
        for _ in range(count):
            name_len, hvalue_len = struct.unpack("<II", take(8))
            headers.append((take(name_len).decode(), optional(hvalue_len)))
        out.append((None if source == -(1 << 63) else source, topic, key, value, tuple(headers)))
    return out


class BufferedHost:
    """The host's side: its limits, what a batch used, and ``emit-many``'s checks
    in the host's order."""

    def __init__(self, topics: Sequence[str] = ("out",), max_records: int = 100, max_record_bytes: int = 1000,
                 batch_bytes: int = 100_000) -> None:
        self.topics = set(topics)
        self.max_records, self.max_record_bytes, self.batch_bytes = max_records, max_record_bytes, batch_bytes
        self.offsets: Set[int] = set()
        self.used = [0, 0]
        self.sent: List[Sent] = []
        self.calls = {"limits": 0, "emit_many": 0}
        self.disagree = False

    def start(self, offsets: Sequence[int]) -> None:
        self.offsets = set(offsets)
        self.used = [0, 0]

    def limits(self) -> OutputLimits:
        self.calls["limits"] += 1
        return OutputLimits(frozenset(self.topics), self.max_records, self.used[0], self.max_record_bytes,
                            self.batch_bytes, self.used[1], RECORD_COST, HEADER_COST)

    def emit_many(self, buf: bytes) -> Optional[Tuple[int, EmitError]]:
        self.calls["emit_many"] += 1
        for index, (source, topic, key, value, headers) in enumerate(decode(buf)):
            size = len(key or b"") + len(value or b"") + sum(len(n.encode()) + len(v or b"") for n, v in headers)
            charged = RECORD_COST + len(topic.encode()) + size + HEADER_COST * len(headers)
            if self.disagree or topic not in self.topics:
                return index, TopicNotAllowed(topic)
            assert source is None or source in self.offsets
            assert self.used[0] < self.max_records and size <= self.max_record_bytes
            assert self.used[1] + charged <= self.batch_bytes
            self.used[0] += 1
            self.used[1] += charged
            self.sent.append((source, topic, key, value, headers))
        return None

    def bindings(self) -> Host:
        def unbuffered(source: Optional[int], output: WireOutput) -> None:
            raise AssertionError("emit is not called when outputs are buffered")

        return Host(entries=lambda: [], emit=unbuffered, log=None, headers_enabled=None,
                    output_limits=self.limits, emit_many=self.emit_many)


class Emitter(Processor):
    """Each record's value says what to emit."""

    def process(self, record: Record, ctx: Context) -> None:
        command = record.value_str() or ""
        if command == "none":
            return
        if command == "kv":
            ctx.emit_kv("out", record.key or b"", f"v{record.offset}")
        elif command == "tombstone":
            ctx.emit(Output("out", key=b""))
        elif command == "headers":
            ctx.emit(Output("out", value="x", headers=[("h", b"1"), ("é", None)]))
        elif command.startswith("bytes:"):
            ctx.emit_value("out", b"b" * int(command[6:]))
        elif command.startswith("topic:"):
            ctx.emit_value(command[6:], "x")
        elif command.startswith("caught:"):
            try:
                ctx.emit_value(command[7:], "x")
            except TopicNotAllowed:
                ctx.emit_value("out", "refused")


def run(host: BufferedHost, guest: Guest, values: Sequence[str], first: int = 10) -> List[Tuple[int, Outcome]]:
    encoder = BatchEncoder()
    for i, value in enumerate(values):
        encoder.push(first + i, None, b"k", value.encode(), ())
    host.start(range(first, first + len(values)))
    return guest.process("in", 0, encoder.count, encoder.bytes())


def test_a_batch_hands_its_outputs_over_in_one_call_in_order_and_attributed() -> None:
    host = BufferedHost()
    guest = Guest(Emitter, host.bindings())
    results = run(host, guest, ["kv", "none", "tombstone", "headers", "kv"])
    assert all(outcome.is_processed for _, outcome in results)
    assert host.calls == {"limits": 1, "emit_many": 1}
    assert host.sent == [
        (10, "out", b"k", b"v10", ()),
        (12, "out", b"", None, ()),
        (13, "out", None, b"x", (("h", b"1"), ("é", None))),
        (14, "out", b"k", b"v14", ()),
    ]


def test_a_batch_that_emits_nothing_makes_no_call() -> None:
    host = BufferedHost()
    run(host, Guest(Emitter, host.bindings()), ["none", "none"])
    assert host.calls == {"limits": 0, "emit_many": 0}


def test_each_refusal_is_the_hosts_raised_when_emitted_and_the_rest_go_through() -> None:
    host = BufferedHost(max_records=2, max_record_bytes=100, batch_bytes=2 * (RECORD_COST + 3) + 150)
    guest = Guest(Emitter, host.bindings())
    results = run(host, guest, ["topic:nope\x1b", "bytes:101", "bytes:60", "bytes:91", "caught:other", "kv", "kv"])
    outcomes = [outcome for _, outcome in results]
    assert outcomes == [
        Outcome.reject(str(TopicNotAllowed("nope\ufffd"))),
        Outcome.reject(str(TooLarge(100))),
        Outcome.processed(),
        # 60 + 91 bytes on top of two records' fixed costs: over the budget.
        # The next one catches its refusal and emits instead (the second record).
        Outcome.reject(str(OverBudget(host.batch_bytes))),
        Outcome.processed(),
        Outcome.reject(str(TooMany())),
        Outcome.reject(str(TooMany())),
    ]
    assert {(s, v) for s, _, _, v, _ in host.sent} == {
        (12, b"b" * 60),
        (14, b"refused"),
    }


def test_headers_count_toward_size_and_budget() -> None:
    host = BufferedHost(max_record_bytes=4)
    results = run(host, Guest(Emitter, host.bindings()), ["headers"])
    # value "x", header names "h" and "é" (2 bytes) and value "1": 5 bytes.
    assert results[0][1] == Outcome.reject(str(TooLarge(4)))
    host = BufferedHost(batch_bytes=RECORD_COST + 3 + 5 + 2 * HEADER_COST)
    assert run(host, Guest(Emitter, host.bindings()), ["headers"])[0][1].is_processed
    host = BufferedHost(batch_bytes=RECORD_COST + 3 + 5 + 2 * HEADER_COST - 1)
    assert run(host, Guest(Emitter, host.bindings()), ["headers"])[0][1] == Outcome.reject(str(OverBudget(host.batch_bytes)))


def test_what_earlier_calls_of_the_batch_used_counts() -> None:
    host = BufferedHost(max_records=2)
    guest = Guest(Emitter, host.bindings())
    encoder = BatchEncoder()
    for offset in (1, 2):
        encoder.push(offset, None, b"k", b"kv", ())
    host.start([1, 2])
    host.used = [1, RECORD_COST]  # a call of this batch before (a split) emitted one
    results = guest.process("in", 0, encoder.count, encoder.bytes())
    assert [o for _, o in results] == [Outcome.processed(), Outcome.reject(str(TooMany()))]


def test_a_source_outside_the_batch_is_refused() -> None:
    kept: List[Record] = []

    class Late(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            if kept:
                with ctx.for_record(kept[0]):
                    ctx.emit_value("out", "late")
            kept.append(record)

    host = BufferedHost()
    guest = Guest(Late, host.bindings())
    run(host, guest, ["a"], first=5)
    results = run(host, guest, ["b"], first=6)
    assert results == [(6, Outcome.reject(str(UnknownSource(5))))]
    assert host.sent == []


def test_large_buffers_are_handed_over_as_they_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_outbox, "FLUSH_BYTES", 100)
    host = BufferedHost()
    run(host, Guest(Emitter, host.bindings()), ["bytes:90", "bytes:10", "bytes:90", "kv"])
    assert host.calls["emit_many"] == 3
    assert [v for _, _, _, v, _ in host.sent] == [b"b" * 90, b"b" * 10, b"b" * 90, b"v13"]


def test_a_host_that_refuses_what_the_sdk_accepted_faults_the_call() -> None:
    host = BufferedHost()
    host.disagree = True
    with pytest.raises(Fault, match=r"refused an output the SDK had accepted \(output 0\)"):
        run(host, Guest(Emitter, host.bindings()), ["kv"])
