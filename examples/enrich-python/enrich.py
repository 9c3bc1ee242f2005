"""Orders enriched with their customer, looked up over HTTP: the Python form of
examples/enrich, with the same outcomes.

Input values are JSON orders naming a customer::

    {"id":"o-1","customer":"c-7","amount_cents":12345}

For each order the processor GETs ``<customers_url>/customers/<customer>`` (the
setting ``customers_url``; the pipeline's ``[pipeline.http]`` must allow it) and
emits the order with the customer's JSON attached to ``enriched-orders`` (the
setting ``output_topic``), keyed by customer::

    {"order":{"id":"o-1","customer":"c-7","amount_cents":12345},"customer":{"id":"c-7","tier":"gold"}}

A batch's lookups go out at once (``http.send_all``), within the pipeline's
``concurrent_requests``. Each record ends on its own answer:

=====================================================================  =================
answer                                                                 outcome
=====================================================================  =================
200 with a JSON body                                                   processed, one record emitted
404                                                                    reject: there is no such customer
429 or 5xx, a timeout, a failed connection, over the batch's budget    retry, with the pipeline's backoff
a refused URL, any other status, a body that is not JSON               reject
an order that is not JSON or names no customer                         reject, no request
=====================================================================  =================
"""

from __future__ import annotations

import json
import re
from typing import Any, List, Optional, Tuple, Union

from ferry_sdk import Batch, Context, Outcome, Processor, Record, Reject, Retry, Settings, export_processor, http
from ferry_sdk.processor import outcome_of

#: Where enriched orders go unless the setting `output_topic` says otherwise.
OUTPUT_TOPIC = "enriched-orders"
#: The customers service unless the setting `customers_url` says otherwise.
CUSTOMERS_URL = "http://127.0.0.1:8089"

_CUSTOMER_ID = re.compile(r"[A-Za-z0-9_-]+")


def lookup(customers_url: str, value: Optional[bytes]) -> Tuple[Any, str, http.Request]:
    """The order as JSON, its customer, and the lookup of that customer (raises
    :class:`Reject` for an order no lookup can help)."""
    if value is None:
        raise Reject("the record has no value")
    try:
        order = json.loads(value)
    except ValueError as error:
        raise Reject(f"malformed order: {error}") from None
    customer = order.get("customer") if isinstance(order, dict) else None
    if not isinstance(customer, str):
        raise Reject("the order names no customer")
    if not _CUSTOMER_ID.fullmatch(customer):
        raise Reject(f"`{customer}` is not a customer id")
    request = http.Request.get(f"{customers_url}/customers/{customer}", {"accept": "application/json"})
    return order, customer, request


def customer_of(customer: str, answer: Union[http.Response, http.HttpError]) -> Any:
    """What the answer to a lookup means for its record: the customer, or why not."""
    if isinstance(answer, http.HttpError):
        raise Retry(str(answer)) if answer.transient else Reject(str(answer))
    if answer.status == 200:
        try:
            return answer.json()
        except ValueError as error:
            raise Reject(f"customer {customer}: the service's answer is not JSON: {error}") from None
    if answer.status == 404:
        raise Reject(f"no customer {customer}")
    if answer.status == 429 or 500 <= answer.status <= 599:
        raise Retry(f"customer {customer}: the service answered {answer.status}")
    raise Reject(f"customer {customer}: the service answered {answer.status}")


class Enrich(Processor):
    """Attaches each order's customer."""

    def __init__(self) -> None:
        self.customers_url = CUSTOMERS_URL
        self.output_topic = OUTPUT_TOPIC

    def configure(self, settings: Settings) -> None:
        url = settings.get("customers_url")
        if url is not None:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"customers_url `{url}` is not an http:// or https:// URL")
            self.customers_url = url.rstrip("/")
        self.output_topic = settings.get("output_topic") or self.output_topic

    def process(self, record: Record, ctx: Context) -> None:
        """One record alone: the same lookup, sent by itself."""
        order, customer, request = lookup(self.customers_url, record.value)
        (answer,) = http.send_all([request])
        self._emit(ctx, order, customer, customer_of(customer, answer))

    def process_batch(self, batch: Batch, ctx: Context) -> List[Outcome]:
        """The batch's lookups at once; each record ends on its own answer."""
        prepared: List[Union[Tuple[Any, str, http.Request], Reject]] = []
        for record in batch:
            try:
                prepared.append(lookup(self.customers_url, record.value))
            except Reject as error:
                prepared.append(error)
        answers = iter(http.send_all([p[2] for p in prepared if not isinstance(p, Reject)]))
        outcomes = []
        for record, lookup_of in zip(batch, prepared):
            if isinstance(lookup_of, Reject):
                outcomes.append(Outcome.reject(lookup_of.reason))
                continue
            order, customer, _ = lookup_of
            answer = next(answers)
            with ctx.for_record(record):
                outcomes.append(outcome_of(lambda: self._emit(ctx, order, customer, customer_of(customer, answer))))
        return outcomes

    def _emit(self, ctx: Context, order: Any, customer: str, found: Any) -> None:
        value = json.dumps({"order": order, "customer": found}, separators=(",", ":"))
        # A refused emit will be refused again: it rejects the record.
        ctx.emit_kv(self.output_topic, customer, value)


export_processor(Enrich)
