"""The enrichment processor against a stand-in customers service (the harness's
``http_service``), under the pipeline's rules (``allow_http``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from enrich import CUSTOMERS_URL, OUTPUT_TOPIC, Enrich
from ferry_sdk import PROCESSED, CapabilityError, Outcome, http
from ferry_sdk.testing import Harness, TestBatch

PROJECT = Path(__file__).resolve().parent.parent


def customers(request: http.Request) -> http.Response:
    """`c-7` exists, `c-busy` is overloaded, `c-slow` never answers in time,
    anything else is unknown."""
    if request.path == "/customers/c-7":
        return http.Response(200, '{"id":"c-7","tier":"gold"}')
    if request.path == "/customers/c-busy":
        return http.Response(503, "busy")
    if request.path == "/customers/c-slow":
        raise http.HttpError(http.HttpErrorKind.TIMEOUT, "HttpResponseTimeout")
    return http.Response(404)


def host() -> Harness:
    return Harness().declared_by(PROJECT).allow_topic(OUTPUT_TOPIC).allow_http(CUSTOMERS_URL).http_service(customers)


def order(id: str, customer: str) -> str:
    return json.dumps({"id": id, "customer": customer, "amount_cents": 100})


def test_an_order_gets_its_customer_attached() -> None:
    run = host().run(Enrich(), TestBatch("orders", 0).record("o-1", order("o-1", "c-7")))
    assert run.all_processed()
    assert [e.key_str() for e in run.emitted] == ["c-7"]
    assert json.loads(run.emitted[0].value_str() or "") == {
        "order": {"id": "o-1", "customer": "c-7", "amount_cents": 100},
        "customer": {"id": "c-7", "tier": "gold"},
    }


def test_each_record_ends_on_its_own_answer() -> None:
    batch = (
        TestBatch("orders", 0)
        .value_only(order("o-1", "c-7"))
        .value_only(order("o-2", "c-404"))
        .value_only(order("o-3", "c-busy"))
        .value_only(order("o-4", "c-slow"))
        .value_only("not json")
        .value_only(order("o-6", "c 7"))
        .value_only(order("o-7", "c-7"))
    )
    run = host().run(Enrich(), batch)
    assert run.outcomes == [
        PROCESSED,
        Outcome.reject("no customer c-404"),
        Outcome.retry("customer c-busy: the service answered 503"),
        Outcome.retry("HTTP request timed out: HttpResponseTimeout"),
        run.outcomes[4],
        Outcome.reject("`c 7` is not a customer id"),
        PROCESSED,
    ]
    assert run.outcomes[4].status.name == "REJECT" and run.outcomes[4].reason.startswith("malformed order")
    assert [json.loads(e.value_str() or "")["order"]["id"] for e in run.emitted] == ["o-1", "o-7"]
    # process and process_batch agree.
    assert host().run_each(Enrich(), batch).outcomes == run.outcomes


def test_a_service_the_pipeline_does_not_allow_is_refused_before_any_request() -> None:
    asked = []

    def service(request: http.Request) -> http.Response:
        asked.append(request.url)
        return http.Response(200, "{}")

    harness = Harness().declared_by(PROJECT).allow_http(CUSTOMERS_URL).http_service(service)
    harness.setting("customers_url", "http://127.0.0.1:9999")
    run = harness.run(harness.processor(Enrich), TestBatch("orders", 0).value_only(order("o-1", "c-7")))
    assert run.outcomes == [
        Outcome.reject(
            "HTTP request refused: HttpRequestDenied: http://127.0.0.1:9999 is not in the pipeline's "
            "[pipeline.http] allow"
        )
    ]
    assert asked == []


def test_without_the_http_capability_a_lookup_is_a_capability_error() -> None:
    harness = Harness().capabilities("output").http_service(customers)
    batch = TestBatch("orders", 0).value_only(order("o-1", "c-7"))
    # A bug in the project, not in the record: it aborts the batch.
    with pytest.raises(CapabilityError, match="declare the `http` capability"):
        harness.run(Enrich(), batch)
    with pytest.raises(CapabilityError, match="declare the `http` capability"):
        harness.run_each(Enrich(), batch)


def test_a_bad_customers_url_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="is not an http"):
        Harness().setting("customers_url", "ftp://x").processor(Enrich)
