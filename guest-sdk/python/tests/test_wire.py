"""The flat batch encoding: layout, absent vs empty, and corrupt buffers."""

import random
import struct

import pytest

from ferry_sdk.wire import ABSENT_LEN, RECORD_FIXED_LEN, BatchEncoder, WireError, decode


def test_layout_is_as_documented() -> None:
    encoder = BatchEncoder()
    encoder.push(5, None, b"ab", None, [("h", b"xyz"), ("n", None)])
    expected = (
        struct.pack("<qqIII", 5, -(1 << 63), 2, ABSENT_LEN, 2)
        + b"ab"
        + struct.pack("<II", 1, 3)
        + b"hxyz"
        + struct.pack("<II", 1, ABSENT_LEN)
        + b"n"
    )
    assert encoder.bytes() == expected
    assert encoder.count == 1


def test_empty_and_absent_are_distinct() -> None:
    encoder = BatchEncoder()
    encoder.push(0, 0, b"", b"", [("", b"")])
    encoder.push(1, None, None, None, [("", None)])
    first, second = decode(encoder.bytes(), 2)
    assert (first.timestamp_ms, first.key_len, first.value_len, first.headers) == (0, 0, 0, (("", b""),))
    assert (second.timestamp_ms, second.key_len, second.value_len, second.headers) == (None, -1, -1, (("", None),))


def test_empty_batch() -> None:
    assert decode(b"", 0) == []
    with pytest.raises(WireError, match="ends inside the offset of record 0"):
        decode(b"", 1)


def test_trailing_bytes_are_an_error() -> None:
    encoder = BatchEncoder()
    encoder.push(1, None, None, None)
    encoder.push(2, None, None, None)
    with pytest.raises(WireError, match=f"{RECORD_FIXED_LEN} bytes left after the 1 records announced"):
        decode(encoder.bytes(), 1)


def test_huge_lengths_are_truncation() -> None:
    buf = struct.pack("<qqIII", 1, 1, ABSENT_LEN - 1, 0, 0)
    with pytest.raises(WireError, match="inside the key of record 0"):
        decode(buf, 1)
    encoder = BatchEncoder()
    encoder.push(1, None, None, None)
    patched = bytearray(encoder.bytes())
    patched[24:28] = struct.pack("<I", ABSENT_LEN)
    with pytest.raises(WireError, match="inside the header name length of record 0"):
        decode(bytes(patched), 1)


def test_bad_header_name_is_reported() -> None:
    encoder = BatchEncoder()
    encoder.push(1, None, None, None)
    encoder.push(2, None, None, None, [("ok", None), ("é", None)])
    buf = bytearray(encoder.bytes())
    buf[-1] = 0xFF
    with pytest.raises(WireError, match="name of header 1 of record 1 is not UTF-8"):
        decode(bytes(buf), 2)


def _random_record(rng: random.Random, offset: int) -> tuple[int, int | None, bytes | None, bytes | None, list[tuple[str, bytes | None]]]:
    def data() -> bytes | None:
        return None if rng.random() < 0.2 else rng.randbytes(rng.randrange(0, 40))

    timestamp = None if rng.random() < 0.3 else rng.randrange(-(1 << 62), 1 << 62)
    headers = [("".join(rng.choice("abcé✓") for _ in range(rng.randrange(0, 6))), data()) for _ in range(rng.randrange(4))]
    return offset, timestamp, data(), data(), headers


def test_roundtrip_and_every_truncation_fails() -> None:
    rng = random.Random(7)
    for _ in range(200):
        records = [_random_record(rng, rng.randrange(-(1 << 63), 1 << 63)) for _ in range(rng.randrange(0, 6))]
        encoder = BatchEncoder()
        for record in records:
            encoder.push(*record)
        buf = encoder.bytes()
        decoded = decode(buf, len(records))
        for raw, (offset, timestamp, key, value, headers) in zip(decoded, records):
            assert raw.offset == offset and raw.timestamp_ms == timestamp
            got_key = None if raw.key_len < 0 else buf[raw.key_start : raw.key_start + raw.key_len]
            got_value = None if raw.value_len < 0 else buf[raw.value_start : raw.value_start + raw.value_len]
            assert (got_key, got_value, list(raw.headers)) == (key, value, headers)
        if buf:
            with pytest.raises(WireError):
                decode(buf[: rng.randrange(len(buf))], len(records))


def test_garbage_never_escapes_as_another_error() -> None:
    rng = random.Random(11)
    for _ in range(500):
        try:
            decode(rng.randbytes(rng.randrange(0, 120)), rng.randrange(0, 5))
        except WireError:
            pass
