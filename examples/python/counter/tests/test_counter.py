"""The counter under the host's limits and its declared capabilities: counts carry
over batches and instances per partition, as the host keeps state."""

from pathlib import Path
from typing import List, Tuple

from ferry_sdk import PartitionFull
from ferry_sdk.testing import Harness, Run, TestBatch
from counter import OUTPUT_TOPIC, Counter

PROJECT = Path(__file__).resolve().parent.parent


def host() -> Harness:
    return Harness().allow_topic(OUTPUT_TOPIC).declared_by(PROJECT)


def counts(run: Run) -> List[Tuple[str, str]]:
    return [(e.key_str() or "", e.value_str() or "") for e in run.emitted]


def test_counts_carry_over_batches_and_instances_per_partition() -> None:
    harness = host()
    first = TestBatch("clicks", 1).record("alice", "x").record("bob", "x").record("alice", "x")
    assert counts(harness.run(Counter(), first)) == [("alice", "1"), ("bob", "1"), ("alice", "2")]
    # A fresh instance (after a trap, a redeploy, a restart) sees the same state.
    second = TestBatch("clicks", 1).at_offset(3).record("alice", "y").value_only("no key")
    run = harness.run(Counter(), second)
    assert run.all_processed()
    assert counts(run) == [("alice", "3")]
    assert counts(harness.run(Counter(), TestBatch("clicks", 2).record("alice", "z"))) == [("alice", "1")]
    assert harness.state("clicks", 1) == {b"alice": (3).to_bytes(8, "little"), b"bob": (1).to_bytes(8, "little")}


def test_counts_go_on_from_a_restored_state_as_the_rust_counter_wrote_it() -> None:
    harness = host().with_state("clicks", 0, {"alice": (41).to_bytes(8, "little")})
    assert counts(harness.run(Counter(), TestBatch("clicks", 0).record("alice", "x"))) == [("alice", "42")]


def test_a_batch_that_is_retried_leaves_its_state_as_it_was() -> None:
    # Emits to `counts` are refused (not an allowed topic): every record retries.
    harness = Harness().allow_topic("elsewhere")
    run = harness.run(Counter(), TestBatch("clicks", 0).record("a", "1"))
    assert not run.all_processed()
    assert harness.state("clicks", 0) == {}, "the writes of an unfinished batch are dropped"


def test_a_full_partition_rejects_new_keys_and_counts_the_ones_it_has() -> None:
    # One entry: 128 bytes, the key and the 8-byte count.
    harness = host().state_bytes(128 + 1 + 8)
    run = harness.run(Counter(), TestBatch("clicks", 0).record("a", "x").record("b", "x").record("a", "x"))
    assert [o.status.value for o in run.outcomes] == ["processed", "reject", "processed"]
    assert run.outcomes[1].reason == str(PartitionFull(137))
    assert counts(run) == [("a", "1"), ("a", "2")]


def test_the_output_topic_is_a_setting() -> None:
    harness = Harness().setting("output_topic", "tallies").allow_topic("tallies")
    run = harness.run(harness.processor(Counter), TestBatch().record("k", "v"))
    assert [(e.topic, e.value_str()) for e in run.emitted] == [("tallies", "1")]
