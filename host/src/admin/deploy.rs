//! Endpoints that change the host: deploy, list versions, roll back.

use tiny_http::Method;

use super::{AdminState, Authorization, Reply};

/// Serves the deploy endpoints (all behind the bearer token).
pub fn route(_state: &AdminState, _method: &Method, path: &str, _body: &[u8], auth: Authorization) -> Option<Reply> {
    if !path.starts_with("/api/pipelines/") {
        return None;
    }
    auth.refusal()
}
