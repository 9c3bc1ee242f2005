//! One admin request: the read-only endpoints answer from memory; a deploy request
//! is checked for its token from the head alone, then its body is read within the
//! limits and handed to [`DeployApi`] on a blocking thread.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use super::auth::Authorization;
use super::limits::{BODY_TIMEOUT, MAX_REQUESTS, MAX_UPLOADS, UPLOAD_QUEUE_TIMEOUT};
use super::traffic::{Refusal, Traffic};
use super::{AdminState, Reply, observe};
use crate::deploy::MAX_COMPONENT_BYTES;
use crate::deploy::http::DeployApi;
use crate::runtime::Runtime;

/// What every request of one server shares.
pub(crate) struct Served {
    /// The pipelines and the token.
    pub state: Arc<AdminState>,
    /// The deploy endpoints.
    pub deploy: Arc<DeployApi>,
    /// Where deploys run (`spawn_blocking`).
    pub runtime: Runtime,
    /// Connections and refusals.
    pub traffic: Traffic,
    /// Turns for requests being answered at once.
    requests: Arc<Semaphore>,
    /// Turns for authorized deploy requests (body read and handled).
    uploads: Arc<Semaphore>,
}

impl Served {
    /// Shared state for a server over `state`.
    pub(crate) fn new(state: Arc<AdminState>, runtime: Runtime) -> Self {
        let deploy = Arc::new(DeployApi::new(
            state.sandbox.clone(),
            state.pipelines.iter().map(|p| (p.config.clone(), p.slot.clone())),
        ));
        Self {
            state,
            deploy,
            runtime,
            traffic: Traffic::default(),
            requests: Arc::new(Semaphore::new(MAX_REQUESTS)),
            uploads: Arc::new(Semaphore::new(MAX_UPLOADS)),
        }
    }
}

/// The response body: always complete in memory, so it goes out with a
/// `Content-Length`, never chunked.
pub(crate) type Body = Full<Bytes>;

/// Answers one request.
pub(crate) async fn handle(served: &Served, request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let Ok(_turn) = served.requests.clone().try_acquire_owned() else {
        served.traffic.refused(Refusal::Busy);
        return Ok(busy("the admin server is answering too many requests; try again\n"));
    };
    let (head, body) = request.into_parts();
    let path = head.uri.path();
    if let Some(reply) = observe::route(&served.state, &served.traffic, &head.method, path) {
        return Ok(unless_read(reply, &body));
    }
    if DeployApi::serves(path) {
        return Ok(deploy(served, head, body).await);
    }
    let reply = Reply::text(404, format!("no route for {} {path}\n", head.method));
    Ok(unless_read(reply, &body))
}

/// A deploy request: the token first, then the body, then the work on a blocking
/// thread (it compiles and self-tests, or waits for a deploy in progress).
async fn deploy(served: &Served, head: Parts, body: Incoming) -> Response<Body> {
    let authorization = Authorization::check(served.state.token.as_deref(), &head.headers);
    if let Some(refusal) = authorization.refusal() {
        served.traffic.refused(Refusal::Unauthorized);
        let mut response = closing(refusal);
        if authorization == Authorization::Denied {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        return response;
    }
    if body.size_hint().lower() > MAX_COMPONENT_BYTES as u64 {
        served.traffic.refused(Refusal::TooLarge);
        return closing(too_large());
    }
    let Ok(Ok(upload)) = tokio::time::timeout(UPLOAD_QUEUE_TIMEOUT, served.uploads.clone().acquire_owned()).await
    else {
        served.traffic.refused(Refusal::Busy);
        return busy("other deploys are in progress; try again\n");
    };
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, read_capped(body, MAX_COMPONENT_BYTES)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(BodyError::TooLarge)) => {
            served.traffic.refused(Refusal::TooLarge);
            return closing(too_large());
        }
        Ok(Err(BodyError::Broken(error))) => {
            return closing(Reply::text(400, format!("failed to read the request body: {error}\n")));
        }
        Err(_) => {
            served.traffic.refused(Refusal::Timeout);
            let reply = Reply::text(408, format!("the request body took longer than {} s\n", BODY_TIMEOUT.as_secs()));
            return closing(reply);
        }
    };
    let request = Request::from_parts(head, bytes);
    let api = served.deploy.clone();
    // The turn goes with the work: a client that leaves does not free it early.
    let work = served.runtime.handle().spawn_blocking(move || {
        let _upload = upload;
        api.handle(&request)
    });
    match work.await {
        Ok(response) => response.map(Full::new),
        Err(error) => {
            tracing::error!(%error, "a deploy request's handler failed");
            Reply::text(500, "the deploy failed inside the host; see its log\n").into_response()
        }
    }
}

/// Why a body was not read whole.
#[derive(Debug)]
enum BodyError {
    /// More than the limit.
    TooLarge,
    /// The connection failed or the framing was wrong.
    Broken(hyper::Error),
}

/// Reads `body`, refusing it as soon as it grows past `limit`.
async fn read_capped(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let announced = body.size_hint().exact().map_or(0, |n| n as usize);
    let mut bytes = Vec::with_capacity(announced.min(limit));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Broken)?.into_data() else { continue };
        if bytes.len() + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Bytes::from(bytes))
}

fn too_large() -> Reply {
    Reply::text(413, format!("request body larger than {MAX_COMPONENT_BYTES} bytes\n"))
}

/// A 503 that tells the client when to come back; the connection closes.
fn busy(text: &str) -> Response<Body> {
    let mut response = closing(Reply::text(503, text));
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// `reply`, closing the connection: whatever the client still sends is not read.
fn closing(reply: Reply) -> Response<Body> {
    let mut response = reply.into_response();
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// `reply` to a request whose body was not read: the connection stays open only
/// when there was no body to skip.
fn unless_read(reply: Reply, body: &Incoming) -> Response<Body> {
    if body.is_end_stream() { reply.into_response() } else { closing(reply) }
}
