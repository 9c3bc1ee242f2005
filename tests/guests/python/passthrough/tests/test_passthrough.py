"""Every record processed, nothing emitted or logged, no capability used."""

from pathlib import Path

from passthrough import Passthrough
from ferry_sdk import Outcome
from ferry_sdk.testing import Harness, TestBatch

PROJECT = Path(__file__).resolve().parent.parent


def test_every_record_is_processed() -> None:
    batch = TestBatch("in", 0).record("k", "a").value_only("b").tombstone("c")
    run = Harness().deny_all_topics().declared_by(PROJECT).run(Passthrough(), batch)
    assert run.outcomes == [Outcome.processed()] * 3
    assert run.emitted == [] and run.logs == []
