from ferry_sdk import Status
from ferry_sdk.testing import Harness, TestBatch
from filler import Filler


def test_fills_until_refused_then_counts_what_fits() -> None:
    # Room for a count and three 1 KiB fills: (128 + 2 + 8) + 3 * (128 + 7 + 1024), and
    # the rest for empty fills.
    limit = 138 + 3 * 1159 + 400
    host = Harness().state_bytes(limit)
    batch = TestBatch("t", 0).record("p0", "x").record("f", "fill").record("p0", "x").record("new", "x")
    run = host.run(Filler(), batch)
    assert [o.status for o in run.outcomes] == [Status.PROCESSED] * 3 + [Status.REJECT]
    assert [(e.key_str(), e.value_str()) for e in run.emitted] == [
        ("p0", "1"),
        ("f", f"PartitionFull:{limit}:the partition's state would exceed its limit of {limit} bytes"),
        ("p0", "2"),
    ]
    keys = host.state("t", 0)
    assert len([k for k in keys if k.startswith(b"f1024-")]) == 3
    assert len([k for k in keys if k.startswith(b"f0-")]) == 400 // 131
    assert host.run(Filler(), TestBatch("t", 1).record("p1", "x")).all_processed(), "another partition has room"
