//! The live status page (`/`) and the JSON it reads every second (`/api/status`).
//!
//! The page is one self-contained file (no external scripts, styles or fonts): it
//! draws each partition as a diagram, a log from 0 to its end with the
//! committed offset and the current position marked.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::figures::{PartitionFigures, PipelineFigures, WorkerFigures};
use super::health;
use crate::pipeline::liveness::ThreadState;
use crate::registry::GroupStatus;
use crate::sandbox::capability::http::DURATION_BUCKETS_US;

/// The page.
pub(crate) const PAGE: &str = include_str!("status.html");

/// The JSON document behind the page.
pub(crate) fn document(pipelines: &[PipelineFigures]) -> Value {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    json!({
        "now_unix_ms": now_ms,
        "pipelines": pipelines.iter().map(pipeline).collect::<Vec<_>>(),
    })
}

fn pipeline(p: &PipelineFigures) -> Value {
    let thread = thread_word(p.liveness.thread);
    let unready = health::unready(p);
    json!({
        "name": p.config.name,
        "group": p.config.group,
        "inputs": p.config.inputs,
        "version": { "running": p.running, "deployed": p.deployed },
        "group_deploy": p.group.as_ref().map(group_deploy),
        "shadow": p.shadow.as_ref().map(|s| crate::deploy::http::shadow_json(&p.config.name, s)),
        "state": {
            "thread": thread,
            "joined": p.liveness.joined,
            "ready": unready.is_none(),
            "reason": unready,
            "poll_loop_age_ms": p.liveness.since_last_turn.map(|d| d.as_millis() as u64),
        },
        "counters": {
            "batches": p.stats.batches,
            "rebalances": p.stats.rebalances,
            "commit_failures": p.stats.commit_failures,
            "recycles": p.stats.recycles,
        },
        "faults": p.stats.faults,
        "http": p.stats.http.as_ref().map(http),
        "broker": {
            "age_ms": p.broker_age.map(|d| d.as_millis() as u64),
            "error": p.broker_error,
        },
        "workers": p.workers.iter().map(worker).collect::<Vec<_>>(),
        "partitions": p.partitions.iter().map(|r| partition(p, r)).collect::<Vec<_>>(),
        "recent": p.stats.recent.iter().rev().map(|n| json!({
            "at_unix": n.at_unix,
            "topic": n.topic,
            "partition": n.partition,
            "offset": n.offset,
            "kind": n.kind,
            "reason": n.reason,
        })).collect::<Vec<_>>(),
    })
}

/// A pipeline's outgoing HTTP: requests by rule and end, errors by kind, bytes,
/// requests in flight, and the duration of half and of 99 % of them (the upper
/// bound of the histogram bucket they fall in).
fn http(h: &crate::pipeline::stats::HttpFigures) -> Value {
    let total: u64 = h.duration_buckets.iter().sum();
    let quantile = |q: f64| -> Option<u64> {
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in h.duration_buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(DURATION_BUCKETS_US.get(i).map_or(u64::MAX, |us| us / 1000));
            }
        }
        None
    };
    json!({
        "requests": h.requests.iter().map(|(host, end, n)| json!({ "host": host, "end": end, "count": n })).collect::<Vec<_>>(),
        "errors": h.errors.iter().map(|(kind, n)| (kind.to_string(), json!(n))).collect::<serde_json::Map<String, Value>>(),
        "bytes": h.bytes,
        "in_flight": h.in_flight,
        "finished": total,
        "p50_ms_at_most": (total > 0).then(|| quantile(0.5)).flatten(),
        "p99_ms_at_most": (total > 0).then(|| quantile(0.99)).flatten(),
    })
}

/// What a `group_deploy` pipeline knows of the components topic: whether it runs
/// unsigned versions, refusals (final) and the version it is trying again.
fn group_deploy(g: &GroupStatus) -> Value {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    json!({
        "topic": g.topic,
        "environment": g.environment,
        "trusted_keys": g.trusted_keys,
        "unsigned_accepted": g.trusted_keys.is_empty(),
        "published": g.published,
        "refused": g.refused,
        "refused_by": g.refused_by,
        "last_refusal": g.last_refusal.as_ref().map(|r| json!({
            "at_unix_ms": ms(r.at),
            "digest": r.digest,
            "reason": r.detail,
            "final": true,
        })),
        "retries": g.retries,
        "retrying": g.retrying.as_ref().map(|r| json!({
            "digest": r.digest,
            "reason": r.reason,
            "attempts": r.attempts,
            "next_at_unix_ms": ms(r.next_at),
            "final": false,
        })),
    })
}

fn thread_word(state: ThreadState) -> &'static str {
    match state {
        ThreadState::Running => "running",
        ThreadState::Stopped => "stopped",
        ThreadState::Died => "died",
    }
}

fn worker(w: &WorkerFigures) -> Value {
    json!({
        "index": w.index,
        "thread": thread_word(w.liveness.thread),
        "joined": w.liveness.joined,
        "poll_loop_age_ms": w.liveness.since_last_turn.map(|d| d.as_millis() as u64),
        "running": w.running,
        "partitions": w.assigned.iter().map(|(t, p)| json!({ "topic": t, "partition": p })).collect::<Vec<_>>(),
        "processed": w.processed,
        "batches": w.batches,
    })
}

fn partition(p: &PipelineFigures, r: &PartitionFigures) -> Value {
    let owner = p.workers.iter().find(|w| w.assigned.iter().any(|(t, n)| *t == r.topic && *n == r.partition));
    json!({
        "topic": r.topic,
        "partition": r.partition,
        "worker": owner.map(|w| w.index),
        "assigned": r.assigned,
        "halted": r.halted,
        "stalled": r.stalled,
        "log_start": r.log_start,
        "log_end": r.log_end,
        "position": r.position,
        "committed": r.committed,
        "lag": r.lag,
        "processed": r.processed,
        "failed": r.failed,
        "retried": r.retried,
        "dead_lettered": r.dead_lettered,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::admin::observe::broker_view::{BrokerPartition, PipelineLogs};
    use crate::admin::observe::figures::figures;
    use crate::config::Config;
    use crate::pipeline::liveness::LivenessSnapshot;
    use crate::pipeline::stats::{BatchCounts, PipelineStats};

    #[test]
    fn the_document_carries_offsets_versions_and_recent_failures() {
        let stats = PipelineStats::default();
        stats.assigned("t", 0);
        stats.set_version("0123456789abcdef");
        stats.batch("t", 0, 5, BatchCounts { processed: 5, ..Default::default() }, Duration::from_millis(1));
        stats.committed("t", 0, 4);
        stats.note("t", 0, Some(1), "reject", "first");
        stats.note("t", 0, Some(3), "dead-letter", "<b>second</b>");
        let logs = PipelineLogs {
            partitions: BTreeMap::from([(
                ("t".to_owned(), 0),
                BrokerPartition { log_start: Some(0), log_end: Some(9), committed: Some(4) },
            )]),
            refreshed: Some(Instant::now()),
            error: None,
        };
        let text =
            "brokers = \"b:1\"\n[[pipeline]]\nname = \"p\"\ninputs = [\"t\"]\ngroup = \"g\"\ncomponent = \"x.wasm\"";
        let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
        let liveness =
            LivenessSnapshot { thread: ThreadState::Running, joined: true, since_last_turn: Some(Duration::ZERO) };
        let doc = document(&[figures(config, "fedcba".into(), liveness, stats.snapshot(), &logs)]);
        let p = &doc["pipelines"][0];
        assert_eq!(p["name"], "p");
        assert_eq!(p["version"]["running"], "0123456789abcdef");
        assert_eq!(p["version"]["deployed"], "fedcba");
        assert_eq!(p["state"]["ready"], true);
        let row = &p["partitions"][0];
        assert_eq!(
            (row["log_end"].as_i64(), row["position"].as_i64(), row["committed"].as_i64(), row["lag"].as_i64()),
            (Some(9), Some(5), Some(4), Some(5))
        );
        assert_eq!(p["recent"][0]["reason"], "<b>second</b>", "newest first, as data (the page sets it as text)");
        assert_eq!(p["recent"][1]["kind"], "reject");
        assert_eq!(p["workers"][0]["partitions"][0]["partition"], 0, "one worker, which owns the partition");
        assert_eq!(p["workers"][0]["processed"], 5);
        assert_eq!(row["worker"], 0);
    }

    #[test]
    fn the_page_is_self_contained() {
        for external in ["http://", "https://", "//cdn", "@import"] {
            assert!(!PAGE.contains(external), "the page refers to {external}");
        }
        assert!(PAGE.contains("fetch(\"api/status\"") && !PAGE.contains("innerHTML"), "data goes in as text only");
    }

    /// With two workers, the document lists both and says which owns each partition.
    #[test]
    fn the_document_lists_the_workers_and_who_owns_what() {
        let (first, second) = (PipelineStats::default(), PipelineStats::default());
        first.assigned("t", 0);
        second.assigned("t", 1);
        second.batch("t", 1, 4, BatchCounts { processed: 4, ..Default::default() }, Duration::from_millis(1));
        let text = "brokers = \"b:1\"\n[[pipeline]]\nname = \"p\"\ninputs = [\"t\"]\ngroup = \"g\"\n\
                    component = \"x.wasm\"\nworkers = 2";
        let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
        let up = LivenessSnapshot { thread: ThreadState::Running, joined: true, since_last_turn: Some(Duration::ZERO) };
        let fig = crate::admin::observe::figures::workers_figures(
            config,
            String::new(),
            vec![(up, first.snapshot()), (up, second.snapshot())],
            &PipelineLogs::default(),
        );
        let doc = document(&[fig]);
        let p = &doc["pipelines"][0];
        assert_eq!(p["workers"].as_array().map(Vec::len), Some(2));
        assert_eq!(p["workers"][1]["partitions"][0]["partition"], 1);
        assert_eq!(p["workers"][1]["processed"], 4);
        assert_eq!((p["partitions"][0]["worker"].as_u64(), p["partitions"][1]["worker"].as_u64()), (Some(0), Some(1)));
    }
}
