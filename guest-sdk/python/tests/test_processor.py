"""Processor semantics: outcomes from exceptions, attribution, limits, harness."""

from typing import List

import pytest

from ferry_sdk import (
    Batch,
    CapabilityError,
    Context,
    Fault,
    Level,
    OverBudget,
    Outcome,
    Output,
    Processor,
    Record,
    Reject,
    Retry,
    Settings,
    TooLarge,
    TooMany,
    TopicNotAllowed,
    TopicPartition,
    UnknownSource,
    rejecting,
    transient,
)
from ferry_sdk.testing import Harness, LogLine, TestBatch, run


class Forward(Processor):
    """Forwards each record (to the topic in its `to` header, else `out`)."""

    def __init__(self) -> None:
        self.seen = 0

    def process(self, record: Record, ctx: Context) -> None:
        self.seen += 1
        ctx.debug(f"offset {record.offset}")
        to = record.header("to")
        out = Output(to.decode() if to else "out", key=record.key, value=record.value, headers=list(record.headers))
        try:
            ctx.emit(out)
        except Exception as error:
            raise Retry(str(error)) from error
        if record.value == b"fail":
            raise Reject("asked to fail")


def test_records_emits_and_logs() -> None:
    batch = (
        TestBatch("in", 2)
        .at_offset(100)
        .timestamp(5)
        .record("k", "v")
        .record("k2", "v2", [("to", "elsewhere")])
        .tombstone("gone")
        .raw(None, None, [("n", None)])
    )
    assert len(batch) == 4
    assert [r.offset for r in batch.batch()] == [100, 101, 102, 103]
    assert all(r.timestamp_ms == 5 for r in batch.batch())
    p = Forward()
    result = run(p, batch)
    assert result.all_processed()
    assert p.seen == 4
    assert [e.source for e in result.emitted] == [100, 101, 102, 103]
    assert result.emitted[0].topic == "out" and result.emitted[0].key_str() == "k"
    assert result.emitted[1].topic == "elsewhere"
    assert result.emitted[1].headers == (("to", b"elsewhere"),)
    assert result.emitted[2].value is None
    assert result.emitted[3].headers == (("n", None),)
    assert result.logs[0] == LogLine(Level.DEBUG, "offset 100")
    assert len(result.logs) == 4


def test_outputs_of_unprocessed_records_are_dropped() -> None:
    result = run(Forward(), TestBatch().value_only("a").value_only("fail").value_only("b"))
    assert result.outcomes[1] == Outcome.reject("asked to fail")
    assert str(result.outcomes[1]) == "reject: asked to fail"
    assert [e.source for e in result.emitted] == [0, 2]
    assert [e.source for e in result.dropped] == [1]


def test_harness_limits_in_the_hosts_order_with_the_rust_messages() -> None:
    batch = TestBatch().record("k", "v").record("k", "a much longer value").record("k", "v")
    p = Forward()

    result = Harness().allow_topic("out").max_emits(1).run(p, batch)
    assert result.outcomes[0] == Outcome.processed()
    assert result.outcomes[2] == Outcome.retry(str(TooMany()))
    assert str(TooMany()) == "batch emitted more records than allowed"

    result = Harness().max_record_bytes(4).run(p, batch)
    assert result.outcomes[1] == Outcome.retry("record exceeds the size limit of 4 bytes")
    assert str(TooLarge(4)) == "record exceeds the size limit of 4 bytes"

    result = Harness().batch_output_bytes(5).run(p, batch)
    assert result.outcomes[0].is_processed
    assert result.outcomes[1] == Outcome.retry("batch outputs exceed the budget of 5 bytes")
    assert str(OverBudget(5)) == "batch outputs exceed the budget of 5 bytes"

    result = Harness().deny_all_topics().run(p, batch)
    assert result.emitted == []
    assert result.outcomes[0] == Outcome.retry(
        'topic "out" is not allowed for this pipeline (the operator lists the topics it may write to '
        "in the pipeline's `output_topics`)"
    )
    assert str(TopicNotAllowed("out")) == result.outcomes[0].reason
    assert str(UnknownSource(7)) == "offset 7 is not a record of this batch"


class Raising(Processor):
    """Ends each record as its value says."""

    def process(self, record: Record, ctx: Context) -> None:
        ctx.emit_value("out", "x")
        command = record.value_str()
        if command == "retry":
            with transient():
                raise ConnectionError("downstream down")
        if command == "reject":
            with rejecting("parsing"):
                int("x1")
        if command == "key":
            empty: dict[str, int] = {}
            empty["missing"]
        if command == "emit":
            ctx.emit_value("nope", "x")
        if command == "fault":
            raise Fault("broken")
        if command == "memory":
            raise MemoryError()
        if command == "recursion":
            raise RecursionError("maximum recursion depth exceeded")


def test_exceptions_become_outcomes() -> None:
    harness = Harness().allow_topic("out")
    batch = TestBatch().value_only("ok").value_only("retry").value_only("reject").value_only("key").value_only("emit")
    result = harness.run(Raising(), batch)
    assert result.outcomes == [
        Outcome.processed(),
        Outcome.retry("ConnectionError: downstream down"),
        Outcome.reject("parsing: invalid literal for int() with base 10: 'x1'"),
        Outcome.reject("KeyError: 'missing'"),
        Outcome.reject(str(TopicNotAllowed("nope"))),
    ]
    assert [e.source for e in result.emitted] == [0]
    assert len(result.dropped) == 4


@pytest.mark.parametrize("command,error", [("fault", Fault), ("memory", MemoryError), ("recursion", RecursionError)])
def test_faults_escape_like_a_panic(command: str, error: type) -> None:
    with pytest.raises(error):
        run(Raising(), TestBatch().value_only(command))


class WholeBatch(Processor):
    """Works on the whole batch: a summary for the batch, a line per good record."""

    def process_batch(self, batch: Batch, ctx: Context) -> List[Outcome]:
        ctx.emit_value("summary", f"{len(batch)} records")
        outcomes = []
        for record in batch:
            with ctx.for_record(record):
                ctx.emit_value("lines", record.value or b"")
            outcomes.append(Outcome.reject("bad") if record.value == b"bad" else Outcome.processed())
        return outcomes


def test_batch_outputs_need_every_record_processed() -> None:
    result = run(WholeBatch(), TestBatch().value_only("a").value_only("b"))
    assert [(e.topic, e.source) for e in result.emitted] == [("summary", None), ("lines", 0), ("lines", 1)]
    result = run(WholeBatch(), TestBatch().value_only("a").value_only("bad"))
    assert [(e.topic, e.source) for e in result.emitted] == [("lines", 0)]
    assert [(e.topic, e.source) for e in result.dropped] == [("summary", None), ("lines", 1)]


def test_for_record_with_a_function_and_unknown_sources() -> None:
    class Odd(Processor):
        def process_batch(self, batch: Batch, ctx: Context) -> List[Outcome]:
            assert ctx.for_record(batch[0], lambda c: "returned") == "returned"
            other = TestBatch().at_offset(99).value_only("x").batch()[0]
            with pytest.raises(UnknownSource):
                ctx.for_record(other, lambda c: c.emit_value("out", "x"))
            return [Outcome.processed() for _ in batch]

    assert run(Odd(), TestBatch().value_only("a")).all_processed()


def test_wrong_count_is_caught() -> None:
    class Short(Processor):
        def process_batch(self, batch: Batch, ctx: Context) -> List[Outcome]:
            return []

    with pytest.raises(AssertionError, match="returned 0 outcomes for a batch of 1 records"):
        run(Short(), TestBatch().record("k", "v"))


def test_run_each_bypasses_process_batch() -> None:
    class Both(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            raise Reject("per record")

        def process_batch(self, batch: Batch, ctx: Context) -> List[Outcome]:
            return [Outcome.processed() for _ in batch]

    assert run(Both(), TestBatch().value_only("a")).all_processed()
    assert Harness().run_each(Both(), TestBatch().value_only("a")).outcomes == [Outcome.reject("per record")]


class Configured(Processor):
    def __init__(self) -> None:
        self.topic = ""
        self.told: List[str] = []

    def configure(self, settings: Settings) -> None:
        self.topic = settings.require("topic")

    def process(self, record: Record, ctx: Context) -> None:
        pass

    def assigned(self, partition: TopicPartition) -> None:
        self.told.append(f"+{partition}")

    def revoked(self, partition: TopicPartition) -> None:
        self.told.append(f"-{partition}")

    def self_test(self) -> None:
        if not self.topic:
            raise RuntimeError("not configured")


def test_settings_and_lifecycle() -> None:
    with pytest.raises(Exception, match="setting `topic` is required but the pipeline does not set it"):
        Harness().processor(Configured)
    harness = Harness().setting("topic", "out")
    harness.self_test(Configured)
    p = harness.processor(Configured)
    assert p.topic == "out"
    harness.run(p, TestBatch("t", 0).value_only("a"))
    harness.run(p, TestBatch("t", 0).value_only("b"))
    harness.run(p, TestBatch("t", 1).value_only("c"))
    harness.revoke(p, "t", 0)
    harness.revoke(p, "t", 7)
    assert p.told == ["+t/0", "+t/1", "-t/0"]


def test_capabilities_are_enforced_when_declared() -> None:
    class Logs(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            if record.value == b"log":
                ctx.info("hello")
            elif record.value == b"headers":
                record.header("x")
            else:
                ctx.emit_value("out", "x")

    for command, capability in [("log", "log"), ("headers", "headers"), ("emit", "output")]:
        with pytest.raises(CapabilityError, match=f"does not declare the `{capability}` capability"):
            Harness().capabilities().run(Logs(), TestBatch().value_only(command))
    everything = Harness().capabilities("log", "output", "headers")
    assert everything.run(Logs(), TestBatch().value_only("log").value_only("headers").value_only("x")).all_processed()
    with pytest.raises(ValueError, match="unknown capabilities"):
        Harness().capabilities("network")


def test_processor_without_process_rejects_clearly() -> None:
    result = run(Processor(), TestBatch().value_only("a"))
    assert result.outcomes[0].reason.startswith("NotImplementedError: Processor implements neither")
