//! Read-only endpoints: health, readiness, metrics, the status page.
//!
//! | endpoint | answers |
//! | --- | --- |
//! | `GET /healthz` | liveness: 200 while the process serves and no pipeline thread has died; 503 naming the pipeline whose thread panicked. A pipeline that stopped on a shutdown request still counts as alive. Restarting the process is the remedy for a 503. |
//! | `GET /readyz` | readiness: 200 when every pipeline thread runs, its consumer has joined its group (received an assignment, possibly empty: a member with no partitions is still doing its job) and its poll loop has turned within its stall limit (30 s plus twice the batch time limit per run a faulting batch may need). Otherwise 503 with one line per reason: not joined yet (brokers unreachable, group coordinator missing), stalled, stopped (shutting down), died. |
//! | `GET /metrics` | Prometheus text format; see [`metrics`] for what is counted where. |
//! | `GET /` | the live status page; it reads `GET /api/status` (JSON) every second. |
//!
//! Every answer is computed from in-memory figures. Log end offsets and the group's
//! committed offsets come from a background refresher ([`BrokerView`]) that asks the
//! brokers every two seconds, so no request ever waits on Kafka.

mod broker_view;
mod exposition;
mod figures;
mod health;
mod metrics;
mod status;

use http::Method;

pub use self::broker_view::BrokerView;
use super::traffic::Traffic;
use super::{AdminState, Reply};

/// Serves the read-only endpoints; `traffic` is the server's own figures for
/// `/metrics`.
pub(crate) fn route(state: &AdminState, traffic: &Traffic, method: &Method, path: &str) -> Option<Reply> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return None;
    }
    let reply = match path {
        "/healthz" => health::healthz(&figures::gather(state)),
        "/readyz" => health::readyz(&figures::gather(state)),
        "/metrics" => Reply {
            status: 200,
            content_type: exposition::CONTENT_TYPE,
            body: (metrics::render(&figures::gather(state)) + &metrics::render_server(&traffic.snapshot()))
                .into_bytes(),
        },
        "/api/status" => Reply::json(200, &status::document(&figures::gather(state))),
        "/" | "/index.html" => {
            Reply { status: 200, content_type: "text/html; charset=utf-8", body: status::PAGE.as_bytes().to_vec() }
        }
        _ => return None,
    };
    Some(reply)
}
