"""ferry_sdk.http natively: the harness's rules and stand-in service, the errors a
processor sees, and the world a project that declares ``http`` is built for."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import List

import pytest

from ferry_sdk import PROCESSED, CapabilityError, Context, Outcome, Processor, Record, transient
from ferry_sdk import http
from ferry_sdk.testing import Harness, TestBatch


class Fetch(Processor):
    """GETs the URL in each record's value; emits the status and body."""

    def process(self, record: Record, ctx: Context) -> None:
        with transient():
            answer = http.get(record.value.decode())
        ctx.emit_value("out", f"{answer.status} {answer.text()}")


def echo(request: http.Request) -> http.Response:
    return http.Response(200, f"{request.method} {request.path}", {"x-seen": request.url})


def test_requests_pass_the_rules_before_the_service() -> None:
    harness = Harness().allow_http("http://127.0.0.1:8089").allow_http("https://*.example.com").http_service(echo)
    batch = (
        TestBatch("in", 0)
        .value_only("http://127.0.0.1:8089/a?b")
        .value_only("http://127.0.0.1:8090/")
        .value_only("https://api.example.com/x")
        .value_only("https://example.com/x")
        .value_only("https://a.b.example.com/x")
        .value_only("http://api.example.com/x")
        .value_only("HTTP://127.0.0.1:8089")
        .value_only("not a url")
    )
    run = harness.run(Fetch(), batch)
    refused = lambda endpoint: Outcome.retry(  # noqa: E731
        f"HTTP request refused: HttpRequestDenied: {endpoint} is not in the pipeline's [pipeline.http] allow"
    )
    assert run.outcomes == [
        PROCESSED,
        refused("http://127.0.0.1:8090"),
        PROCESSED,
        refused("https://example.com:443"),
        refused("https://a.b.example.com:443"),
        refused("http://api.example.com:80"),
        PROCESSED,
        Outcome.retry("HTTP request invalid: `not a url` is not http(s)://host[:port]/path"),
    ]
    assert [e.value_str() for e in run.emitted] == ["200 GET /a?b", "200 GET /x", "200 GET /"]


def test_without_rules_every_url_reaches_the_service_and_without_a_service_none_answers() -> None:
    run = Harness().http_service(echo).run(Fetch(), TestBatch().value_only("http://anywhere:1/"))
    assert run.all_processed()
    run = Harness().run(Fetch(), TestBatch().value_only("http://anywhere:1/"))
    assert run.outcomes == [
        Outcome.retry("HTTP request failed: no service answers in this test (give the harness one with http_service)")
    ]


def test_outside_a_harness_there_is_no_host_to_send_through() -> None:
    with pytest.raises(http.HttpError, match="requests are sent by the ferry host") as raised:
        http.get("http://127.0.0.1:8089/")
    assert raised.value.kind is http.HttpErrorKind.FAILED


def test_a_processor_that_does_not_declare_http_cannot_send() -> None:
    with pytest.raises(CapabilityError, match='add "http" to `capabilities`'):
        Harness().capabilities("output").http_service(echo).run(Fetch(), TestBatch().value_only("http://a:1/"))
    assert Harness().capabilities("output", "http").http_service(echo).run(Fetch(), TestBatch().value_only("http://a:1/")).all_processed()


def test_send_all_answers_each_request_in_order_errors_as_values() -> None:
    def service(request: http.Request) -> http.Response:
        if request.path == "/slow":
            raise http.HttpError(http.HttpErrorKind.TIMEOUT, "HttpResponseTimeout")
        return http.Response(201, request.body, request.headers)

    answers: List[object] = []

    class Batchy(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            answers.extend(
                http.send_all(
                    [
                        http.Request.post("http://h/ok", b"one", {"content-type": "text/plain"}),
                        http.Request.get("http://h/slow"),
                        http.Request("DELETE", "http://h/ok", [("a", "b")], "two"),
                        http.Request("PATCH", "http://h/ok"),
                    ]
                )
            )

    assert Harness().http_service(service).run(Batchy(), TestBatch().value_only("x")).all_processed()
    first, slow, third, patch = answers
    assert isinstance(first, http.Response) and (first.status, first.body) == (201, b"one")
    assert first.header("Content-Type") == b"text/plain"
    assert isinstance(slow, http.HttpError) and slow.kind is http.HttpErrorKind.TIMEOUT and slow.transient
    assert isinstance(third, http.Response) and third.body == b"two" and third.headers == [("a", b"b")]
    assert isinstance(patch, http.HttpError) and patch.kind is http.HttpErrorKind.INVALID and not patch.transient
    assert http.send_all([]) == []


def test_errors_read_as_the_rust_sdks_and_say_whether_to_retry() -> None:
    assert str(http.HttpError(http.HttpErrorKind.REFUSED, "not granted")) == "HTTP request refused: not granted"
    assert str(http.HttpError(http.HttpErrorKind.BUDGET, "x")) == "HTTP request over budget: x"
    assert [k for k in http.HttpErrorKind if http.HttpError(k, "").transient] == [
        http.HttpErrorKind.BUDGET,
        http.HttpErrorKind.TIMEOUT,
        http.HttpErrorKind.FAILED,
    ]


def test_responses_read_as_text_and_json() -> None:
    response = http.Response(200, '{"a": 1}', [("Content-Type", "application/json")])
    assert response.json() == {"a": 1} and response.text() == '{"a": 1}'
    assert response.header("content-type") == b"application/json" and response.header("x") is None
    assert http.Response(200, b"\xff").text() is None


def test_urls_split_into_scheme_host_and_path() -> None:
    assert http.split_url("http://127.0.0.1:8089/rate?c=EUR") == ("http", "127.0.0.1:8089", "/rate?c=EUR")
    assert http.split_url("http://example.com") == ("http", "example.com", "/")
    assert http.split_url("http://example.com?q") == ("http", "example.com", "?q")
    for bad in ("example.com/x", "http://user@example.com/", "http:///x"):
        with pytest.raises(http.HttpError):
            http.split_url(bad)


def test_harness_rules_are_checked_when_given() -> None:
    for bad in ("ftp://x", "http://x/path", "http://x:0", "http://x:70000"):
        with pytest.raises(ValueError):
            Harness().allow_http(bad)


def _build_module():
    spec = importlib.util.spec_from_file_location("ferry_build", Path(__file__).resolve().parent.parent / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_world_imports_wasi_http_only_when_declared() -> None:
    build = _build_module()
    with_http = build.world(["http", "output"])
    assert "import wasi:http/outgoing-handler@0.2.12;" in with_http
    assert "import output;" in with_http and "import http;" not in with_http
    without = build.world(["output", "state"])
    assert "wasi:http" not in without
    packages = sorted(p.name for p in build.WASI_WIT.glob("*.wit"))
    assert packages == ["clocks.wit", "http.wit", "io.wit"]
