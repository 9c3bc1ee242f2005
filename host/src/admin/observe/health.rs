//! `/healthz` and `/readyz`, decided from the pipelines' liveness (the meanings are
//! documented on the `observe` module).

use std::time::Duration;

use super::figures::{PipelineFigures, WorkerFigures};
use crate::admin::Reply;
use crate::config::PipelineConfig;
use crate::pipeline::liveness::ThreadState;

/// How long a pipeline's loop may go without turning before it counts as stalled:
/// 30 s, plus twice the batch time limit for every run a faulting batch may need
/// (it is split in halves down to single records, and each run may use the limit).
pub(crate) fn stall_limit(config: &PipelineConfig) -> Duration {
    let halvings = u64::from(usize::BITS - config.batch_size.max(1).leading_zeros()) + 1;
    Duration::from_secs(30) + Duration::from_millis(config.limits.time_per_batch_ms.saturating_mul(2 * halvings))
}

/// How a worker is named in reasons: as its pipeline when that runs one worker.
fn member(p: &PipelineFigures, w: &WorkerFigures) -> String {
    match p.workers.len() {
        1 => format!("pipeline {}", p.config.name),
        _ => format!("pipeline {} worker {}", p.config.name, w.index),
    }
}

/// The reasons of every worker `check` finds fault with, one per line.
fn of_workers(p: &PipelineFigures, check: impl Fn(&WorkerFigures) -> Option<String>) -> Option<String> {
    let reasons: Vec<String> = p.workers.iter().filter_map(check).collect();
    (!reasons.is_empty()).then(|| reasons.join("\n"))
}

/// Why a pipeline is not alive, if it is not: a worker thread died.
pub(crate) fn dead(p: &PipelineFigures) -> Option<String> {
    of_workers(p, |w| {
        (w.liveness.thread == ThreadState::Died)
            .then(|| format!("{}: its thread died (panicked); nothing is consumed or committed", member(p, w)))
    })
}

/// Why a pipeline is not ready, if it is not: any of its workers is not.
pub(crate) fn unready(p: &PipelineFigures) -> Option<String> {
    if let Some(dead) = dead(p) {
        return Some(dead);
    }
    let outage = p.stats.brokers_down.as_ref().map(|down| format!("{down}; ferry keeps trying to reach them"));
    let limit = stall_limit(&p.config);
    of_workers(p, |w| {
        let name = member(p, w);
        let l = &w.liveness;
        match l.thread {
            ThreadState::Died => return None,
            ThreadState::Stopped => return Some(format!("{name}: stopped (shutting down)")),
            ThreadState::Running => {}
        }
        if !l.joined {
            let why =
                outage.as_ref().map_or("no assignment received".to_owned(), |o| format!("no assignment received: {o}"));
            return Some(format!("{name}: not in consumer group {} yet ({why})", p.config.group));
        }
        if let Some(outage) = &outage {
            return Some(format!("{name}: {outage}"));
        }
        if let Some(row) = p.partitions.iter().find(|r| r.assigned && r.state.is_some_and(|s| s.restoring)) {
            return Some(format!("{name}: restoring the state of {}/{} from its changelog", row.topic, row.partition));
        }
        match l.since_last_turn {
            Some(since) if since > limit => Some(format!(
                "{name}: its poll loop has not turned for {} s (limit {} s)",
                since.as_secs(),
                limit.as_secs()
            )),
            _ => None,
        }
    })
}

/// The `/healthz` answer.
pub(crate) fn healthz(pipelines: &[PipelineFigures]) -> Reply {
    verdict(pipelines, "alive", dead)
}

/// The `/readyz` answer.
pub(crate) fn readyz(pipelines: &[PipelineFigures]) -> Reply {
    verdict(pipelines, "ready", unready)
}

fn verdict(pipelines: &[PipelineFigures], good: &str, check: fn(&PipelineFigures) -> Option<String>) -> Reply {
    let problems: Vec<String> = pipelines.iter().filter_map(check).collect();
    if problems.is_empty() {
        let mut body = format!("{good}\n");
        for p in pipelines {
            let owned = p.partitions.iter().filter(|r| r.assigned).count();
            body.push_str(&format!("pipeline {}: {owned} partition(s) assigned", p.config.name));
            if p.workers.len() > 1 {
                let each: Vec<String> = p.workers.iter().map(|w| w.assigned.len().to_string()).collect();
                body.push_str(&format!(" ({} workers: {})", p.workers.len(), each.join(" + ")));
            }
            body.push('\n');
        }
        Reply::text(200, body)
    } else {
        Reply::text(503, format!("not {good}\n{}\n", problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::admin::observe::broker_view::PipelineLogs;
    use crate::admin::observe::figures::{figures, workers_figures};
    use crate::config::Config;
    use crate::pipeline::liveness::LivenessSnapshot;

    fn pipeline(thread: ThreadState, joined: bool, since: Option<u64>) -> PipelineFigures {
        let text =
            "brokers = \"b:1\"\n[[pipeline]]\nname = \"p\"\ninputs = [\"t\"]\ngroup = \"g\"\ncomponent = \"x.wasm\"";
        let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
        let liveness = LivenessSnapshot { thread, joined, since_last_turn: since.map(Duration::from_secs) };
        figures(config, "d".into(), liveness, Default::default(), &PipelineLogs::default())
    }

    fn answer(reply: &Reply) -> (u16, String) {
        (reply.status, String::from_utf8(reply.body.clone()).unwrap())
    }

    #[test]
    fn running_and_joined_is_ready() {
        let p = [pipeline(ThreadState::Running, true, Some(0))];
        assert_eq!(answer(&healthz(&p)).0, 200);
        let (status, body) = answer(&readyz(&p));
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("ready\npipeline p: 0 partition(s) assigned"), "{body}");
    }

    #[test]
    fn not_joined_is_alive_but_not_ready() {
        let p = [pipeline(ThreadState::Running, false, Some(0))];
        assert_eq!(answer(&healthz(&p)).0, 200);
        let (status, body) = answer(&readyz(&p));
        assert_eq!(status, 503);
        assert!(body.contains("pipeline p: not in consumer group g yet"), "{body}");
    }

    #[test]
    fn a_dead_thread_fails_both() {
        let p = [pipeline(ThreadState::Running, true, Some(0)), pipeline(ThreadState::Died, true, Some(0))];
        let (status, body) = answer(&healthz(&p));
        assert_eq!(status, 503);
        assert!(body.contains("its thread died"), "{body}");
        assert_eq!(answer(&readyz(&p)).0, 503);
    }

    #[test]
    fn stopping_is_alive_but_not_ready() {
        let p = [pipeline(ThreadState::Stopped, true, Some(0))];
        assert_eq!(answer(&healthz(&p)).0, 200);
        assert!(answer(&readyz(&p)).1.contains("shutting down"));
    }

    #[test]
    fn unreachable_brokers_are_why_it_is_not_ready() {
        for joined in [false, true] {
            let mut p = pipeline(ThreadState::Running, joined, Some(0));
            p.stats.brokers_down = Some(crate::kafka::client_log::BrokersDown {
                since: std::time::Instant::now(),
                why: "1/1 brokers are down".to_owned(),
            });
            let (status, body) = answer(&readyz(&[p]));
            assert_eq!(status, 503);
            assert!(body.contains("no Kafka broker reachable for 0 s (1/1 brokers are down)"), "{body}");
            assert_eq!(body.contains("pipeline p: not in consumer group g yet"), !joined, "{body}");
        }
    }

    /// One stuck worker makes the pipeline unready, as a stuck pipeline does; a dead
    /// one fails `/healthz`. Both name the worker.
    #[test]
    fn one_bad_worker_is_enough() {
        let text = "brokers = \"b:1\"\n[[pipeline]]\nname = \"p\"\ninputs = [\"t\"]\ngroup = \"g\"\n\
                    component = \"x.wasm\"\nworkers = 2";
        let config = Arc::new(Config::parse(text).unwrap().pipelines.remove(0));
        let at = |thread, since: u64| {
            (
                LivenessSnapshot { thread, joined: true, since_last_turn: Some(Duration::from_secs(since)) },
                Default::default(),
            )
        };
        let two = |second| {
            workers_figures(
                config.clone(),
                "d".into(),
                vec![at(ThreadState::Running, 0), second],
                &PipelineLogs::default(),
            )
        };
        let fine = two(at(ThreadState::Running, 1));
        let (status, body) = answer(&readyz(&[fine]));
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("pipeline p: 0 partition(s) assigned (2 workers: 0 + 0)"), "{body}");
        let stuck = two(at(ThreadState::Running, 10_000));
        assert_eq!(answer(&healthz(std::slice::from_ref(&stuck))).0, 200, "stuck is alive");
        let (status, body) = answer(&readyz(&[stuck]));
        assert_eq!(status, 503);
        assert!(body.contains("pipeline p worker 1: its poll loop has not turned for 10000 s"), "{body}");
        assert!(!body.contains("worker 0"), "{body}");
        let (status, body) = answer(&healthz(&[two(at(ThreadState::Died, 0))]));
        assert_eq!(status, 503);
        assert!(body.contains("pipeline p worker 1: its thread died"), "{body}");
    }

    #[test]
    fn a_stalled_loop_is_not_ready() {
        let p = pipeline(ThreadState::Running, true, Some(10_000));
        assert!(unready(&p).is_some_and(|r| r.contains("has not turned for 10000 s")));
        // Default batch of 500 with 5 s per batch: 30 s + 2 × 5 s × 10 runs.
        assert_eq!(stall_limit(&p.config), Duration::from_secs(130));
    }
}
