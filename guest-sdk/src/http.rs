//! Outgoing HTTP: a small blocking client on the host's `wasi:http`.
//!
//! Requests go only where the pipeline's `[pipeline.http]` section allows and
//! within its budgets; everything else fails with an [`HttpError`] before any
//! connection is made. Redirects are not followed: a 3xx is a [`Response`] like
//! any other. An `HttpError` converts into the processor's [`Error`](crate::Error)
//! with `?` (the record is rejected), or with
//! [`.transient()`](crate::ResultExt::transient) (the record is retried with the
//! pipeline's backoff).
//!
//! ```no_run
//! use ferry_sdk::{Context, Error, Processor, Record, ResultExt, http};
//!
//! #[derive(Default)]
//! struct Enrich;
//!
//! impl Processor for Enrich {
//!     fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
//!         let rate = http::get("http://127.0.0.1:8089/rate/EUR").transient()?;
//!         if rate.status() != 200 {
//!             return Err(Error::retry(format!("rates answered {}", rate.status())));
//!         }
//!         ctx.emit_value("enriched", [record.value().unwrap_or_default(), b" ", rate.body()].concat())?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! [`send_all`] sends several requests at once (the batch's records, say) and
//! waits for all of them: the pipeline's `concurrent_requests` bounds how many are
//! in flight, the rest wait their turn.
//!
//! A component that never calls this module does not import `wasi:http`. Natively
//! (under `cargo test`) there is no host to send through: a
//! [`Harness`](crate::testing::Harness) answers requests with the service a test
//! gives it ([`Harness::http_service`](crate::testing::Harness::http_service)),
//! under the pipeline's grants; without one, every request fails.

use std::fmt;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
}

impl Method {
    /// Its name, as on the wire (`GET`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Request {
    /// A request with `method` to `url` (`http://host[:port]/path?query`).
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request { method, url: url.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// A GET of `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Request::new(Method::Get, url)
    }

    /// A POST of `body` to `url`.
    pub fn post(url: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Request::new(Method::Post, url).body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Every header, in the order added.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// The path and query of the URL (`/` when it has none); `None` for a URL that
    /// is not `scheme://host[:port]/path`.
    pub fn path(&self) -> Option<&str> {
        split_url(&self.url).ok().map(|(_, _, path)| path)
    }

    /// Sends it and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        send_all(vec![self]).pop().expect("one answer per request")
    }
}

/// A response, read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `status` and `body`, as a test's stand-in service answers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response { status, headers: Vec::new(), body: body.into() }
    }

    /// Adds a header (for a test's stand-in service).
    pub fn with_header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Every header, in the order received.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    kind: HttpErrorKind,
    detail: String,
}

/// The kind of an [`HttpError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpErrorKind {
    /// The pipeline does not allow this URL, or the address its host resolves to,
    /// or the https server's certificate does not verify for its host.
    Refused,
    /// Over one of the pipeline's budgets (requests, bytes) for this batch.
    Budget,
    /// No answer within the request's time limit (or the batch's).
    Timeout,
    /// The URL or request is malformed.
    Invalid,
    /// Anything else: name resolution, the connection, the protocol.
    Failed,
}

impl HttpError {
    /// An error of `kind`; `detail` says what happened. (A test's stand-in service
    /// answers with these to play a failing server.)
    pub fn new(kind: HttpErrorKind, detail: impl Into<String>) -> Self {
        HttpError { kind, detail: detail.into() }
    }

    /// Its kind.
    pub fn kind(&self) -> HttpErrorKind {
        self.kind
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            HttpErrorKind::Refused => "refused",
            HttpErrorKind::Budget => "over budget",
            HttpErrorKind::Timeout => "timed out",
            HttpErrorKind::Invalid => "invalid",
            HttpErrorKind::Failed => "failed",
        };
        write!(f, "HTTP request {kind}: {}", self.detail)
    }
}

impl std::error::Error for HttpError {}

/// GETs `url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// POSTs `body` to `url`.
pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Result<Response, HttpError> {
    Request::post(url, body).send()
}

/// Sends every request at once and waits for all of them: one answer per request,
/// in the same order.
pub fn send_all(requests: Vec<Request>) -> Vec<Result<Response, HttpError>> {
    imp::send_all(requests)
}

/// `scheme`, `authority` and `path?query` of a URL.
fn split_url(url: &str) -> Result<(&str, &str, &str), HttpError> {
    let invalid = || HttpError::new(HttpErrorKind::Invalid, format!("`{url}` is not scheme://host[:port]/path"));
    let (scheme, rest) = url.split_once("://").ok_or_else(invalid)?;
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    if authority.is_empty() || authority.contains('@') {
        return Err(invalid());
    }
    Ok((scheme, authority, if path.is_empty() { "/" } else { path }))
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{
        ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method as WasiMethod, OutgoingBody,
        OutgoingRequest, Scheme,
    };
    use wasip2::io::streams::StreamError;

    use super::{HttpError, HttpErrorKind, Method, Request, Response, split_url};

    pub(super) fn send_all(requests: Vec<Request>) -> Vec<Result<Response, HttpError>> {
        let started: Vec<Result<FutureIncomingResponse, HttpError>> = requests.iter().map(start).collect();
        started.into_iter().map(|future| future.and_then(finish)).collect()
    }

    fn start(request: &Request) -> Result<FutureIncomingResponse, HttpError> {
        let (scheme, authority, path) = split_url(&request.url)?;
        let invalid = |what: &str| HttpError::new(HttpErrorKind::Invalid, what.to_owned());
        let headers = Fields::from_list(&request.headers)
            .map_err(|e| HttpError::new(HttpErrorKind::Invalid, format!("header: {e:?}")))?;
        let outgoing = OutgoingRequest::new(headers);
        let method = match request.method {
            Method::Get => WasiMethod::Get,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Delete => WasiMethod::Delete,
            Method::Head => WasiMethod::Head,
        };
        outgoing.set_method(&method).map_err(|()| invalid("method"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_owned()),
        };
        outgoing.set_scheme(Some(&scheme)).map_err(|()| invalid("scheme"))?;
        outgoing.set_authority(Some(authority)).map_err(|()| invalid("host"))?;
        let path = if path.starts_with('?') { format!("/{path}") } else { path.to_owned() };
        outgoing.set_path_with_query(Some(&path)).map_err(|()| invalid("path"))?;
        let body = outgoing.body().map_err(|()| invalid("body"))?;
        let future = outgoing_handler::handle(outgoing, None).map_err(error)?;
        {
            let stream = body.write().map_err(|()| invalid("body"))?;
            for chunk in request.body.chunks(4096) {
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        OutgoingBody::finish(body, None).map_err(error)?;
        Ok(future)
    }

    fn finish(future: FutureIncomingResponse) -> Result<Response, HttpError> {
        let response: IncomingResponse = loop {
            match future.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(error(code)),
                Some(Err(())) => return Err(HttpError::new(HttpErrorKind::Failed, "response taken twice")),
                None => future.subscribe().block(),
            }
        };
        let status = response.status();
        let headers = response.headers().entries();
        let body = response.consume().map_err(|()| HttpError::new(HttpErrorKind::Failed, "no body"))?;
        let mut bytes = Vec::new();
        {
            let stream = body.stream().map_err(|()| HttpError::new(HttpErrorKind::Failed, "no body"))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => bytes.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(match wasip2::http::types::http_error_code(&e) {
                            Some(code) => error(code),
                            None => body_error(e.to_debug_string()),
                        });
                    }
                }
            }
        }
        drop(IncomingBody::finish(body));
        Ok(Response { status, headers, body: bytes })
    }

    /// A body's error, which the host reports as text only.
    fn body_error(text: String) -> HttpError {
        let lower = text.to_ascii_lowercase();
        let kind = if lower.contains("timeout") || lower.contains("timed out") {
            HttpErrorKind::Timeout
        } else if lower.contains("exceeds limit") || lower.contains("bodysize") || lower.contains("limit reached") {
            HttpErrorKind::Budget
        } else {
            HttpErrorKind::Failed
        };
        HttpError::new(kind, text)
    }

    fn error(code: ErrorCode) -> HttpError {
        let kind = match &code {
            ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited | ErrorCode::TlsCertificateError => {
                HttpErrorKind::Refused
            }
            ErrorCode::ConnectionLimitReached
            | ErrorCode::HttpRequestBodySize(_)
            | ErrorCode::HttpResponseBodySize(_)
            | ErrorCode::HttpRequestHeaderSectionSize(_)
            | ErrorCode::HttpResponseHeaderSectionSize(_) => HttpErrorKind::Budget,
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout
            | ErrorCode::DnsTimeout => HttpErrorKind::Timeout,
            ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid | ErrorCode::HttpProtocolError => {
                HttpErrorKind::Invalid
            }
            _ => HttpErrorKind::Failed,
        };
        HttpError::new(kind, format!("{code:?}"))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::{HttpError, Request, Response, split_url};

    pub(super) fn send_all(requests: Vec<Request>) -> Vec<Result<Response, HttpError>> {
        requests
            .iter()
            .map(|request| {
                let (scheme, authority, _) = split_url(&request.url)?;
                crate::http_stand_in::send(request, scheme, authority)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        assert_eq!(split_url("http://127.0.0.1:8089/rate?c=EUR").unwrap(), ("http", "127.0.0.1:8089", "/rate?c=EUR"));
        assert_eq!(split_url("http://example.com").unwrap(), ("http", "example.com", "/"));
        assert_eq!(split_url("http://example.com?q").unwrap(), ("http", "example.com", "?q"));
        assert!(split_url("example.com/x").is_err());
        assert!(split_url("http://user@example.com/").is_err());
    }

    #[test]
    fn errors_become_the_processors_errors() {
        use crate::{Error, ResultExt};
        let refused: Result<(), HttpError> = Err(HttpError::new(HttpErrorKind::Refused, "not granted"));
        let retried: Result<(), Error> = refused.clone().transient();
        assert!(retried.unwrap_err().is_transient());
        let rejected: Result<(), Error> = refused.map_err(Error::from);
        assert_eq!(rejected.unwrap_err().reason(), "HTTP request refused: not granted");
    }
}
