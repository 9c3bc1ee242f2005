"""The seed scenario: turn orders into sales-agent commissions.

Input values are JSON orders::

    {"id":"o-1","agent":"alice","amount_cents":12345}

For each order the processor emits a commission of 5 % (rounded half up, in cents)
to the topic ``commissions`` (the pipeline setting ``output_topic`` changes it),
keyed by agent::

    {"order_id":"o-1","agent":"alice","amount_cents":12345,"commission_cents":617}

A record that can never become a commission (no value, malformed JSON, a missing
field, a negative amount) is rejected, and so is one whose commission the host
refused to take (a topic the pipeline does not grant will not be granted on the
next attempt either). The same behaviour as the Rust example in examples/orders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from ferry_sdk import Context, Processor, Record, Reject, Settings, export_processor

#: Where commissions go unless the pipeline sets `output_topic`.
OUTPUT_TOPIC = "commissions"
#: Commission rate in percent.
COMMISSION_PERCENT = 5

_I64 = range(-(1 << 63), 1 << 63)
_FIELDS = ("id", "agent", "amount_cents")


@dataclass(frozen=True)
class Order:
    """An order as read from the input topic. Unknown fields are ignored."""

    id: str
    agent: str
    amount_cents: int


def commission_cents(amount_cents: int) -> int:
    """``amount_cents`` × 5 %, rounded half up, for a non-negative amount
    (integer arithmetic: no float rounding, whatever the amount)."""
    return (amount_cents * COMMISSION_PERCENT + 50) // 100


def _object(pairs: List[Tuple[str, Any]]) -> dict[str, Any]:
    """Like serde: a known field given twice is an error, not last-one-wins."""
    seen = {}
    for key, value in pairs:
        if key in seen and key in _FIELDS:
            raise ValueError(f"duplicate field `{key}`")
        seen[key] = value
    return seen


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _text(order: dict[str, Any], field: str) -> str:
    value = order[field]
    if not isinstance(value, str):
        raise ValueError(f"`{field}` must be a string, not {json.dumps(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"`{field}` holds a lone surrogate") from None
    return value


# One decoder and one encoder for every record: `json.loads` and `json.dumps` with
# options build a new one per call, which costs more than the parsing itself.
_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_no_constants)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _loads(text: str) -> Any:
    """``json.loads(text, ...)`` with the shared decoder."""
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    return _DECODER.decode(text)


def parse_order(value: Optional[bytes]) -> Order:
    """Parses and checks an order; raises :class:`Reject` with the reason."""
    if value is None:
        raise Reject("record has no value")
    try:
        fields = _loads(value.decode("utf-8"))
        if not isinstance(fields, dict):
            raise ValueError("expected a JSON object")
        for field in _FIELDS:
            if field not in fields:
                raise ValueError(f"missing field `{field}`")
        amount = fields["amount_cents"]
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise ValueError(f"`amount_cents` must be an integer, not {json.dumps(amount)}")
        if amount not in _I64:
            raise ValueError(f"`amount_cents` {amount} does not fit 64 bits")
        order = Order(id=_text(fields, "id"), agent=_text(fields, "agent"), amount_cents=amount)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # serde limits nesting too
        raise Reject(f"malformed order: {error}") from None
    if order.amount_cents < 0:
        raise Reject(f"order {order.id} has a negative amount_cents ({order.amount_cents})")
    return order


def commission_json(order: Order) -> str:
    """The commission record, with the Rust example's field order and spacing."""
    commission = {
        "order_id": order.id,
        "agent": order.agent,
        "amount_cents": order.amount_cents,
        "commission_cents": commission_cents(order.amount_cents),
    }
    return _ENCODER.encode(commission)


class Orders(Processor):
    """Turns orders into commissions."""

    def __init__(self) -> None:
        self.output_topic = OUTPUT_TOPIC

    def configure(self, settings: Settings) -> None:
        self.output_topic = settings.get("output_topic") or OUTPUT_TOPIC

    def process(self, record: Record, ctx: Context) -> None:
        order = parse_order(record.value)
        # A refused emit raises EmitError, which rejects the record.
        ctx.emit_kv(self.output_topic, order.agent, commission_json(order))


export_processor(Orders)
