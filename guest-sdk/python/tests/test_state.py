"""Keyed state: the API, the harness holding state per partition as the host does,
and the component glue turning the host's refusals into StateError."""

from typing import Dict, List, Optional, Tuple

import pytest

from ferry_sdk import (
    CapabilityError,
    Context,
    KeyTooLarge,
    Outcome,
    PartitionFull,
    Processor,
    Record,
    Retry,
    StateError,
    TooManyWrites,
    ValueTooLarge,
    limits,
)
from ferry_sdk._guest import Guest, Host
from ferry_sdk.testing import Harness, TestBatch
from ferry_sdk.wire import BatchEncoder


class Counter(Processor):
    """Counts per key in state and emits the running count; a value of "retry"
    retries the record."""

    def process(self, record: Record, ctx: Context) -> None:
        key = record.key or b""
        state = ctx.state()
        count = (state.get_u64(key) or 0) + 1
        state.put_u64(key, count)
        if record.value_str() == "retry":
            raise Retry("asked to")
        ctx.emit_kv("counts", key, str(count))


def counts(run) -> List[Tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(e.key_str(), e.value_str()) for e in run.emitted]


def test_counts_carry_over_batches_and_instances_per_partition() -> None:
    host = Harness()
    first = TestBatch("clicks", 1).record("alice", "x").record("bob", "x").record("alice", "x")
    assert counts(host.run(Counter(), first)) == [("alice", "1"), ("bob", "1"), ("alice", "2")]
    # A fresh instance (after a trap, a redeploy, a restart) sees the same state.
    second = TestBatch("clicks", 1).at_offset(3).record("alice", "y")
    assert counts(host.run(Counter(), second)) == [("alice", "3")]
    other = host.run(Counter(), TestBatch("clicks", 2).record("alice", "z"))
    assert counts(other) == [("alice", "1")], "partitions are counted apart"
    assert host.state("clicks", 1) == {b"alice": (3).to_bytes(8, "little"), b"bob": (1).to_bytes(8, "little")}
    assert host.state("clicks", 3) == {}


def test_a_batch_with_a_retry_leaves_the_state_as_it_was_and_a_reject_keeps_it() -> None:
    host = Harness().with_state("t", 0, {"a": (5).to_bytes(8, "little")})
    run = host.run(Counter(), TestBatch("t", 0).record("a", "x").record("b", "retry"))
    assert run.outcomes[1] == Outcome.retry("asked to")
    assert host.state("t", 0) == {b"a": (5).to_bytes(8, "little")}, "the writes of an unfinished batch are dropped"
    assert counts(host.run(Counter(), TestBatch("t", 0).record("a", "x"))) == [("a", "6")]

    class Rejecting(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            ctx.state().put(record.key or b"", "seen")
            raise ValueError("bad record")

    run = host.run(Rejecting(), TestBatch("t", 0).record("z", "x"))
    assert run.outcomes[0].reason == "ValueError: bad record"
    assert host.state("t", 0)[b"z"] == b"seen", "a rejected record finished: its writes stay"


def test_bytes_text_json_delete_and_scan() -> None:
    seen: Dict[str, object] = {}

    class Everything(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            state = ctx.state()
            state.put("b/1", b"\x00\xff")
            state.put(b"a/2", "zwei")
            state.put_json("a/1", {"n": 1, "tags": ["x", "ü"]})
            state.put("c", "gone")
            state.delete("c")
            state.delete("never-there")
            seen["bytes"] = state.get("b/1")
            seen["text"] = state.get_str("a/2")
            seen["not text"] = state.get_str("b/1")
            seen["json"] = state.get_json("a/1")
            seen["default"] = state.get_json("missing", {"n": 0})
            seen["u64 of 2 bytes"] = state.get_u64("b/1")
            seen["a/"] = [k for k, _ in state.scan("a/")]
            seen["one"] = state.scan("", 1)
            seen["all"] = len(state.scan())
            seen["deleted"] = state.get("c")

    host = Harness()
    assert host.run(Everything(), TestBatch().record("k", "v")).all_processed()
    assert seen == {
        "bytes": b"\x00\xff",
        "text": "zwei",
        "not text": None,
        "json": {"n": 1, "tags": ["x", "ü"]},
        "default": {"n": 0},
        "u64 of 2 bytes": None,
        "a/": [b"a/1", b"a/2"],
        "one": [(b"a/1", '{"n":1,"tags":["x","ü"]}'.encode())],
        "all": 3,
        "deleted": None,
    }
    assert set(host.state("in", 0)) == {b"a/1", b"a/2", b"b/1"}


class Filler(Processor):
    """Writes a value of the record's value length under its key until refused."""

    def __init__(self) -> None:
        self.refused: List[StateError] = []

    def process(self, record: Record, ctx: Context) -> None:
        try:
            ctx.state().put(record.key or b"", b"\x07" * len(record.value or b""))
        except StateError as error:
            self.refused.append(error)
            raise


def test_the_harness_refuses_what_the_host_refuses_with_its_limits() -> None:
    filler = Filler()
    big_key = "k" * (limits.MAX_STATE_KEY_BYTES + 1)
    big_value = b"v" * (limits.MAX_STATE_VALUE_BYTES + 1)
    # Each entry costs 128 + key + value: 300 bytes hold two 10-byte entries.
    host = Harness().state_bytes(300)
    batch = TestBatch("t", 0).record(big_key, "x").record("a", big_value).record("b", "x" * 9).record("c", "x" * 9)
    batch.record("d", "x" * 9).record("b", "y" * 9)
    run = host.run(filler, batch)
    assert [type(e) for e in filler.refused] == [KeyTooLarge, ValueTooLarge, PartitionFull]
    assert [e.limit for e in filler.refused] == [limits.MAX_STATE_KEY_BYTES, limits.MAX_STATE_VALUE_BYTES, 300]
    assert [o.status.value for o in run.outcomes] == ["reject", "reject", "processed", "processed", "reject", "processed"]
    assert run.outcomes[4].reason == "the partition's state would exceed its limit of 300 bytes"
    assert host.state("t", 0) == {b"b": b"\x07" * 9, b"c": b"\x07" * 9}, "rewriting a key that fits is fine"
    # The other partition has its own budget.
    assert host.run(Filler(), TestBatch("t", 1).record("d", "x" * 9)).all_processed()

    writes = Harness().state_writes(2)
    run = writes.run(Filler(), TestBatch().record("a", "").record("b", "").record("c", ""))
    assert run.outcomes[2] == Outcome.reject("the batch made its 2 state writes already")
    assert set(writes.state("in", 0)) == {b"a", b"b"}
    # The count is per batch.
    assert writes.run(Filler(), TestBatch().at_offset(3).record("c", "")).all_processed()


def test_state_needs_the_capability() -> None:
    with pytest.raises(CapabilityError, match="does not declare the `state` capability"):
        Harness().capabilities("output").run(Counter(), TestBatch().record("k", "v"))


class FakeStore:
    """The host's `state` import: refuses writes of a value over 3 bytes."""

    def __init__(self) -> None:
        self.map: Dict[bytes, bytes] = {}

    def get(self, key: bytes) -> Optional[bytes]:
        return self.map.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        if len(value) > 3:
            raise ValueTooLarge(3)
        self.map[key] = value

    def delete(self, key: bytes) -> None:
        self.map.pop(key, None)

    def scan(self, prefix: bytes, limit: int) -> List[Tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self.map.items() if k.startswith(prefix))[:limit]


def test_the_component_glue_reaches_the_host_store_only_when_declared() -> None:
    store = FakeStore()

    class Writer(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            ctx.state().put(record.key or b"", record.value or b"")

    encoder = BatchEncoder()
    encoder.push(0, None, b"a", b"abc", [])
    encoder.push(1, None, b"b", b"abcd", [])
    host = Host(entries=lambda: [], emit=None, log=None, headers_enabled=None, state=store)
    results = Guest(Writer, host).process("t", 0, encoder.count, encoder.bytes())
    assert [(offset, outcome.status.value) for offset, outcome in results] == [(0, "processed"), (1, "reject")]
    assert results[1][1].reason == "state value exceeds the limit of 3 bytes"
    assert store.map == {b"a": b"abc"}

    without = Host(entries=lambda: [], emit=None, log=None, headers_enabled=None)
    with pytest.raises(CapabilityError, match="does not declare the `state` capability"):
        Guest(Writer, without).process("t", 0, encoder.count, encoder.bytes())


def test_u64_and_scan_arguments_are_checked() -> None:
    class Bad(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            if record.value_str() == "neg":
                ctx.state().put_u64("k", -1)
            else:
                ctx.state().scan("", -1)

    run = Harness().run(Bad(), TestBatch().record("k", "neg").record("k", "scan"))
    assert [o.reason for o in run.outcomes] == ["ValueError: -1 is not a u64", "ValueError: scan limit -1 is not a u32"]
    assert TooManyWrites(5).limit == 5
