"""The orders example under the same host limits and grant as examples/ferry.toml."""

from pathlib import Path

import pytest

from ferry_sdk import Outcome, Status
from ferry_sdk.testing import Harness, TestBatch
from orders import OUTPUT_TOPIC, Orders, commission_cents

PROJECT = Path(__file__).resolve().parent.parent


def host() -> Harness:
    """The host's limits, this example's grant, and its declared capabilities."""
    return Harness().allow_topic(OUTPUT_TOPIC).declared_by(PROJECT)


def reason(outcome: Outcome) -> str:
    assert outcome.status is Status.REJECT, f"expected a reject, got {outcome}"
    return outcome.reason


def test_commission_rounds_half_up() -> None:
    assert commission_cents(0) == 0
    assert commission_cents(9) == 0  # 0.45
    assert commission_cents(10) == 1  # 0.5
    assert commission_cents(29) == 1  # 1.45
    assert commission_cents(30) == 2  # 1.5
    assert commission_cents(12345) == 617  # 617.25
    assert commission_cents(12350) == 618  # 617.5
    assert commission_cents((1 << 63) - 1) == 461_168_601_842_738_790


def test_seed_order_becomes_a_commission() -> None:
    batch = TestBatch("orders", 0).record("o-1", '{"id":"o-1","agent":"alice","amount_cents":12345}')
    run = host().run(Orders(), batch)
    assert run.outcomes == [Outcome.processed()]
    assert len(run.emitted) == 1
    out = run.emitted[0]
    assert out.topic == "commissions"
    assert out.key_str() == "alice"
    assert out.value_str() == '{"order_id":"o-1","agent":"alice","amount_cents":12345,"commission_cents":617}'
    assert out.headers == ()
    assert run.logs == []


def test_extra_fields_are_ignored_and_text_is_kept_as_is() -> None:
    batch = (
        TestBatch("orders", 0)
        .value_only('{"amount_cents":100,"agent":"bob","id":"o-2","currency":"EUR"}')
        .value_only('{"id":"o-\\"3\\"","agent":"zoë","amount_cents":9223372036854775807}')
    )
    run = host().run(Orders(), batch)
    assert run.all_processed()
    assert run.emitted[0].value_str() == '{"order_id":"o-2","agent":"bob","amount_cents":100,"commission_cents":5}'
    assert run.emitted[1].value_str() == (
        '{"order_id":"o-\\"3\\"","agent":"zoë","amount_cents":9223372036854775807,'
        '"commission_cents":461168601842738790}'
    )


def test_bad_orders_are_rejected_and_the_rest_go_through() -> None:
    batch = (
        TestBatch("orders", 3)
        .at_offset(40)
        .value_only("not json")
        .value_only('{"id":"o-3","amount_cents":1}')
        .value_only('{"id":"o-4","agent":"carol","amount_cents":-5}')
        .value_only('{"id":"o-5","agent":"dave","amount_cents":"12"}')
        .tombstone("o-6")
        .value_only('{"id":"o-7","agent":"erin","amount_cents":200}')
    )
    run = host().run(Orders(), batch)
    assert len(run.outcomes) == 6
    assert reason(run.outcomes[0]).startswith("malformed order")
    assert "missing field `agent`" in reason(run.outcomes[1])
    assert "negative amount_cents (-5)" in reason(run.outcomes[2])
    assert reason(run.outcomes[3]).startswith("malformed order")
    assert reason(run.outcomes[4]) == "record has no value"
    assert run.outcomes[5] == Outcome.processed()
    assert [e.key_str() for e in run.emitted] == ["erin"]


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe",
        b"[1, 2]",
        b'{"id":"a","agent":"b","amount_cents":1.5}',
        b'{"id":"a","agent":"b","amount_cents":true}',
        b'{"id":"a","agent":"b","amount_cents":NaN}',
        b'{"id":"a","agent":"b","amount_cents":9223372036854775808}',
        b'{"id":"a","id":"b","agent":"c","amount_cents":1}',
        b'{"id":7,"agent":"b","amount_cents":1}',
        b'{"id":"\\ud800","agent":"b","amount_cents":1}',
    ],
)
def test_what_serde_refuses_is_malformed(value: bytes) -> None:
    run = host().run(Orders(), TestBatch("orders", 0).value_only(value))
    assert reason(run.outcomes[0]).startswith("malformed order: "), run.outcomes


def test_refused_emit_is_rejected() -> None:
    batch = TestBatch("orders", 0).value_only('{"id":"o-1","agent":"alice","amount_cents":12345}')
    run = Harness().deny_all_topics().run(Orders(), batch)
    assert '"commissions" is not allowed' in reason(run.outcomes[0])
    assert run.emitted == []

    run = host().max_emits(1).run(
        Orders(),
        TestBatch("orders", 0)
        .value_only('{"id":"a","agent":"x","amount_cents":1}')
        .value_only('{"id":"b","agent":"y","amount_cents":1}'),
    )
    assert run.outcomes[0] == Outcome.processed()
    assert "more records than allowed" in reason(run.outcomes[1])


def test_the_output_topic_is_a_setting() -> None:
    harness = Harness().allow_topic("payouts").setting("output_topic", "payouts")
    orders = harness.processor(Orders)
    run = harness.run(orders, TestBatch("orders", 0).value_only('{"id":"o-1","agent":"alice","amount_cents":100}'))
    assert run.all_processed(), run.outcomes
    assert run.emitted[0].topic == "payouts"


def test_deep_nesting_is_malformed_not_a_crash() -> None:
    run = host().run(Orders(), TestBatch("orders", 0).value_only("[" * 100_000))
    assert reason(run.outcomes[0]).startswith("malformed order: ")
