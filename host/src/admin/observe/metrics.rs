//! `/metrics`: every pipeline's figures in the Prometheus text format.
//!
//! Record counters cover every partition this member processed since it started.
//! Offset gauges (committed, position, log end, lag, halted, stalled) cover only the partitions
//! this member owns now, so summing them across the members of a group counts every
//! partition once.

use super::exposition::{Exposition, Kind, seconds};
use super::figures::{PartitionFigures, PipelineFigures, WorkerFigures};
use crate::admin::limits::MAX_CONNECTIONS;
use crate::admin::traffic::TrafficSnapshot;
use crate::pipeline::liveness::ThreadState;
use crate::pipeline::stats::LATENCY_BUCKETS_US;
use crate::sandbox::capability::http::DURATION_BUCKETS_US;

type PartitionValue = fn(&PartitionFigures) -> Option<i64>;

const RECORD_COUNTERS: [(&str, &str, PartitionValue); 4] = [
    ("ferry_records_processed_total", "Records the processor finished.", |p| Some(p.processed as i64)),
    ("ferry_records_failed_total", "Records the processor rejected.", |p| Some(p.failed as i64)),
    ("ferry_records_retried_total", "Records the processor (or a fault) sent back for a retry.", |p| {
        Some(p.retried as i64)
    }),
    ("ferry_records_dead_lettered_total", "Records given up on and written to the dead-letter topic.", |p| {
        Some(p.dead_lettered as i64)
    }),
];

const OFFSET_GAUGES: [(&str, &str, PartitionValue); 6] = [
    ("ferry_committed_offset", "The group's committed offset (next offset to read) of an owned partition.", |p| {
        p.committed
    }),
    ("ferry_position_offset", "Next offset this member reads on an owned partition.", |p| p.position),
    ("ferry_log_end_offset", "Log end offset (high watermark) of an owned partition.", |p| p.log_end),
    ("ferry_lag_records", "Records of an owned partition not yet committed: log end minus committed offset.", |p| {
        p.lag
    }),
    ("ferry_partition_halted", "1 when an owned partition is halted by the failure policy.", |p| {
        Some(i64::from(p.halted.is_some()))
    }),
    (
        "ferry_partition_stalled",
        "1 when an owned partition stopped advancing without an error: records wait in the log and none arrive.",
        |p| Some(i64::from(p.stalled.is_some())),
    ),
];

type PipelineValue = fn(&PipelineFigures) -> u64;

const PIPELINE_COUNTERS: [(&str, &str, PipelineValue); 7] = [
    ("ferry_instance_recycles_total", "Guest instances thrown away after a fault.", |p| p.stats.recycles),
    ("ferry_rebalances_total", "Rebalances that took partitions from this member.", |p| p.stats.rebalances),
    ("ferry_commit_failures_total", "Offset commits that failed or timed out.", |p| p.stats.commit_failures),
    ("ferry_transactions_committed_total", "Partition transactions committed (exactly-once).", |p| {
        p.stats.transactions_committed
    }),
    (
        "ferry_transactions_aborted_total",
        "Partition transactions aborted, or lost with a fenced producer (exactly-once); their records run again.",
        |p| p.stats.transactions_aborted,
    ),
    ("ferry_guest_log_lines_total", "Guest log lines written (log calls, stdout and stderr).", |p| {
        p.stats.guest_log_lines.0
    }),
    (
        "ferry_guest_log_lines_dropped_total",
        "Guest log lines dropped by the pipeline's rate limit ([pipeline.logs]).",
        |p| p.stats.guest_log_lines.1,
    ),
];

/// Renders the exposition.
pub(crate) fn render(pipelines: &[PipelineFigures]) -> String {
    let mut e = Exposition::default();
    for (name, help, value) in RECORD_COUNTERS {
        e.family(name, Kind::Counter, help);
        for p in pipelines {
            for row in &p.partitions {
                if row.processed + row.failed + row.retried + row.dead_lettered > 0 || row.assigned {
                    partition_sample(&mut e, name, p, row, value);
                }
            }
        }
    }
    for (name, help, value) in OFFSET_GAUGES {
        e.family(name, Kind::Gauge, help);
        for p in pipelines {
            for row in p.partitions.iter().filter(|r| r.assigned) {
                partition_sample(&mut e, name, p, row, value);
            }
        }
    }
    state_gauges(&mut e, pipelines);
    batch_latency(&mut e, pipelines);
    e.family("ferry_guest_faults_total", Kind::Counter, "Guest faults by kind (panic, timeout, out_of_memory, ...).");
    for p in pipelines {
        for (kind, count) in &p.stats.faults {
            e.sample("ferry_guest_faults_total", &[("pipeline", &p.config.name), ("kind", kind)], count);
        }
    }
    for (name, help, value) in PIPELINE_COUNTERS {
        e.family(name, Kind::Counter, help);
        for p in pipelines {
            e.sample(name, &[("pipeline", &p.config.name)], value(p));
        }
    }
    http_counters(&mut e, pipelines);
    e.family("ferry_component_info", Kind::Gauge, "The component version a pipeline runs (sha256 digest); always 1.");
    for p in pipelines {
        e.sample("ferry_component_info", &[("pipeline", &p.config.name), ("digest", &p.running)], 1);
    }
    group_deploys(&mut e, pipelines);
    shadows(&mut e, pipelines);
    pipeline_state(&mut e, pipelines);
    worker_state(&mut e, pipelines);
    e.finish()
}

/// Outgoing HTTP of the pipelines with a `[pipeline.http]` grant (the families appear
/// only on a host that runs one).
fn http_counters(e: &mut Exposition, pipelines: &[PipelineFigures]) {
    let with: Vec<_> = pipelines.iter().filter_map(|p| Some((&p.config.name, p.stats.http.as_ref()?))).collect();
    if with.is_empty() {
        return;
    }
    e.family(
        "ferry_http_requests_total",
        Kind::Counter,
        "Guest HTTP requests by the allow rule they matched (- for none) and their end (status class or error).",
    );
    for (name, http) in &with {
        for (host, end, n) in &http.requests {
            e.sample("ferry_http_requests_total", &[("pipeline", name), ("host", host), ("class", end)], n);
        }
    }
    e.family("ferry_http_errors_total", Kind::Counter, "Guest HTTP requests that ended in an error, by kind.");
    for (name, http) in &with {
        for (kind, n) in &http.errors {
            e.sample("ferry_http_errors_total", &[("pipeline", name), ("kind", kind)], n);
        }
    }
    e.family("ferry_http_bytes_total", Kind::Counter, "Guest HTTP bytes sent and received, as the budgets count them.");
    for (name, http) in &with {
        e.sample("ferry_http_bytes_total", &[("pipeline", name)], http.bytes);
    }
    e.family(
        "ferry_http_requests_in_flight",
        Kind::Gauge,
        "Guest HTTP requests started and not finished (waiting for a turn, connecting, or being answered).",
    );
    for (name, http) in &with {
        e.sample("ferry_http_requests_in_flight", &[("pipeline", name)], http.in_flight);
    }
    let family = "ferry_http_request_duration_seconds";
    e.family(family, Kind::Histogram, "Guest HTTP requests by time from their start to the end of their answer.");
    let bucket = format!("{family}_bucket");
    for (name, http) in &with {
        let mut cumulative = 0;
        for (i, count) in http.duration_buckets.iter().enumerate() {
            cumulative += count;
            let le = DURATION_BUCKETS_US.get(i).map_or_else(|| "+Inf".to_owned(), |&us| seconds(us));
            e.sample(&bucket, &[("pipeline", name), ("le", &le)], cumulative);
        }
        e.sample(&format!("{family}_sum"), &[("pipeline", name)], seconds(http.duration_sum_us));
        e.sample(&format!("{family}_count"), &[("pipeline", name)], cumulative);
    }
}

/// Keyed state of the owned partitions, for pipelines with state (the families
/// appear only on a host that runs one).
const STATE_GAUGES: [(&str, &str, PartitionValue); 3] = [
    ("ferry_state_keys", "Keys of an owned partition's state held in memory.", |p| p.state.map(|s| s.keys as i64)),
    ("ferry_state_bytes", "Bytes of an owned partition's state held in memory, as its limit counts them.", |p| {
        p.state.map(|s| s.bytes as i64)
    }),
    ("ferry_state_restoring", "1 while an owned partition's state is being restored from its changelog.", |p| {
        p.state.map(|s| i64::from(s.restoring))
    }),
];

fn state_gauges(e: &mut Exposition, pipelines: &[PipelineFigures]) {
    if !pipelines.iter().any(|p| p.config.state.is_some()) {
        return;
    }
    for (name, help, value) in STATE_GAUGES {
        e.family(name, Kind::Gauge, help);
        for p in pipelines {
            for row in p.partitions.iter().filter(|r| r.assigned && r.state.is_some()) {
                partition_sample(e, name, p, row, value);
            }
        }
    }
}

/// Why a host refuses a version from the components topic: every one is exposed,
/// at 0 until it happens, so an alert on its increase sees the first.
const REFUSAL_REASONS: [&str; 6] = ["signature", "stale", "scope", "integrity", "manifest", "component"];

/// What `group_deploy` pipelines know of the components topic.
fn group_deploys(e: &mut Exposition, pipelines: &[PipelineFigures]) {
    let name = "ferry_group_version_info";
    e.family(name, Kind::Gauge, "The version the components topic names for a group_deploy pipeline; always 1.");
    for p in pipelines {
        if let Some(published) = p.group.as_ref().and_then(|g| g.published.as_deref()) {
            e.sample(name, &[("pipeline", &p.config.name), ("digest", published)], 1);
        }
    }
    let name = "ferry_group_versions_refused_total";
    e.family(
        name,
        Kind::Counter,
        "Versions from the components topic this host refused for good, keeping the one it ran, by reason \
         (signature, stale, scope, integrity, manifest, component).",
    );
    for p in pipelines {
        if let Some(group) = &p.group {
            for reason in REFUSAL_REASONS {
                let count = group.refused_by.get(reason).copied().unwrap_or(0);
                e.sample(name, &[("pipeline", &p.config.name), ("reason", reason)], count);
            }
        }
    }
    let name = "ferry_group_version_retries_total";
    e.family(
        name,
        Kind::Counter,
        "Attempts at a version from the components topic that failed for a cause that may pass (tried again).",
    );
    for p in pipelines {
        if let Some(group) = &p.group {
            e.sample(name, &[("pipeline", &p.config.name)], group.retries);
        }
    }
    let name = "ferry_group_version_retrying";
    e.family(name, Kind::Gauge, "1 while a version from the components topic is being tried again.");
    for p in pipelines {
        if let Some(group) = &p.group {
            e.sample(name, &[("pipeline", &p.config.name)], u64::from(group.retrying.is_some()));
        }
    }
    let name = "ferry_group_unsigned_accepted";
    e.family(
        name,
        Kind::Gauge,
        "1 when this host runs unsigned versions from the components topic (no [fleet] trusted_keys).",
    );
    for p in pipelines {
        if let Some(group) = &p.group {
            e.sample(name, &[("pipeline", &p.config.name)], u64::from(group.trusted_keys.is_empty()));
        }
    }
}

/// The comparison of each pipeline's shadow version, while it has one (the counts
/// start over with every shadow deployed).
fn shadows(e: &mut Exposition, pipelines: &[PipelineFigures]) {
    type Count = fn(&crate::shadow::Tally) -> u64;
    let families: [(&str, &str, Count); 5] = [
        (
            "ferry_shadow_records_compared_total",
            "Records the shadow version and the live one both ran, compared.",
            |t| t.compared,
        ),
        (
            "ferry_shadow_records_equal_total",
            "Compared records on which the shadow agreed with the live version.",
            |t| t.equal,
        ),
        (
            "ferry_shadow_records_different_total",
            "Compared records on which the shadow differed (outcome or outputs).",
            |t| t.different,
        ),
        (
            "ferry_shadow_records_skipped_total",
            "Records not compared: the shadow skipped their batch (over its share of time) or a side did not finish them.",
            |t| t.skipped,
        ),
        (
            "ferry_shadow_state_batches_different_total",
            "Batches whose state writes differed between the shadow and the live version.",
            |t| t.state_different,
        ),
    ];
    for (name, help, count) in families {
        e.family(name, Kind::Counter, help);
        for p in pipelines {
            if let Some(shadow) = &p.shadow {
                e.sample(
                    name,
                    &[("pipeline", &p.config.name), ("digest", shadow.version.digest())],
                    count(&shadow.tally),
                );
            }
        }
    }
    let name = "ferry_shadow_timeouts_total";
    e.family(name, Kind::Counter, "Batches in which the shadow version ran out of its time limit.");
    for p in pipelines {
        if let Some(shadow) = &p.shadow {
            e.sample(
                name,
                &[("pipeline", &p.config.name), ("digest", shadow.version.digest())],
                shadow.tally.shadow_timeouts,
            );
        }
    }
    let name = "ferry_shadow_batches_skipped_total";
    e.family(name, Kind::Counter, "Batches the shadow version did not run, over its share of batch time.");
    for p in pipelines {
        if let Some(shadow) = &p.shadow {
            e.sample(
                name,
                &[("pipeline", &p.config.name), ("digest", shadow.version.digest())],
                shadow.tally.skipped_batches,
            );
        }
    }
}

/// Renders the admin server's own figures (appended to [`render`]'s).
pub(crate) fn render_server(traffic: &TrafficSnapshot) -> String {
    let mut e = Exposition::default();
    let help = format!("Admin server connections open now (at most {MAX_CONNECTIONS}).");
    e.family("ferry_admin_connections", Kind::Gauge, &help);
    e.sample("ferry_admin_connections", &[], traffic.open);
    let name = "ferry_admin_connections_refused_total";
    e.family(name, Kind::Counter, "Admin connections closed as soon as accepted because the limit was reached.");
    e.sample(name, &[], traffic.refused_connections);
    let name = "ferry_admin_connections_evicted_total";
    e.family(name, Kind::Counter, "Idle admin connections closed to make room for a new one at the limit.");
    e.sample(name, &[], traffic.evicted_connections);
    let name = "ferry_admin_requests_refused_total";
    e.family(name, Kind::Counter, "Admin requests refused before their work, by reason.");
    for (why, count) in &traffic.refused {
        e.sample(name, &[("reason", why.label())], count);
    }
    e.finish()
}

fn partition_sample(
    e: &mut Exposition,
    name: &str,
    p: &PipelineFigures,
    row: &PartitionFigures,
    value: PartitionValue,
) {
    if let Some(v) = value(row) {
        let partition = row.partition.to_string();
        e.sample(name, &[("pipeline", &p.config.name), ("topic", &row.topic), ("partition", &partition)], v);
    }
}

fn batch_latency(e: &mut Exposition, pipelines: &[PipelineFigures]) {
    let name = "ferry_batch_duration_seconds";
    e.family(name, Kind::Histogram, "Time to run one batch through the guest and settle its outcomes.");
    let bucket = format!("{name}_bucket");
    for p in pipelines {
        let pipeline = p.config.name.as_str();
        let mut cumulative = 0;
        for (i, count) in p.stats.latency_buckets.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BUCKETS_US.get(i).map_or_else(|| "+Inf".to_owned(), |&us| seconds(us));
            e.sample(&bucket, &[("pipeline", pipeline), ("le", &le)], cumulative);
        }
        e.sample(&format!("{name}_sum"), &[("pipeline", pipeline)], seconds(p.stats.latency_sum_us));
        e.sample(&format!("{name}_count"), &[("pipeline", pipeline)], cumulative);
    }
}

fn pipeline_state(e: &mut Exposition, pipelines: &[PipelineFigures]) {
    e.family("ferry_pipeline_up", Kind::Gauge, "1 while every worker thread of the pipeline runs.");
    for p in pipelines {
        e.sample(
            "ferry_pipeline_up",
            &[("pipeline", &p.config.name)],
            i32::from(p.liveness.thread == ThreadState::Running),
        );
    }
    let name = "ferry_poll_loop_age_seconds";
    e.family(name, Kind::Gauge, "Seconds since the pipeline's poll loop last turned (its slowest worker's).");
    for p in pipelines {
        if let Some(age) = p.liveness.since_last_turn {
            e.sample(name, &[("pipeline", &p.config.name)], seconds(age.as_micros() as u64));
        }
    }
    let name = "ferry_log_end_age_seconds";
    e.family(name, Kind::Gauge, "Seconds since log end offsets were last read from the brokers.");
    for p in pipelines {
        if let Some(age) = p.broker_age {
            e.sample(name, &[("pipeline", &p.config.name)], seconds(age.as_micros() as u64));
        }
    }
}

/// One series per worker (`worker` = 0 .. workers-1): a stuck or dead worker, and
/// how partitions and work spread over them.
fn worker_state(e: &mut Exposition, pipelines: &[PipelineFigures]) {
    let label = |p: &PipelineFigures, w: &WorkerFigures| (p.config.name.clone(), w.index.to_string());
    let name = "ferry_worker_up";
    e.family(name, Kind::Gauge, "1 while this worker's thread runs.");
    for p in pipelines {
        for w in &p.workers {
            let (pipeline, worker) = label(p, w);
            let up = i32::from(w.liveness.thread == ThreadState::Running);
            e.sample(name, &[("pipeline", &pipeline), ("worker", &worker)], up);
        }
    }
    let name = "ferry_worker_poll_loop_age_seconds";
    e.family(name, Kind::Gauge, "Seconds since this worker's poll loop last turned.");
    for p in pipelines {
        for w in &p.workers {
            if let Some(age) = w.liveness.since_last_turn {
                let (pipeline, worker) = label(p, w);
                e.sample(name, &[("pipeline", &pipeline), ("worker", &worker)], seconds(age.as_micros() as u64));
            }
        }
    }
    let name = "ferry_worker_partitions_assigned";
    e.family(name, Kind::Gauge, "Partitions this worker owns now; a worker with none idles.");
    for p in pipelines {
        for w in &p.workers {
            let (pipeline, worker) = label(p, w);
            e.sample(name, &[("pipeline", &pipeline), ("worker", &worker)], w.assigned.len());
        }
    }
    let name = "ferry_worker_records_processed_total";
    e.family(name, Kind::Counter, "Records this worker's guest finished.");
    for p in pipelines {
        for w in &p.workers {
            let (pipeline, worker) = label(p, w);
            e.sample(name, &[("pipeline", &pipeline), ("worker", &worker)], w.processed);
        }
    }
    let name = "ferry_worker_component_info";
    e.family(name, Kind::Gauge, "The component version this worker runs (sha256 digest); always 1.");
    for p in pipelines {
        for w in &p.workers {
            let (pipeline, worker) = label(p, w);
            e.sample(name, &[("pipeline", &pipeline), ("worker", &worker), ("digest", &w.running)], 1);
        }
    }
}

#[cfg(test)]
mod tests;
