"""Outgoing HTTP: a small blocking client on the host's ``wasi:http``.

Requests go only where the pipeline's ``[pipeline.http]`` section allows and within
its budgets; everything else fails with an :class:`HttpError` before any
connection is made. Redirects are not followed: a 3xx is a :class:`Response` like
any other. Left uncaught in ``process``, an ``HttpError`` rejects the record; inside
``with transient():`` (or raised as :class:`~ferry_sdk.Retry`) it retries the
record with the pipeline's backoff::

    from ferry_sdk import Context, Processor, Record, Retry, http, transient

    class Enrich(Processor):
        def process(self, record: Record, ctx: Context) -> None:
            with transient():
                rate = http.get("http://127.0.0.1:8089/rate/EUR")
            if rate.status != 200:
                raise Retry(f"rates answered {rate.status}")
            ctx.emit_value("enriched", record.value + b" " + rate.body)

:func:`send_all` sends several requests at once (the batch's records, say) and
waits for all of them: the pipeline's ``concurrent_requests`` bounds how many are
in flight, the rest wait their turn.

A project uses this module only if it declares the ``http`` capability in its
``pyproject.toml``: only then is the component built with the
``wasi:http/outgoing-handler`` import (which the host links only for a pipeline
with a ``[pipeline.http]`` grant). Natively, under pytest, there is no host to send
through: a :class:`~ferry_sdk.testing.Harness` answers requests with the service a
test gives it (``http_service``), under the rules it allows (``allow_http``);
without one, every request fails.
"""

from __future__ import annotations

import contextlib
import enum
import json
from typing import Any, Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .context import Data, to_bytes

__all__ = [
    "METHODS",
    "HttpError",
    "HttpErrorKind",
    "Request",
    "Response",
    "get",
    "post",
    "send",
    "send_all",
]

#: The methods a request may use.
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD")

Headers = List[Tuple[str, bytes]]


def _headers(headers: Union[None, Iterable[Tuple[str, Data]], "dict[str, Data]"]) -> Headers:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(name), to_bytes(value)) for name, value in items]


def _first(headers: Headers, name: str) -> Optional[bytes]:
    lower = name.lower()
    return next((value for n, value in headers if n.lower() == lower), None)


class Request:
    """A request to send: ``method`` (one of :data:`METHODS`) to ``url``
    (``http://host[:port]/path?query``), with headers (a dict or ``(name,
    value)`` pairs) and a body (bytes, or text sent as UTF-8)."""

    __slots__ = ("method", "url", "headers", "body")

    def __init__(
        self,
        method: str,
        url: str,
        headers: Union[None, Iterable[Tuple[str, Data]], "dict[str, Data]"] = None,
        body: Data = b"",
    ) -> None:
        #: The method, upper-case.
        self.method = method.upper()
        #: The URL.
        self.url = url
        #: Every header, in the order given, values as bytes.
        self.headers: Headers = _headers(headers)
        #: The body.
        self.body = to_bytes(body)

    @classmethod
    def get(cls, url: str, headers: Union[None, Iterable[Tuple[str, Data]], "dict[str, Data]"] = None) -> "Request":
        """A GET of ``url``."""
        return cls("GET", url, headers)

    @classmethod
    def post(
        cls, url: str, body: Data, headers: Union[None, Iterable[Tuple[str, Data]], "dict[str, Data]"] = None
    ) -> "Request":
        """A POST of ``body`` to ``url``."""
        return cls("POST", url, headers, body)

    def header(self, name: str) -> Optional[bytes]:
        """The first value of header ``name`` (case-insensitive)."""
        return _first(self.headers, name)

    @property
    def path(self) -> Optional[str]:
        """The path and query of the URL (``/`` when it has none); ``None`` for a
        URL that is not ``scheme://host[:port]/path``."""
        try:
            return split_url(self.url)[2]
        except HttpError:
            return None

    def send(self) -> "Response":
        """Sends it and reads the whole response (raises :class:`HttpError`)."""
        return send(self)

    def __repr__(self) -> str:
        return f"Request({self.method} {self.url}, {len(self.body)} bytes)"


class Response:
    """A response, read whole: ``status``, ``headers`` (``(name, value)`` pairs in
    the order received) and ``body``. A test's stand-in service answers with these."""

    __slots__ = ("status", "headers", "body")

    def __init__(
        self,
        status: int,
        body: Data = b"",
        headers: Union[None, Iterable[Tuple[str, Data]], "dict[str, Data]"] = None,
    ) -> None:
        #: The status code.
        self.status = status
        #: Every header, values as bytes.
        self.headers: Headers = _headers(headers)
        #: The body.
        self.body = to_bytes(body)

    def header(self, name: str) -> Optional[bytes]:
        """The first value of header ``name`` (case-insensitive)."""
        return _first(self.headers, name)

    def text(self) -> Optional[str]:
        """The body as text, if it is UTF-8."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def json(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not)."""
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {len(self.body)} bytes)"


class HttpErrorKind(enum.Enum):
    """The kind of an :class:`HttpError`."""

    #: The pipeline does not allow this URL, or the address its host resolves to.
    REFUSED = "refused"
    #: Over one of the pipeline's budgets (requests, bytes) for this batch.
    BUDGET = "over budget"
    #: No answer within the request's time limit (or the batch's).
    TIMEOUT = "timed out"
    #: The URL or request is malformed.
    INVALID = "invalid"
    #: Anything else: name resolution, the connection, the protocol.
    FAILED = "failed"


class HttpError(Exception):
    """Why a request got no response. Uncaught in ``process`` it rejects the
    record; :attr:`transient` says whether trying again later may help (a timeout,
    a failed connection, a budget that the next batch has again), for a processor
    that decides per kind. The message is the Rust SDK's."""

    def __init__(self, kind: HttpErrorKind, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"HTTP request {kind.value}: {detail}")

    @property
    def transient(self) -> bool:
        """Whether the same request may succeed later (timeout, failed, budget)."""
        return self.kind in (HttpErrorKind.TIMEOUT, HttpErrorKind.FAILED, HttpErrorKind.BUDGET)


#: Sends a list of requests at once and answers each, in order: set by the
#: component's glue when the project declares ``http``, and by a test harness
#: while it runs a batch.
Transport = Callable[[Sequence[Request]], List[Union[Response, HttpError]]]


def _no_host(requests: Sequence[Request]) -> List[Union[Response, HttpError]]:
    raise HttpError(
        HttpErrorKind.FAILED,
        "requests are sent by the ferry host; natively, only a testing.Harness with an http_service answers them",
    )


_transport: Transport = _no_host


def install(transport: Transport) -> None:
    """Makes ``transport`` send every request from now on (the component's glue)."""
    global _transport
    _transport = transport


@contextlib.contextmanager
def installed(transport: Transport) -> Iterator[None]:
    """Makes ``transport`` send the requests made inside the block (a harness)."""
    global _transport
    before, _transport = _transport, transport
    try:
        yield
    finally:
        _transport = before


def send_all(requests: Iterable[Request]) -> List[Union[Response, HttpError]]:
    """Sends every request at once and waits for all of them: one answer per
    request, in the same order, each a :class:`Response` or the
    :class:`HttpError` that request met (returned, not raised)."""
    requests = list(requests)
    if not requests:
        return []
    for request in requests:
        if not isinstance(request, Request):
            raise TypeError(f"send_all takes Request objects, not {type(request).__name__}")
    return _transport(requests)


def send(request: Request) -> Response:
    """Sends ``request`` and reads the whole response (raises :class:`HttpError`)."""
    (answer,) = send_all([request])
    if isinstance(answer, HttpError):
        raise answer
    return answer


def get(url: str, headers: Union[None, Iterable[Tuple[str, Data]], "dict[str, Data]"] = None) -> Response:
    """GETs ``url`` (raises :class:`HttpError`)."""
    return send(Request.get(url, headers))


def post(
    url: str, body: Data, headers: Union[None, Iterable[Tuple[str, Data]], "dict[str, Data]"] = None
) -> Response:
    """POSTs ``body`` to ``url`` (raises :class:`HttpError`)."""
    return send(Request.post(url, body, headers))


def split_url(url: str) -> Tuple[str, str, str]:
    """``scheme``, ``authority`` and ``path?query`` of ``url`` (raises
    :class:`HttpError` of kind ``INVALID``)."""
    scheme, sep, rest = url.partition("://")
    ends = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    at = min(ends) if ends else len(rest)
    authority, path = rest[:at], rest[at:]
    if not sep or not scheme or not authority or "@" in authority:
        raise HttpError(HttpErrorKind.INVALID, f"`{url}` is not scheme://host[:port]/path")
    return scheme, authority, path or "/"
