//! The admin HTTP server: health, metrics, the live status page, and the deploy
//! endpoints.
//!
//! It binds loopback by default and speaks HTTP/1.1 (hyper) on ferry's one tokio
//! runtime ([`crate::runtime`]): every connection is a task, so an idle one costs a
//! few KiB and no thread.
//!
//! | endpoint | access |
//! | --- | --- |
//! | `GET /healthz`, `/readyz`, `/metrics`, `/`, `/api/status` | open (see [`observe`] for what they answer) |
//! | `/api/pipelines/{name}/...` | `Authorization: Bearer <token>`; see [`crate::deploy::http`] |
//!
//! A deploy request's token is checked from its head alone: a missing or wrong one
//! gets 401 (403 when the host has no token) at once, the body is never read, and
//! the connection is closed. Only an authorized request's body is read, at most
//! [`crate::deploy::MAX_COMPONENT_BYTES`] (413 as soon as it grows past that) and
//! within [`limits::BODY_TIMEOUT`]; its compile and self-test then run on a blocking
//! thread (`spawn_blocking`), never on the runtime's worker.
//!
//! What a client can make the host hold is bounded by [`limits`]: connections
//! ([`limits::MAX_CONNECTIONS`]; at the limit the one idle longest makes room for a
//! new one, so idle connections never lock out probes and metrics), requests being
//! answered, deploys in progress, header and body sizes, and timeouts for the header
//! block (which is also the keep-alive idle timeout), the body, and a connection that
//! stalls. `/metrics` counts open, evicted and refused connections and refused
//! requests.
//!
//! The token comes from `FERRY_ADMIN_TOKEN`, `admin.token_file` or `admin.token`
//! (in that order; see [`crate::config::AdminConfig`]).

use std::sync::Arc;

mod auth;
mod connection;
pub mod limits;
mod observe;
mod reply;
mod request;
mod server;
mod traffic;

pub use observe::BrokerView;
pub use server::{AdminServer, serve};

use self::reply::Reply;
use crate::config::PipelineConfig;
use crate::pipeline::Shared;
use crate::registry::ProcessorSlot;
use crate::sandbox::Sandbox;

/// What the admin server can see and change of one pipeline.
#[derive(Clone)]
pub struct PipelineView {
    /// Its configuration.
    pub config: Arc<PipelineConfig>,
    /// Its workers' stats and offsets, in worker order.
    pub workers: Vec<Arc<Shared>>,
    /// Its processor versions.
    pub slot: ProcessorSlot,
}

/// Everything the admin server serves.
pub struct AdminState {
    /// The pipelines of this host.
    pub pipelines: Vec<PipelineView>,
    /// The engine, for checking deployed components; its runtime runs the server.
    pub sandbox: Sandbox,
    /// Bearer token for mutating calls; `None` refuses them all.
    pub token: Option<String>,
    /// Log ends and committed offsets read from the brokers in the background.
    pub broker_view: BrokerView,
}
