"""The chaos guest's harmless commands natively, and that its hostile ones escape
the SDK as faults (those that end at all)."""

from pathlib import Path

import pytest

from chaos import Chaos
from ferry_sdk import Fault, Level, Outcome
from ferry_sdk.testing import Harness, LogLine, TestBatch

PROJECT = Path(__file__).resolve().parent.parent


def harness() -> Harness:
    return Harness().allow_topic("out").declared_by(PROJECT)


def test_harmless_commands() -> None:
    batch = (
        TestBatch("in", 0)
        .record("k", "retry")
        .value_only("reject")
        .record("k", "emit:out")
        .value_only("emit:elsewhere")
        .value_only("log:hello")
        .value_only("sleep:1")
        .value_only("sleep:x")
        .value_only("anything")
        .value_only("error")
        .value_only("block:1")
        .value_only("block:x")
    )
    run = harness().run(Chaos(), batch)
    assert run.outcomes[:2] == [Outcome.retry("asked to retry"), Outcome.reject("asked to reject")]
    assert run.outcomes[2] == Outcome.processed()
    assert run.outcomes[3].reason.startswith('emit refused: topic "elsewhere" is not allowed')
    assert run.outcomes[4:6] == [Outcome.processed(), Outcome.processed()]
    assert run.outcomes[6] == Outcome.reject("bad sleep duration 'x'")
    assert run.outcomes[7] == Outcome.processed()
    assert run.outcomes[8] == Outcome.reject("KeyError: 'missing'")
    assert run.outcomes[9] == Outcome.processed()
    assert run.outcomes[10] == Outcome.reject("bad block duration 'x'")
    assert [(e.topic, e.key, e.value) for e in run.emitted] == [("out", b"k", b"emit:out")]
    assert run.logs == [LogLine(Level.INFO, "hello"), LogLine(Level.INFO, "blocking for 1 ms")]


@pytest.mark.parametrize("command,error", [("panic", Fault), ("throw", Fault), ("recurse", RecursionError)])
def test_faults_escape(command: str, error: type) -> None:
    with pytest.raises(error):
        harness().run(Chaos(), TestBatch().value_only(command))


def test_emit_then_fail() -> None:
    chaos = Chaos()
    batch = TestBatch("in", 0).record("a", "emit-reject:out").record("b", "emit-retry-once:out")
    first = harness().run(chaos, batch)
    assert first.outcomes == [Outcome.reject("asked to reject after emitting"), Outcome.retry("asked to retry after emitting")]
    assert first.emitted == [] and [e.key for e in first.dropped] == [b"a", b"b"]
    again = harness().run(chaos, batch)
    assert again.outcomes[1] == Outcome.processed()
    assert [(e.key, e.value) for e in again.emitted] == [(b"b", b"emit-retry-once:out")]
