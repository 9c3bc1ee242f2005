//! What librdkafka says about a client (its log lines, its errors, its statistics),
//! told once per change instead of once per retry or per poll.
//!
//! - The brokers' reachability is a state: when no broker can be reached, one line
//!   says so (why, and what ferry does meanwhile); while it lasts, at most one
//!   summary line every [`SUMMARY_EVERY`]; when a broker answers again, one line
//!   says that. Health checks read the state ([`ClientLog::brokers_down`]).
//! - Any other error or warning is logged the first time, then summarized at most
//!   every [`SUMMARY_EVERY`] while it repeats.
//!
//! librdkafka raises "all brokers down" when the last broker it knows fails, right
//! after that broker's own connection error; it never says when a broker is back.
//! Its statistics (every `statistics.interval.ms`, which ferry sets) list each
//! broker's state, and an assignment proves the group coordinator answered: either
//! ends the state.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::sync::lock;

/// How often a repeating error, or a lasting broker outage, is summarized.
pub(crate) const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// How long a single broker's connection error waits for librdkafka's "all brokers
/// down" (which follows at once when it was the last broker) before it is logged
/// on its own.
const ALONE_AFTER: Duration = Duration::from_secs(1);

/// No broker of a client could be reached: since when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokersDown {
    /// When the client lost its last broker.
    pub since: Instant,
    /// librdkafka's words for it.
    pub why: String,
}

impl Display for BrokersDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no Kafka broker reachable for {} s ({})", self.since.elapsed().as_secs(), self.why)
    }
}

/// The log state of one librdkafka client. Callbacks of one client run on one
/// thread at a time, but the state is also read by health checks: it is locked.
#[derive(Debug, Default)]
pub struct ClientLog {
    state: Mutex<State>,
}

impl ClientLog {
    /// librdkafka's `error` callback, for the client `who` names.
    pub fn error(&self, who: &dyn Display, error: &KafkaError, reason: &str) {
        let said = lock(&self.state).error(error, reason, Instant::now());
        if let Some(code) = error.rdkafka_error_code() {
            JUST_REPORTED.with(|last| *last.borrow_mut() = Some(code));
        }
        say(who, said);
    }

    /// librdkafka's `log` callback.
    pub fn log(&self, who: &dyn Display, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error
        );
        if serious && facility == "FAIL" {
            // A broker's connection failure: librdkafka sends the same text as an
            // error event, which is where it is handled.
            tracing::debug!(target: "librdkafka", client = %who, "{facility} {message}");
            return;
        }
        match level {
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", client = %who, "{facility} {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", client = %who, "{facility} {message}"),
            _ => {
                let said = lock(&self.state).warning(facility, message, Instant::now());
                say(who, said);
            }
        }
    }

    /// librdkafka's statistics (JSON): the brokers' states are read here; where a
    /// consumer fetches each of its partitions is returned (empty for a producer).
    pub fn statistics(&self, who: &dyn Display, json: &[u8]) -> Vec<PartitionFetch> {
        let statistics = match serde_json::from_slice::<Statistics>(json) {
            Ok(statistics) => statistics,
            Err(error) => {
                tracing::debug!(client = %who, %error, "unreadable librdkafka statistics");
                return Vec::new();
            }
        };
        let said = lock(&self.state).reachability(statistics.any_broker_up(), Instant::now());
        say(who, said);
        statistics.fetches()
    }

    /// The consumer got an assignment: the group coordinator answered.
    pub fn assigned(&self, who: &dyn Display) {
        let said = lock(&self.state).reachability(true, Instant::now());
        say(who, said);
    }

    /// Since when, and why, no broker could be reached, if that is the case now.
    pub fn brokers_down(&self) -> Option<BrokersDown> {
        lock(&self.state).down.as_ref().map(|d| BrokersDown { since: d.since, why: d.why.clone() })
    }
}

/// Who keeps a client's [`ClientLog`] (a pipeline keeps its consumer's, for its
/// health checks).
pub(crate) trait ClientLogOwner {
    /// The owner's name, for the client's log lines (the pipeline's).
    fn client_name(&self) -> &str;
    /// Its log state.
    fn client_log(&self) -> &ClientLog;
}

/// The log state of every producer of the process (outputs and dead letters,
/// transactions). They all write to the brokers of one config, so a broker outage
/// is told once for all of them.
pub(crate) fn producers() -> &'static ClientLog {
    static PRODUCERS: LazyLock<ClientLog> = LazyLock::new(ClientLog::default);
    &PRODUCERS
}

/// A pipeline's consumer, as log lines name it.
pub(crate) struct ConsumerOf<'a>(pub &'a str);

impl Display for ConsumerOf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "consumer of pipeline {}", self.0)
    }
}

thread_local! {
    /// The error a client context reported last on this thread. rdkafka hands a
    /// consumer's error events to its context and then returns them from `poll`:
    /// the context has told it already, so the pipeline's copy is not told again.
    static JUST_REPORTED: RefCell<Option<RDKafkaErrorCode>> = const { RefCell::new(None) };
}

/// Whether `error` (as the pipeline's poll returned it) is the one a client context
/// just reported on this thread. Consumes the mark.
fn just_reported(error: &str) -> bool {
    JUST_REPORTED.with(|last| match last.borrow_mut().take() {
        Some(code) => {
            error == KafkaError::MessageConsumption(code).to_string()
                || error == KafkaError::MessageConsumptionFatal(code).to_string()
        }
        None => false,
    })
}

/// An outage in progress.
#[derive(Debug)]
struct Outage {
    since: Instant,
    why: String,
    /// Connection errors since the last line about it, and the latest one.
    failures: u64,
    last: Option<String>,
    told_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    down: Option<Outage>,
    /// A broker's connection error not yet followed by "all brokers down".
    lone_failure: Option<(String, Instant)>,
    repeated: RepeatedErrors,
}

/// A line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    /// No broker can be reached.
    Down { why: String },
    /// Still none, after `secs`.
    StillDown { secs: u64, failures: u64, last: Option<String> },
    /// A broker answers again, after `secs`.
    Up { secs: u64 },
    /// An error or warning, for the first time.
    First { text: String },
    /// It happened `repeats` more times since the last line.
    Repeats { text: String, repeats: u64 },
}

impl State {
    fn error(&mut self, error: &KafkaError, reason: &str, now: Instant) -> Vec<Said> {
        let mut said = self.lone_failure_alone(now);
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                if let Some(outage) = &mut self.down {
                    outage.failures += 1;
                    said.extend(self.summary(now));
                } else {
                    let why = match self.lone_failure.take() {
                        Some((failure, _)) => format!("{reason}: {failure}"),
                        None => reason.to_owned(),
                    };
                    said.push(Said::Down { why: why.clone() });
                    self.down = Some(Outage { since: now, why, failures: 0, last: None, told_at: now });
                }
            }
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve) => {
                if let Some(outage) = &mut self.down {
                    outage.failures += 1;
                    outage.last = Some(strip_counters(reason).to_owned());
                    said.extend(self.summary(now));
                } else {
                    self.lone_failure = Some((strip_counters(reason).to_owned(), now));
                }
            }
            _ => said.extend(self.repeated.report(&format!("{error}: {reason}"), now)),
        }
        said
    }

    fn warning(&mut self, facility: &str, message: &str, now: Instant) -> Vec<Said> {
        let mut said = self.lone_failure_alone(now);
        said.extend(self.repeated.report(&format!("{facility}: {}", strip_counters(message)), now));
        said
    }

    /// What the brokers' states (or an assignment) say: a broker is up, or not.
    fn reachability(&mut self, up: bool, now: Instant) -> Vec<Said> {
        let mut said = self.lone_failure_alone(now);
        if !up {
            said.extend(self.summary(now));
        } else if let Some(outage) = self.down.take() {
            said.push(Said::Up { secs: now.saturating_duration_since(outage.since).as_secs() });
        }
        said
    }

    /// A broker's connection error that "all brokers down" did not follow: one
    /// broker of several failed. Logged on its own, as an error that may repeat.
    fn lone_failure_alone(&mut self, now: Instant) -> Vec<Said> {
        match &self.lone_failure {
            Some((_, at)) if now.saturating_duration_since(*at) >= ALONE_AFTER => {
                let (failure, at) = self.lone_failure.take().expect("just matched");
                self.repeated.report(&failure, at)
            }
            _ => Vec::new(),
        }
    }

    /// The outage's summary line, when one is due.
    fn summary(&mut self, now: Instant) -> Vec<Said> {
        match &mut self.down {
            Some(outage) if now.saturating_duration_since(outage.told_at) >= SUMMARY_EVERY => {
                outage.told_at = now;
                vec![Said::StillDown {
                    secs: now.saturating_duration_since(outage.since).as_secs(),
                    failures: std::mem::take(&mut outage.failures),
                    last: outage.last.take(),
                }]
            }
            _ => Vec::new(),
        }
    }
}

/// Logs what `who`'s client state said.
fn say(who: &dyn Display, said: Vec<Said>) {
    for line in said {
        match line {
            Said::Down { why } => tracing::warn!(
                client = %who,
                "cannot reach any Kafka broker ({why}). ferry keeps trying, with a growing backoff, and carries on \
                 once a broker answers; /readyz says not ready meanwhile"
            ),
            Said::StillDown { secs, failures, last } => tracing::warn!(
                client = %who,
                failures,
                "still no Kafka broker reachable, for {secs} s; still trying{}",
                last.map(|l| format!(" (latest: {l})")).unwrap_or_default()
            ),
            Said::Up { secs } => tracing::info!(client = %who, "a Kafka broker answers again, after {secs} s"),
            Said::First { text } => tracing::warn!(client = %who, "{text}"),
            Said::Repeats { text, repeats } => tracing::warn!(client = %who, repeats, "still happening: {text}"),
        }
    }
}

/// librdkafka appends counters to repeated messages ("(after 3ms in state CONNECT,
/// 4 identical error(s) suppressed)"): without them, repeats are recognized.
fn strip_counters(message: &str) -> &str {
    match message.rfind(" (after ") {
        Some(at) if message.ends_with(')') => &message[..at],
        _ => message,
    }
}

/// Where a consumer fetches one of its partitions, from librdkafka's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    /// The partition.
    pub key: super::tracker::TopicPartition,
    /// The offset librdkafka fetches next.
    pub next_offset: i64,
    /// The end of what it may read: the last stable offset (the high watermark when
    /// the broker gives none).
    pub end_offset: i64,
    /// Records fetched and not yet taken by the application (the whole fetch queue
    /// when it is forwarded, as ferry does).
    pub queued: i64,
}

/// The parts of librdkafka's statistics that say which brokers are up, and where a
/// consumer fetches.
#[derive(Debug, serde::Deserialize)]
struct Statistics {
    #[serde(default)]
    brokers: HashMap<String, BrokerStatistics>,
    #[serde(default)]
    topics: HashMap<String, TopicStatistics>,
}

#[derive(Debug, serde::Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: HashMap<String, PartitionStatistics>,
}

#[derive(Debug, serde::Deserialize)]
struct PartitionStatistics {
    partition: i32,
    #[serde(default)]
    desired: bool,
    #[serde(default = "unknown")]
    next_offset: i64,
    #[serde(default = "unknown")]
    hi_offset: i64,
    #[serde(default = "unknown")]
    ls_offset: i64,
    #[serde(default)]
    fetchq_cnt: i64,
}

fn unknown() -> i64 {
    -1
}

#[derive(Debug, serde::Deserialize)]
struct BrokerStatistics {
    state: String,
    #[serde(default)]
    source: String,
}

impl Statistics {
    /// The partitions the consumer fetches (assigned, with a known position).
    fn fetches(&self) -> Vec<PartitionFetch> {
        let mut fetches: Vec<PartitionFetch> = self
            .topics
            .iter()
            .flat_map(|(topic, t)| t.partitions.values().map(move |p| (topic, p)))
            .filter(|(_, p)| p.desired && p.partition >= 0 && p.next_offset >= 0)
            .map(|(topic, p)| PartitionFetch {
                key: (topic.clone(), p.partition),
                next_offset: p.next_offset,
                end_offset: if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset },
                queued: p.fetchq_cnt,
            })
            .collect();
        fetches.sort_by(|a, b| a.key.cmp(&b.key));
        fetches
    }

    /// Whether a real broker (not librdkafka's internal or logical ones) is up.
    fn any_broker_up(&self) -> bool {
        self.brokers.values().any(|b| b.state == "UP" && matches!(b.source.as_str(), "configured" | "learned"))
    }
}

/// How many distinct texts are remembered.
const MAX_DISTINCT: usize = 1024;

/// Repeating errors, by their text: the first occurrence is logged, then a summary
/// at most every [`SUMMARY_EVERY`] while it repeats.
#[derive(Debug, Default)]
pub(crate) struct RepeatedErrors {
    seen: HashMap<String, Seen>,
}

#[derive(Debug)]
struct Seen {
    since_summary: u64,
    summarized_at: Instant,
}

impl RepeatedErrors {
    /// A consumer error of `pipeline`, as its loop polled it: logged the first time,
    /// then counted. An error the consumer's context just reported is not told twice.
    pub(crate) fn consumer_error(&mut self, pipeline: &str, error: &str) {
        if just_reported(error) {
            return;
        }
        for said in self.report(error, Instant::now()) {
            match said {
                Said::Repeats { repeats, .. } => {
                    tracing::warn!(pipeline, %error, repeats, "consumer error, still happening")
                }
                _ => tracing::warn!(pipeline, %error, "consumer error"),
            }
        }
    }

    /// What to log about `error` at `now`: the first occurrence, or a summary of
    /// the repeats since the last line when one is due.
    fn report(&mut self, error: &str, now: Instant) -> Vec<Said> {
        match self.seen.get_mut(error) {
            None => {
                if self.seen.len() >= MAX_DISTINCT {
                    // Texts that never repeat would grow the map forever.
                    self.seen.clear();
                }
                self.seen.insert(error.to_owned(), Seen { since_summary: 0, summarized_at: now });
                vec![Said::First { text: error.to_owned() }]
            }
            Some(seen) => {
                seen.since_summary += 1;
                if now.saturating_duration_since(seen.summarized_at) >= SUMMARY_EVERY {
                    seen.summarized_at = now;
                    vec![Said::Repeats { text: error.to_owned(), repeats: std::mem::take(&mut seen.since_summary) }]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFUSED: &str =
        "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused (after 0ms in state CONNECT)";

    fn transport() -> KafkaError {
        KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)
    }

    fn all_down() -> KafkaError {
        KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)
    }

    #[test]
    fn repeats_are_summarized() {
        let mut errors = RepeatedErrors::default();
        let start = Instant::now();
        let mut lines = Vec::new();
        for second in [0, 1, 2, 31, 32, 70] {
            for said in errors.report("down", start + Duration::from_secs(second)) {
                lines.push((second, said));
            }
        }
        lines.extend(errors.report("other", start).into_iter().map(|s| (0, s)));
        let first = |t: &str| Said::First { text: t.to_owned() };
        let repeats = |n| Said::Repeats { text: "down".to_owned(), repeats: n };
        assert_eq!(lines, [(0, first("down")), (31, repeats(3)), (70, repeats(2)), (0, first("other"))]);
    }

    #[test]
    fn an_outage_is_one_line_then_a_summary_every_30_s_then_one_line() {
        let mut state = State::default();
        let t0 = Instant::now();
        let mut said = state.error(&transport(), REFUSED, t0);
        said.extend(state.error(&all_down(), "1/1 brokers are down", t0));
        assert_eq!(
            said,
            [Said::Down {
                why: "1/1 brokers are down: 127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: \
                      Connection refused"
                    .to_owned()
            }]
        );
        assert!(state.down.is_some());
        // Retries and statistics within 30 s say nothing.
        for s in [1, 3, 7, 15, 29] {
            assert_eq!(state.error(&transport(), REFUSED, t0 + Duration::from_secs(s)), []);
            assert_eq!(state.reachability(false, t0 + Duration::from_secs(s)), []);
        }
        let summary = state.reachability(false, t0 + Duration::from_secs(30));
        assert!(matches!(&summary[..], [Said::StillDown { secs: 30, failures: 5, last: Some(_) }]), "{summary:?}");
        assert_eq!(state.error(&all_down(), "1/1 brokers are down", t0 + Duration::from_secs(31)), []);
        assert_eq!(state.reachability(true, t0 + Duration::from_secs(42)), [Said::Up { secs: 42 }]);
        assert!(state.down.is_none());
        assert_eq!(state.reachability(true, t0 + Duration::from_secs(47)), []);
    }

    #[test]
    fn one_broker_of_several_failing_is_an_error_not_an_outage() {
        let mut state = State::default();
        let t0 = Instant::now();
        assert_eq!(state.error(&transport(), REFUSED, t0), []);
        let said = state.reachability(true, t0 + ALONE_AFTER);
        assert!(matches!(&said[..], [Said::First { text }] if !text.contains("(after")), "{said:?}");
        assert!(state.down.is_none());
    }

    #[test]
    fn other_errors_and_warnings_repeat_quietly() {
        let mut state = State::default();
        let t0 = Instant::now();
        let error = KafkaError::Global(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!(state.error(&error, "orders", t0).len(), 1);
        assert_eq!(state.error(&error, "orders", t0 + Duration::from_secs(5)), []);
        assert_eq!(state.warning("CONFWARN", "x (after 1ms in state UP)", t0).len(), 1);
        assert_eq!(state.warning("CONFWARN", "x (after 9ms in state UP)", t0), []);
    }

    #[test]
    fn a_polled_copy_of_a_reported_error_is_not_told_twice() {
        let log = ClientLog::default();
        log.error(&"test", &all_down(), "1/1 brokers are down");
        let polled = KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown).to_string();
        assert!(just_reported(&polled));
        assert!(!just_reported(&polled), "only the copy right after the report");
    }

    #[test]
    fn broker_states_come_from_the_statistics() {
        let json = |state: &str, source: &str| {
            format!(r#"{{"name":"x","brokers":{{"b:1/1":{{"state":"{state}","source":"{source}","nodeid":1}}}}}}"#)
        };
        let up = |text: String| serde_json::from_str::<Statistics>(&text).unwrap().any_broker_up();
        assert!(up(json("UP", "learned")));
        assert!(up(json("UP", "configured")));
        assert!(!up(json("DOWN", "learned")));
        assert!(!up(json("UP", "logical")));
        assert!(!up(r#"{"name":"x"}"#.to_owned()));
    }
}
