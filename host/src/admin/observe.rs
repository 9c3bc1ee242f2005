//! Read-only endpoints: health, readiness, metrics, the status page.

use tiny_http::Method;

use super::{AdminState, Reply};

/// Serves the read-only endpoints.
pub fn route(_state: &AdminState, method: &Method, path: &str) -> Option<Reply> {
    match (method, path) {
        (Method::Get, "/healthz") => Some(Reply::text(200, "ok\n")),
        _ => None,
    }
}
