//! Endpoints that change the host, all behind the bearer token:
//!
//! - `PUT /api/pipelines/{name}/component`: body = the component's bytes. 200 with the
//!   new version, or 422 with the reason it was refused (the running version is then
//!   untouched).
//! - `GET /api/pipelines/{name}/versions`: current and previous version, probation,
//!   recent events.
//! - `POST /api/pipelines/{name}/rollback`: back to the previous version (409 if none).
//!
//! The deploy is compiled and checked on this request's thread; the pipeline takes
//! the new version up at its next batch boundary.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tiny_http::Method;

use super::{DeployError, MAX_COMPONENT_BYTES, deploy};
use crate::admin::{AdminState, Authorization, PipelineView, Reply};
use crate::registry::{Event, Origin, Version};

/// Serves the deploy endpoints.
pub fn route(state: &AdminState, method: &Method, path: &str, body: &[u8], auth: Authorization) -> Option<Reply> {
    let rest = path.strip_prefix("/api/pipelines/")?;
    if let Some(refusal) = auth.refusal() {
        return Some(refusal);
    }
    let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(view) = state.pipelines.iter().find(|p| p.config.name == name) else {
        return Some(Reply::text(404, format!("no pipeline named `{name}`\n")));
    };
    Some(match (method, action) {
        (Method::Put, "component") => put_component(state, view, body),
        (Method::Get, "versions") => Reply::json(200, &versions(view)),
        (Method::Post, "rollback") => rollback(view),
        (_, "component") => Reply::text(405, "use PUT with the component as the body\n"),
        (_, "versions") => Reply::text(405, "use GET\n"),
        (_, "rollback") => Reply::text(405, "use POST\n"),
        _ => Reply::text(404, format!("no route for {method} {path}\n")),
    })
}

fn put_component(state: &AdminState, view: &PipelineView, body: &[u8]) -> Reply {
    if body.is_empty() {
        return Reply::text(400, "the request body must be the component (.wasm)\n");
    }
    match deploy(&state.sandbox, &view.config, &view.slot, body, MAX_COMPONENT_BYTES, Origin::AdminApi) {
        Ok(deployed) => Reply::json(
            200,
            &json!({
                "pipeline": view.config.name,
                "digest": deployed.digest,
                "switched": deployed.switched,
                "replaced": deployed.replaced,
                "capabilities": deployed.capabilities.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "artifact": deployed.artifact.map(|a| a.as_str()),
                "prepare_ms": deployed.prepared_in.as_secs_f64() * 1e3,
                "note": if deployed.switched {
                    "deployed; the pipeline switches at its next batch boundary"
                } else {
                    "this version is already running; nothing changed"
                },
            }),
        ),
        Err(error) => {
            let status = if matches!(error, DeployError::TooLarge { .. }) { 413 } else { 422 };
            Reply::json(status, &json!({ "pipeline": view.config.name, "error": error.to_string() }))
        }
    }
}

fn versions(view: &PipelineView) -> Value {
    let versions = view.slot.versions();
    json!({
        "pipeline": view.config.name,
        "current": version_json(&versions.current),
        "previous": versions.previous.as_ref().map(version_json),
        "probation": versions.probation.map(|p| json!({
            "records": p.records,
            "failures": p.failures,
            "watch_records": p.policy.records,
            "max_failure_rate": p.policy.max_failure_rate,
        })),
        "history": versions.history.iter().map(event_json).collect::<Vec<_>>(),
    })
}

fn rollback(view: &PipelineView) -> Reply {
    match view.slot.rollback(Origin::Rollback) {
        Some((from, to)) => {
            tracing::info!(pipeline = %view.config.name, %from, %to, "rolled back by an operator");
            Reply::json(
                200,
                &json!({ "pipeline": view.config.name, "from": from, "to": to, "versions": versions(view) }),
            )
        }
        None => Reply::text(409, "there is no previous version to roll back to\n"),
    }
}

fn version_json(version: &Version) -> Value {
    let component = &version.component;
    json!({
        "digest": component.digest(),
        "size": component.size(),
        "capabilities": component.capabilities().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "deployed_at_unix_ms": unix_ms(version.deployed_at),
        "origin": version.origin.to_string(),
        "artifact": component.artifact().as_str(),
    })
}

fn event_json(event: &Event) -> Value {
    json!({ "at_unix_ms": unix_ms(event.at), "action": event.action, "digest": event.digest, "detail": event.detail })
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
