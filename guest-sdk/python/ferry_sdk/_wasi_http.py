"""Sends :mod:`ferry_sdk.http` requests through the component's
``wasi:http/outgoing-handler`` import. Only a component whose project declares
``http`` imports this module (its world is the only one with these bindings).

Every request of a :func:`send_all` is handed to the host before the first answer
is awaited, so the host works on all of them at once (within the pipeline's
``concurrent_requests``); the answers are then read in order.
"""

from __future__ import annotations

from typing import List, Sequence, Union

from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as wasi

from .http import HttpError, HttpErrorKind, Request, Response, split_url

_METHODS = {
    "GET": wasi.Method_Get(),
    "POST": wasi.Method_Post(),
    "PUT": wasi.Method_Put(),
    "DELETE": wasi.Method_Delete(),
    "HEAD": wasi.Method_Head(),
}

#: The most one write to a request body's stream may carry.
_WRITE_CHUNK = 4096
#: How much one read of a response body asks for.
_READ_CHUNK = 64 << 10

_REFUSED = (
    wasi.ErrorCode_HttpRequestDenied,
    wasi.ErrorCode_DestinationIpProhibited,
    wasi.ErrorCode_TlsCertificateError,
)
_BUDGET = (
    wasi.ErrorCode_ConnectionLimitReached,
    wasi.ErrorCode_HttpRequestBodySize,
    wasi.ErrorCode_HttpResponseBodySize,
    wasi.ErrorCode_HttpRequestHeaderSectionSize,
    wasi.ErrorCode_HttpResponseHeaderSectionSize,
)
_TIMEOUT = (
    wasi.ErrorCode_ConnectionTimeout,
    wasi.ErrorCode_ConnectionReadTimeout,
    wasi.ErrorCode_ConnectionWriteTimeout,
    wasi.ErrorCode_HttpResponseTimeout,
    wasi.ErrorCode_DnsTimeout,
)
_INVALID = (
    wasi.ErrorCode_HttpRequestUriInvalid,
    wasi.ErrorCode_HttpRequestMethodInvalid,
    wasi.ErrorCode_HttpProtocolError,
)


def _error(code: object) -> HttpError:
    """The error for a ``wasi:http`` error code, classified as the Rust SDK does."""
    if isinstance(code, _REFUSED):
        kind = HttpErrorKind.REFUSED
    elif isinstance(code, _BUDGET):
        kind = HttpErrorKind.BUDGET
    elif isinstance(code, _TIMEOUT):
        kind = HttpErrorKind.TIMEOUT
    elif isinstance(code, _INVALID):
        kind = HttpErrorKind.INVALID
    else:
        kind = HttpErrorKind.FAILED
    return HttpError(kind, _describe(code))


def _describe(code: object) -> str:
    """``DestinationIpProhibited``, or ``HttpResponseBodySize(Some(10))``: the
    Rust SDK's ``{code:?}``, so both SDKs' reasons read the same."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    value = getattr(code, "value", None)
    return name if value is None else f"{name}({value!r})"


def _body_error(text: str) -> HttpError:
    """A body's error, which the host reports as text only."""
    lower = text.lower()
    if "timeout" in lower or "timed out" in lower:
        kind = HttpErrorKind.TIMEOUT
    elif "exceeds limit" in lower or "bodysize" in lower or "limit reached" in lower:
        kind = HttpErrorKind.BUDGET
    else:
        kind = HttpErrorKind.FAILED
    return HttpError(kind, text)


def _invalid(what: str) -> HttpError:
    return HttpError(HttpErrorKind.INVALID, what)


def _start(request: Request) -> wasi.FutureIncomingResponse:
    scheme, authority, path = split_url(request.url)
    method = _METHODS.get(request.method)
    if method is None:
        raise _invalid(f"method {request.method} (one of {', '.join(_METHODS)})")
    try:
        fields = wasi.Fields.from_list(request.headers)
    except Err as error:
        raise _invalid(f"header: {type(error.value).__name__.removeprefix('HeaderError_')}") from None
    outgoing = wasi.OutgoingRequest(fields)
    lower = scheme.lower()
    wasi_scheme = (
        wasi.Scheme_Http() if lower == "http" else wasi.Scheme_Https() if lower == "https" else wasi.Scheme_Other(scheme)
    )
    for setter, value, what in (
        (outgoing.set_method, method, "method"),
        (outgoing.set_scheme, wasi_scheme, "scheme"),
        (outgoing.set_authority, authority, "host"),
        (outgoing.set_path_with_query, "/" + path if path.startswith("?") else path, "path"),
    ):
        try:
            setter(value)  # type: ignore[operator]
        except Err:
            raise _invalid(what) from None
    try:
        body = outgoing.body()
    except Err:
        raise _invalid("body") from None
    try:
        future = outgoing_handler.handle(outgoing, None)
    except Err as error:
        raise _error(error.value) from None
    try:
        stream = body.write()
    except Err:
        raise _invalid("body") from None
    with stream:
        data = request.body
        for at in range(0, len(data), _WRITE_CHUNK):
            try:
                stream.blocking_write_and_flush(data[at : at + _WRITE_CHUNK])
            except Err:
                # The host refused more (over a budget): the answer says why.
                break
    try:
        wasi.OutgoingBody.finish(body, None)
    except Err as error:
        raise _error(error.value) from None
    return future


def _finish(future: wasi.FutureIncomingResponse) -> Response:
    with future:
        while True:
            ready = future.get()
            if ready is not None:
                break
            with future.subscribe() as pollable:
                pollable.block()
        if not isinstance(ready, Ok):
            raise HttpError(HttpErrorKind.FAILED, "response taken twice")
        if isinstance(ready.value, Err):
            raise _error(ready.value.value)
        incoming = ready.value.value
        # Children (headers, body, stream) go before their parent.
        with incoming:
            status = incoming.status()
            with incoming.headers() as fields:
                headers = fields.entries()
            try:
                body = incoming.consume()
            except Err:
                raise HttpError(HttpErrorKind.FAILED, "no body") from None
            with body:
                return Response(status, _read(body), headers)


def _read(body: wasi.IncomingBody) -> bytes:
    chunks: List[bytes] = []
    try:
        stream = body.stream()
    except Err:
        raise HttpError(HttpErrorKind.FAILED, "no body") from None
    with stream:
        while True:
            try:
                chunks.append(stream.blocking_read(_READ_CHUNK))
            except Err as error:
                if isinstance(error.value, streams.StreamError_Closed):
                    return b"".join(chunks)
                failure = error.value.value
                with failure:
                    code = wasi.http_error_code(failure)
                    raise (_error(code) if code is not None else _body_error(failure.to_debug_string())) from None


def send_all(requests: Sequence[Request]) -> List[Union[Response, HttpError]]:
    """Starts every request, then reads every answer, in order."""
    started: List[Union[wasi.FutureIncomingResponse, HttpError]] = []
    for request in requests:
        try:
            started.append(_start(request))
        except HttpError as error:
            started.append(error)
    answers: List[Union[Response, HttpError]] = []
    for future in started:
        if isinstance(future, HttpError):
            answers.append(future)
            continue
        try:
            answers.append(_finish(future))
        except HttpError as error:
            answers.append(error)
    return answers
