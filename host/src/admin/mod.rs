//! The admin HTTP server: health, metrics, the live status page, and deploys.
//!
//! It binds loopback by default. Read-only endpoints (`/healthz`, `/readyz`,
//! `/metrics`, `/`, `/api/status`) are open; everything that changes the host needs
//! `Authorization: Bearer <token>`, and is refused outright when no token is set.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

mod observe;

pub use observe::BrokerView;

use anyhow::Context as _;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::PipelineConfig;
use crate::deploy::MAX_COMPONENT_BYTES as MAX_BODY_BYTES;
use crate::pipeline::Shared;
use crate::registry::ProcessorSlot;
use crate::sandbox::Sandbox;

/// What the admin server can see and change of one pipeline.
#[derive(Clone)]
pub struct PipelineView {
    /// Its configuration.
    pub config: Arc<PipelineConfig>,
    /// Its stats and offsets.
    pub shared: Arc<Shared>,
    /// Its processor versions.
    pub slot: ProcessorSlot,
}

/// Everything the admin server serves.
pub struct AdminState {
    /// The pipelines of this host.
    pub pipelines: Vec<PipelineView>,
    /// The engine, for checking deployed components.
    pub sandbox: Sandbox,
    /// Bearer token for mutating calls; `None` refuses them all.
    pub token: Option<String>,
    /// Log ends and committed offsets read from the brokers in the background.
    pub broker_view: BrokerView,
}

/// A running admin server.
pub struct AdminServer {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    server: Arc<Server>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts serving `state` on `listen`.
pub fn serve(listen: &str, state: Arc<AdminState>) -> anyhow::Result<AdminServer> {
    let server = Arc::new(
        Server::http(listen)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("failed to bind the admin server to {listen}"))?,
    );
    let addr = server.server_addr().to_ip().context("admin server is not on an IP socket")?;
    let accept = server.clone();
    let thread = std::thread::Builder::new()
        .name("ferry-admin".into())
        .spawn(move || {
            for request in accept.incoming_requests() {
                let state = state.clone();
                // One thread per request: a slow upload does not block health checks.
                let _ =
                    std::thread::Builder::new().name("ferry-admin-req".into()).spawn(move || handle(&state, request));
            }
        })
        .context("failed to spawn the admin thread")?;
    tracing::info!(%addr, "admin server listening");
    Ok(AdminServer { addr, server, thread: Some(thread) })
}

/// A response: status, content type, body.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A plain-text reply.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: body.into().into_bytes() }
    }

    /// A JSON reply.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self { status, content_type: "application/json", body: value.to_string().into_bytes() }
    }
}

fn handle(state: &AdminState, mut request: Request) {
    let method = request.method().clone();
    let url = request.url().to_owned();
    let path = url.split('?').next().unwrap_or_default().to_owned();
    let authorized = is_authorized(state, &request);
    let mut body = Vec::new();
    let too_large = request.body_length().is_some_and(|n| n > MAX_BODY_BYTES)
        || request.as_reader().take(MAX_BODY_BYTES as u64 + 1).read_to_end(&mut body).is_err()
        || body.len() > MAX_BODY_BYTES;
    let reply = if too_large {
        Reply::text(413, format!("request body larger than {MAX_BODY_BYTES} bytes"))
    } else {
        route(state, &method, &path, &body, authorized)
    };
    let header = Header::from_bytes("Content-Type", reply.content_type).expect("valid header");
    let response = Response::from_data(reply.body).with_status_code(reply.status).with_header(header);
    let _ = request.respond(response);
}

/// Whether the request carries the configured bearer token.
fn is_authorized(state: &AdminState, request: &Request) -> Authorization {
    let Some(token) = &state.token else { return Authorization::NoTokenConfigured };
    let presented = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Authorization::Granted,
        _ => Authorization::Denied,
    }
}

/// The result of checking a request's bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    /// The right token.
    Granted,
    /// Missing or wrong token.
    Denied,
    /// The host has no token: mutating calls are all refused.
    NoTokenConfigured,
}

impl Authorization {
    /// `None` when granted, else the refusal to send.
    pub fn refusal(self) -> Option<Reply> {
        match self {
            Authorization::Granted => None,
            Authorization::Denied => Some(Reply::text(401, "missing or wrong bearer token")),
            Authorization::NoTokenConfigured => Some(Reply::text(
                403,
                "no admin token configured (set admin.token or FERRY_ADMIN_TOKEN): admin calls are refused",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn route(state: &AdminState, method: &Method, path: &str, body: &[u8], auth: Authorization) -> Reply {
    observe::route(state, method, path)
        .or_else(|| crate::deploy::http::route(state, method, path, body, auth))
        .unwrap_or_else(|| Reply::text(404, format!("no route for {method} {path}\n")))
}
