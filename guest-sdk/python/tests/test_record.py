"""Record views read the buffer; headers go through the capability gate."""

import pytest

from ferry_sdk import Batch, CapabilityError, TopicPartition
from ferry_sdk.wire import BatchEncoder, WireError


def _encoded() -> BatchEncoder:
    encoder = BatchEncoder()
    encoder.push(10, 99, b"k1", b"v1", [("a", b"1"), ("b", None), ("a", b"2")])
    encoder.push(12, None, None, None)
    return encoder


def test_views_read_the_buffer() -> None:
    encoder = _encoded()
    batch = Batch("t", 3, encoder.count, encoder.bytes())
    assert (batch.topic, batch.partition, len(batch)) == ("t", 3, 2)
    first, second = batch
    assert (first.topic, first.partition, first.offset, first.timestamp_ms) == ("t", 3, 10, 99)
    assert (first.key, first.value, first.key_str(), first.value_str()) == (b"k1", b"v1", "k1", "v1")
    assert bytes(first.value_view() or b"") == b"v1"
    assert first.header("a") == b"1"
    assert first.header("b") is None
    assert first.header("zz") is None
    assert len(first.headers) == 3
    assert "offset=10" in repr(first)
    assert (second.offset, second.timestamp_ms, second.key, second.value, second.headers) == (12, None, None, None, ())
    assert second.key_view() is None and second.value_str() is None
    assert batch[-1].offset == 12
    assert [r.offset for r in batch[0:1]] == [10]
    assert TopicPartition.of(first) == TopicPartition("t", 3)
    assert str(TopicPartition.of(first)) == "t/3"


def test_corrupt_buffers_are_refused() -> None:
    buf = _encoded().bytes()
    for count, data in [(3, buf), (1, buf), (2, buf[:-1])]:
        with pytest.raises(WireError):
            Batch("t", 0, count, data)
    assert len(Batch("t", 0, 0, b"")) == 0


def test_header_gate_runs_before_headers_are_read() -> None:
    calls = []

    def gate() -> None:
        calls.append(1)
        raise CapabilityError("no headers here")

    encoder = _encoded()
    record = Batch("t", 0, encoder.count, encoder.bytes(), gate)[0]
    assert record.value == b"v1"  # values do not need the gate
    with pytest.raises(CapabilityError):
        record.header("a")
    assert calls == [1]
