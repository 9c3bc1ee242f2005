//! The deploy endpoints of the admin API, as plain `http` requests and responses:
//!
//! - `PUT /api/pipelines/{name}/component`: body = the component's bytes. 200 with the
//!   new version, or 422 with the reason it was refused (the running version is then
//!   untouched). With `?state=empty` the version starts with empty keyed state (the
//!   state of the version it replaces is tombstoned; the same version's state is
//!   emptied); `?state=keep` is the default.
//! - `GET /api/pipelines/{name}/versions`: current and previous version, probation,
//!   recent events.
//! - `POST /api/pipelines/{name}/rollback`: back to the previous version (409 if none).
//! - `PUT /api/pipelines/{name}/shadow`: body = a component to run as the shadow of
//!   the current version (compared, never published); 422 if refused.
//! - `GET /api/pipelines/{name}/shadow`: the shadow and its comparison so far (404 if
//!   there is none).
//! - `POST /api/pipelines/{name}/shadow/promote` and `.../shadow/discard`: make the
//!   shadow current (at the next batch boundary, with probation) or drop it (409 if
//!   there is none).
//!
//! This module knows nothing of sockets or tokens: the admin server checks the bearer
//! token and reads the body (at most [`MAX_COMPONENT_BYTES`]) before it hands a
//! request under [`PREFIX`] to [`DeployApi::handle`]. Handling blocks (a deploy
//! compiles and self-tests the component, a rollback waits for a deploy in progress),
//! so it must run where blocking is allowed; the pipeline takes a new version up at
//! its next batch boundary.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{DeployError, MAX_COMPONENT_BYTES, deploy_shadow, deploy_with_state};
use crate::config::PipelineConfig;
use crate::registry::{Event, Origin, ProcessorSlot, ShadowView, Version};
use crate::sandbox::Sandbox;

/// The path prefix of every deploy endpoint.
pub(crate) const PREFIX: &str = "/api/pipelines/";

/// The deploy endpoints of one host: its pipelines' slots and the engine that checks
/// what is uploaded.
#[derive(Clone)]
pub(crate) struct DeployApi {
    sandbox: Sandbox,
    targets: Vec<Target>,
}

/// A pipeline that can be deployed to.
#[derive(Clone)]
struct Target {
    config: Arc<PipelineConfig>,
    slot: ProcessorSlot,
}

impl DeployApi {
    /// The endpoints for `pipelines`, checking uploads with `sandbox`.
    pub(crate) fn new(
        sandbox: Sandbox,
        pipelines: impl IntoIterator<Item = (Arc<PipelineConfig>, ProcessorSlot)>,
    ) -> Self {
        let targets = pipelines.into_iter().map(|(config, slot)| Target { config, slot }).collect();
        Self { sandbox, targets }
    }

    /// Whether `path` is one of the deploy endpoints' (everything under [`PREFIX`]).
    pub(crate) fn serves(path: &str) -> bool {
        path.starts_with(PREFIX)
    }

    /// Answers one authorized request whose body has been read. Blocks: call it where
    /// blocking is allowed (a `spawn_blocking` task, a plain thread).
    pub(crate) fn handle(&self, request: &Request<Bytes>) -> Response<Bytes> {
        let path = request.uri().path();
        let method = request.method();
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return text(StatusCode::NOT_FOUND, format!("no route for {method} {path}\n"));
        };
        let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(target) = self.targets.iter().find(|t| t.config.name == name) else {
            return text(StatusCode::NOT_FOUND, format!("no pipeline named `{name}`\n"));
        };
        match (method, action) {
            (&Method::PUT, "component") => match state_option(request.uri().query()) {
                Ok(empty_state) => self.put_component(target, request.body(), empty_state),
                Err(message) => text(StatusCode::BAD_REQUEST, message),
            },
            (&Method::GET, "versions") => json_response(StatusCode::OK, &versions(target)),
            (&Method::POST, "rollback") => rollback(target),
            (&Method::PUT, "shadow") => self.put_shadow(target, request.body()),
            (&Method::GET, "shadow") => match target.slot.shadow_view() {
                Some(view) => json_response(StatusCode::OK, &shadow_json(&target.config.name, &view)),
                None => text(StatusCode::NOT_FOUND, "this pipeline runs no shadow version\n"),
            },
            (&Method::POST, "shadow/promote") => match target.slot.promote_shadow("an operator") {
                Some((from, to)) => {
                    tracing::info!(pipeline = %target.config.name, %from, %to, "shadow version promoted by an operator");
                    json_response(
                        StatusCode::OK,
                        &json!({ "pipeline": target.config.name, "from": from, "to": to,
                        "note": "promoted; the pipeline switches at its next batch boundary" }),
                    )
                }
                None => text(StatusCode::CONFLICT, "this pipeline runs no shadow version\n"),
            },
            (&Method::POST, "shadow/discard") => match target.slot.discard_shadow("an operator") {
                Some(digest) => {
                    tracing::info!(pipeline = %target.config.name, %digest, "shadow version discarded by an operator");
                    json_response(StatusCode::OK, &json!({ "pipeline": target.config.name, "discarded": digest }))
                }
                None => text(StatusCode::CONFLICT, "this pipeline runs no shadow version\n"),
            },
            (_, "shadow") => text(StatusCode::METHOD_NOT_ALLOWED, "use PUT with the component as the body, or GET\n"),
            (_, "shadow/promote" | "shadow/discard") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
            (_, "component") => text(StatusCode::METHOD_NOT_ALLOWED, "use PUT with the component as the body\n"),
            (_, "versions") => text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"),
            (_, "rollback") => text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"),
            _ => text(StatusCode::NOT_FOUND, format!("no route for {method} {path}\n")),
        }
    }

    fn put_component(&self, view: &Target, body: &[u8], empty_state: bool) -> Response<Bytes> {
        if body.is_empty() {
            return text(StatusCode::BAD_REQUEST, "the request body must be the component (.wasm)\n");
        }
        let origin = Origin::AdminApi;
        match deploy_with_state(&self.sandbox, &view.config, &view.slot, body, MAX_COMPONENT_BYTES, origin, empty_state)
        {
            Ok(deployed) => json_response(
                StatusCode::OK,
                &json!({
                    "pipeline": view.config.name,
                    "digest": deployed.digest,
                    "switched": deployed.switched,
                    "replaced": deployed.replaced,
                    "capabilities": deployed.capabilities.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "artifact": deployed.artifact.map(|a| a.as_str()),
                    "prepare_ms": deployed.prepared_in.as_secs_f64() * 1e3,
                    "empty_state": empty_state,
                    "note": match (deployed.switched, empty_state) {
                        (true, false) => "deployed; the pipeline switches at its next batch boundary",
                        (true, true) => "deployed; the pipeline switches at its next batch boundary, with empty state",
                        (false, false) => "this version is already running; nothing changed",
                        (false, true) => "this version is already running; its state is emptied at the next batch boundary",
                    },
                }),
            ),
            Err(error) => {
                let status = if matches!(error, DeployError::TooLarge { .. }) {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                json_response(status, &json!({ "pipeline": view.config.name, "error": error.to_string() }))
            }
        }
    }
}

impl DeployApi {
    fn put_shadow(&self, view: &Target, body: &[u8]) -> Response<Bytes> {
        if body.is_empty() {
            return text(StatusCode::BAD_REQUEST, "the request body must be the component (.wasm)\n");
        }
        match deploy_shadow(&self.sandbox, &view.config, &view.slot, body, MAX_COMPONENT_BYTES, Origin::AdminApi) {
            Ok(deployed) => json_response(
                StatusCode::OK,
                &json!({
                    "pipeline": view.config.name,
                    "shadow": deployed.digest,
                    "replaced": deployed.replaced,
                    "against": view.slot.current().digest(),
                    "capabilities": deployed.capabilities.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "prepare_ms": deployed.prepared_in.as_secs_f64() * 1e3,
                    "note": "the shadow runs every batch after the live version from the next batch boundary; \
                             nothing it writes is published",
                }),
            ),
            Err(error) => {
                let status = if matches!(error, DeployError::TooLarge { .. }) {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                json_response(status, &json!({ "pipeline": view.config.name, "error": error.to_string() }))
            }
        }
    }
}

/// A shadow version and its comparison, as the API and `ferry shadow report` show it.
pub(crate) fn shadow_json(pipeline: &str, view: &ShadowView) -> Value {
    let t = &view.tally;
    json!({
        "pipeline": pipeline,
        "shadow": version_json(&view.version),
        "against": view.against,
        "outputs": view.config.outputs,
        "ignore_headers": view.config.ignore_headers,
        "ignore_fields": view.config.ignore_fields,
        "compared": t.compared,
        "equal": t.equal,
        "different": t.different,
        "skipped": t.skipped,
        "skipped_batches": t.skipped_batches,
        "shadow_timeouts": t.shadow_timeouts,
        "state_batches": t.state_batches,
        "state_different": t.state_different,
        "differences": t.differences,
    })
}

/// The `state` query parameter of a deploy: whether the version starts with empty
/// state.
fn state_option(query: Option<&str>) -> Result<bool, String> {
    let mut empty = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("state", "keep") => empty = false,
            ("state", "empty") => empty = true,
            ("state", other) => return Err(format!("state={other}: use state=keep (the default) or state=empty\n")),
            (name, _) => return Err(format!("unknown query parameter `{name}` (the one there is: state)\n")),
        }
    }
    Ok(empty)
}

fn versions(view: &Target) -> Value {
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
        "shadow": view.slot.shadow_view().map(|s| json!({
            "digest": s.version.digest(),
            "compared": s.tally.compared,
            "different": s.tally.different + s.tally.state_different,
        })),
        "history": versions.history.iter().map(event_json).collect::<Vec<_>>(),
    })
}

fn rollback(view: &Target) -> Response<Bytes> {
    match view.slot.rollback(Origin::Rollback) {
        Some((from, to)) => {
            tracing::info!(pipeline = %view.config.name, %from, %to, "rolled back by an operator");
            json_response(
                StatusCode::OK,
                &json!({ "pipeline": view.config.name, "from": from, "to": to, "versions": versions(view) }),
            )
        }
        None => text(StatusCode::CONFLICT, "there is no previous version to roll back to\n"),
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

/// A plain-text response.
fn text(status: StatusCode, body: impl Into<String>) -> Response<Bytes> {
    respond(status, "text/plain; charset=utf-8", Bytes::from(body.into()))
}

/// A JSON response.
fn json_response(status: StatusCode, value: &Value) -> Response<Bytes> {
    respond(status, "application/json", Bytes::from(value.to_string()))
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
