//! The independent checker: what the broker holds, what the recorder guest says it
//! was handed, and committed offsets sampled over time, against the promises of
//! at-least-once delivery. It trusts nothing ferry reports about itself.
//!
//! Inputs:
//! - the input topic, the recorder's `seen` outputs and the dead-letter topic, read
//!   back with a separate client;
//! - every delivery the recorder logged (`ledger delivered ...`, with a nonce), its
//!   outcome, and the assignment changes the member logged, from each process's log
//!   (child processes) or the in-process capture ([`crate::captured_log`]); a
//!   member incarnation is a pipeline name, unique per process start in the tests,
//!   and named after its group: the group itself or `<group>.<anything>`; with
//!   `workers` > 1, each worker (its lines carry `worker=<n>`) is an incarnation;
//! - the group's committed offsets, sampled while the scenario runs
//!   ([`CommitSampler`]).
//!
//! Anomalies, named after Jepsen's Kafka checker:
//! - **lost**: an input record below the final committed offset that was never
//!   finished (published by a processed delivery, or dead-lettered);
//! - **duplicate** (outside the allowed window): a record published twice where the
//!   second processing did not come from resuming at the group's bookmark (only
//!   records uncommitted at a crash or revoke may come again);
//! - **backwards commit**: a committed offset that moved back;
//! - **nonmonotonic poll**: within one assignment of one incarnation, a delivery
//!   going back to a record already published in that assignment;
//! - **poll skip**: within one assignment, an existing record between the first
//!   and the last delivered that was never delivered (nor dead-lettered);
//! - **unprocessed output**: a published output whose delivery did not end
//!   processed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::{lag, read_all};

/// A committed offset seen at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read (after the answer came).
    pub at: SystemTime,
    /// The partition.
    pub partition: i32,
    /// The committed offset.
    pub committed: i64,
}

/// Samples a group's committed offsets every few milliseconds until stopped.
pub struct CommitSampler {
    stop: Arc<AtomicBool>,
    /// The sum over partitions of the last committed offsets seen.
    committed: Arc<AtomicI64>,
    thread: JoinHandle<Vec<Sample>>,
}

impl CommitSampler {
    /// Starts sampling `group` on `topic`.
    pub fn start(brokers: &str, group: &str, topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicI64::new(0));
        let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
        let thread = std::thread::spawn({
            let (stop, total) = (stop.clone(), committed.clone());
            move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rows) = ferry_host::kafka::offsets::show(
                        &brokers,
                        &Default::default(),
                        &group,
                        std::slice::from_ref(&topic),
                    ) {
                        let at = SystemTime::now();
                        samples.extend(rows.iter().filter_map(|r| {
                            r.committed.map(|committed| Sample { at, partition: r.partition, committed })
                        }));
                        total.store(rows.iter().filter_map(|r| r.committed).sum(), Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                samples
            }
        });
        CommitSampler { stop, committed, thread }
    }

    /// The sum over partitions of the committed offsets last seen: how many records
    /// the group has committed so far (offsets start at 0).
    pub fn committed_total(&self) -> i64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Stops and returns every sample, oldest first.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the sampler does not panic")
    }
}

/// One record handed to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivery {
    incarnation: String,
    partition: i32,
    offset: i64,
    nonce: u64,
    at: SystemTime,
    /// The assignment of the partition to this incarnation it happened in.
    session: usize,
}

/// When `partition`/`offset` of `topic` was handed to a guest, per these logs, in
/// order.
pub fn delivery_times(logs: &[String], group: &str, topic: &str, partition: i32, offset: i64) -> Vec<SystemTime> {
    let mut times: Vec<SystemTime> = ledger(logs, group, topic)
        .deliveries
        .iter()
        .filter(|d| d.partition == partition && d.offset == offset)
        .map(|d| d.at)
        .collect();
    times.sort();
    times
}

/// The outcomes the guest logged for `partition`/`offset` of `topic`, in order.
pub fn outcomes(logs: &[String], group: &str, topic: &str, partition: i32, offset: i64) -> Vec<String> {
    let ledger = ledger(logs, group, topic);
    ledger
        .deliveries
        .iter()
        .filter(|d| d.partition == partition && d.offset == offset)
        .filter_map(|d| ledger.outcomes.get(&d.nonce).cloned())
        .collect()
}

/// Every (partition, offset) of `topic` handed to a guest of `group`, per these logs.
pub fn delivered(logs: &[String], group: &str, topic: &str) -> BTreeSet<(i32, i64)> {
    ledger(logs, group, topic).deliveries.iter().map(|d| (d.partition, d.offset)).collect()
}

/// What was handed out, per the logs.
#[derive(Debug, Default)]
struct Ledger {
    deliveries: Vec<Delivery>,
    /// nonce -> result word.
    outcomes: HashMap<u64, String>,
}

/// Whether pipeline `name` is a member incarnation of `group`.
fn member_of(name: &str, group: &str) -> bool {
    name == group || name.strip_prefix(group).is_some_and(|rest| rest.starts_with('.'))
}

/// Reads the ledger of `group` on `topic` from log texts: one text per process (or
/// the in-process capture). Sessions are numbered per (incarnation, partition) by
/// the member's "partitions assigned" lines.
fn ledger(logs: &[String], group: &str, topic: &str) -> Ledger {
    let mut ledger = Ledger::default();
    // (incarnation, partition) -> current session; sessions are numbered globally.
    let mut current: HashMap<(String, i32), usize> = HashMap::new();
    let mut sessions = 0;
    for text in logs {
        for raw in text.lines() {
            let line = strip_ansi(raw);
            let Some(name) = field(&line, "pipeline") else { continue };
            if !member_of(name, group) {
                continue;
            }
            // Each worker of a pipeline is a member of its own: its lines (assignment
            // changes, and the guest's, in its batch span) name it.
            let member = match field(&line, "worker") {
                Some(worker) => format!("{name}#{worker}"),
                None => name.to_owned(),
            };
            let pipeline = member.as_str();
            if line.contains("partitions assigned") {
                for (t, p) in partitions_in(&line) {
                    if t == topic {
                        sessions += 1;
                        current.insert((pipeline.to_owned(), p), sessions);
                    }
                }
            } else if line.contains("partitions revoked") {
                for (t, p) in partitions_in(&line) {
                    if t == topic {
                        current.remove(&(pipeline.to_owned(), p));
                    }
                }
            } else if let Some(rest) = line.split_once("ledger delivered ").map(|(_, r)| r) {
                let tp = field(rest, "tp").unwrap_or_default();
                let Some((t, p)) = tp.rsplit_once('/') else { continue };
                if t != topic {
                    continue;
                }
                let partition: i32 = p.parse().expect("partition");
                let session = *current.entry((pipeline.to_owned(), partition)).or_insert_with(|| {
                    sessions += 1;
                    sessions
                });
                ledger.deliveries.push(Delivery {
                    incarnation: pipeline.to_owned(),
                    partition,
                    offset: field(rest, "offset").and_then(|o| o.parse().ok()).expect("offset"),
                    nonce: field(rest, "nonce").and_then(|n| n.parse().ok()).expect("nonce"),
                    at: timestamp(&line).expect("a timestamped line"),
                    session,
                });
            } else if let Some(rest) = line.split_once("ledger outcome ").map(|(_, r)| r) {
                let nonce = field(rest, "nonce").and_then(|n| n.parse().ok()).expect("nonce");
                ledger.outcomes.insert(nonce, field(rest, "result").unwrap_or_default().to_owned());
            }
        }
    }
    ledger
}

/// A published output of the recorder: which delivery made it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    partition: i32,
    offset: i64,
    nonce: u64,
}

/// What the checker found.
#[derive(Debug, Default)]
pub struct Report {
    /// Input records.
    pub inputs: usize,
    /// Records handed to guests, redeliveries included.
    pub deliveries: usize,
    /// Records published (processed) at least once.
    pub processed: usize,
    /// Records dead-lettered.
    pub dead_lettered: usize,
    /// Records finished one way or the other (published or dead-lettered).
    pub finished: usize,
    /// Lost records: (partition, offset).
    pub lost: Vec<(i32, i64)>,
    /// Records published more than once, within the allowed window: (partition,
    /// offset, times).
    pub allowed_duplicates: Vec<(i32, i64, usize)>,
    /// Duplicates outside it, and why.
    pub duplicates: Vec<String>,
    /// Committed offsets that moved back.
    pub backwards_commits: Vec<String>,
    /// Deliveries that went back to a record already published in the same
    /// assignment.
    pub nonmonotonic: Vec<String>,
    /// Records an assignment skipped.
    pub skips: Vec<String>,
    /// Outputs of deliveries that did not end processed.
    pub unprocessed_outputs: Vec<String>,
}

impl Report {
    /// Panics with the whole report if anything is wrong.
    pub fn assert_sound(&self) {
        assert!(
            self.deliveries >= self.processed,
            "the ledger holds fewer deliveries than records were processed: were the logs read?\n{}",
            self.summary()
        );
        let sound = self.lost.is_empty()
            && self.duplicates.is_empty()
            && self.backwards_commits.is_empty()
            && self.nonmonotonic.is_empty()
            && self.skips.is_empty()
            && self.unprocessed_outputs.is_empty();
        assert!(sound, "the checker found anomalies:\n{}", self.summary());
    }

    /// The report, for people.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} inputs, {} deliveries, {} processed, {} dead-lettered, {} finished\n",
            self.inputs, self.deliveries, self.processed, self.dead_lettered, self.finished
        );
        let dups: usize = self.allowed_duplicates.iter().map(|(_, _, n)| n - 1).sum();
        let _ = writeln!(
            out,
            "duplicates within the allowed window: {dups} (of {} records)",
            self.allowed_duplicates.len()
        );
        let mut section = |name: &str, items: Vec<String>| {
            let _ = writeln!(out, "{name}: {}", items.len());
            for item in items.iter().take(20) {
                let _ = writeln!(out, "  {item}");
            }
        };
        section("lost", self.lost.iter().map(|(p, o)| format!("{p}/{o}")).collect());
        section("duplicates outside the allowed window", self.duplicates.clone());
        section("backwards commits", self.backwards_commits.clone());
        section("nonmonotonic polls", self.nonmonotonic.clone());
        section("poll skips", self.skips.clone());
        section("outputs of unprocessed deliveries", self.unprocessed_outputs.clone());
        out
    }
}

/// Checks a run of the recorder over `input` for `group`: outputs in `seen`, dead
/// letters in `dead_letters` (if the pipeline has them).
pub fn check(
    brokers: &str,
    input: &str,
    group: &str,
    dead_letters: Option<&str>,
    logs: &[String],
    samples: &[Sample],
) -> Report {
    let existing: BTreeSet<(i32, i64)> = read_all(brokers, input).iter().map(|r| (r.partition, r.offset)).collect();
    let committed: BTreeMap<i32, i64> =
        lag(brokers, group, input).iter().map(|p| (p.partition, p.committed.unwrap_or(0))).collect();
    let published: Vec<Published> = read_all(brokers, "seen")
        .iter()
        .filter_map(|r| {
            // <incarnation>/<topic>/<partition>/<offset>/<nonce>; the topic may hold '/'-free names only.
            let parts: Vec<&str> = r.value.rsplitn(4, '/').collect();
            let [nonce, offset, partition, rest] = parts[..] else { return None };
            let incarnation = rest.strip_suffix(&format!("/{input}"))?;
            member_of(incarnation, group).then(|| Published {
                partition: partition.parse().expect("partition"),
                offset: offset.parse().expect("offset"),
                nonce: nonce.parse().expect("nonce"),
            })
        })
        .collect();
    let dead: BTreeSet<(i32, i64)> = dead_letters
        .map(|topic| {
            read_all(brokers, topic)
                .iter()
                .filter(|r| r.header("ferry.topic") == Some(input))
                .map(|r| {
                    let partition = r.header("ferry.partition").and_then(|p| p.parse().ok()).expect("partition");
                    let offset = r.header("ferry.offset").and_then(|o| o.parse().ok()).expect("offset");
                    (partition, offset)
                })
                .collect()
        })
        .unwrap_or_default();
    let ledger = ledger(logs, group, input);
    let by_nonce: HashMap<u64, &Delivery> = ledger.deliveries.iter().map(|d| (d.nonce, d)).collect();
    let processed: BTreeSet<(i32, i64)> = published.iter().map(|p| (p.partition, p.offset)).collect();

    let mut report = Report {
        inputs: existing.len(),
        deliveries: ledger.deliveries.len(),
        processed: processed.len(),
        dead_lettered: dead.len(),
        finished: processed.union(&dead).count(),
        ..Report::default()
    };
    report.lost = existing
        .iter()
        .filter(|(p, o)| committed.get(p).is_some_and(|c| o < c))
        .filter(|key| !processed.contains(key) && !dead.contains(key))
        .copied()
        .collect();

    report.backwards_commits = backwards_commits(samples);

    // Outputs of deliveries that did not end processed.
    for p in &published {
        match ledger.outcomes.get(&p.nonce).map(String::as_str) {
            Some("processed") => {}
            other => report
                .unprocessed_outputs
                .push(format!("{}/{} (nonce {}) ended {other:?}", p.partition, p.offset, p.nonce)),
        }
    }

    // Duplicates: every publication after a record's first must come from an
    // assignment that resumed at (or below) it, from the group's bookmark then.
    let mut publications: BTreeMap<(i32, i64), Vec<&Delivery>> = BTreeMap::new();
    for p in &published {
        match by_nonce.get(&p.nonce) {
            Some(d) => publications.entry((p.partition, p.offset)).or_default().push(d),
            None => report
                .unprocessed_outputs
                .push(format!("{}/{}: no delivery logged for nonce {}", p.partition, p.offset, p.nonce)),
        }
    }
    let session_start: HashMap<usize, (i64, SystemTime)> = {
        let mut starts: HashMap<usize, (i64, SystemTime)> = HashMap::new();
        for d in &ledger.deliveries {
            starts.entry(d.session).or_insert((d.offset, d.at));
        }
        starts
    };
    let committed_before = |partition: i32, at: SystemTime| -> i64 {
        samples.iter().filter(|s| s.partition == partition && s.at < at).map(|s| s.committed).max().unwrap_or(i64::MIN)
    };
    for ((partition, offset), mut times) in publications {
        if times.len() < 2 {
            continue;
        }
        times.sort_by_key(|d| d.at);
        let sessions: BTreeSet<usize> = times.iter().map(|d| d.session).collect();
        if sessions.len() < times.len() {
            report.duplicates.push(format!("{partition}/{offset}: published twice within one assignment"));
            continue;
        }
        for later in &times[1..] {
            let (start, started_at) = session_start[&later.session];
            let bookmark = committed_before(partition, started_at);
            if start > offset || start < bookmark {
                report.duplicates.push(format!(
                    "{partition}/{offset}: processed again by {} in an assignment that started at {start} while the \
                     bookmark was {bookmark}",
                    later.incarnation
                ));
            }
        }
        report.allowed_duplicates.push((partition, offset, times.len()));
    }

    // Nonmonotonic polls and skips, per assignment.
    let published_nonces: HashMap<u64, (i32, i64)> =
        published.iter().map(|p| (p.nonce, (p.partition, p.offset))).collect();
    let mut by_session: BTreeMap<usize, Vec<&Delivery>> = BTreeMap::new();
    for d in &ledger.deliveries {
        by_session.entry(d.session).or_default().push(d);
    }
    for deliveries in by_session.values() {
        let partition = deliveries[0].partition;
        let mut published_here: BTreeSet<i64> = BTreeSet::new();
        for d in deliveries {
            if published_here.contains(&d.offset) {
                report.nonmonotonic.push(format!(
                    "{} went back to {partition}/{} after publishing it in the same assignment",
                    d.incarnation, d.offset
                ));
            }
            if published_nonces.contains_key(&d.nonce) {
                published_here.insert(d.offset);
            }
        }
        let delivered: BTreeSet<i64> = deliveries.iter().map(|d| d.offset).collect();
        let (first, last) = (*delivered.first().expect("a session has deliveries"), *delivered.last().expect("one"));
        for &(p, o) in existing.range((partition, first)..=(partition, last)) {
            if !delivered.contains(&o) && !dead.contains(&(p, o)) {
                report
                    .skips
                    .push(format!("{} skipped {p}/{o} (delivered {first}..={last})", deliveries[0].incarnation));
            }
        }
    }
    report
}

/// `name=value` (or `name="value"`) in a log line.
fn field<'l>(line: &'l str, name: &str) -> Option<&'l str> {
    let at = line.find(&format!(" {name}=")).or_else(|| line.starts_with(&format!("{name}=")).then_some(0))?;
    let rest = &line[at..].trim_start()[name.len() + 1..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next()
    } else {
        rest.split([' ', ',', '}']).next()
    }
}

/// The `("topic", partition)` pairs of an assignment line.
fn partitions_in(line: &str) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("(\"") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("\", ") else { break };
        let topic = after[..end].to_owned();
        let tail = &after[end + 3..];
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(partition) = digits.parse() {
            out.push((topic, partition));
        }
        rest = tail;
    }
    out
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The RFC 3339 UTC timestamp tracing starts each line with.
fn timestamp(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<u64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let micros: u64 = format!("{frac:0<6}")[..6].parse().ok()?;
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
}

/// Committed offsets that moved back, per partition, in time order.
pub fn backwards_commits(samples: &[Sample]) -> Vec<String> {
    let mut found = Vec::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for s in samples {
        if let Some(&before) = last.get(&s.partition)
            && s.committed < before
        {
            found.push(format!("partition {}: {before} then {}", s.partition, s.committed));
        }
        last.insert(s.partition, s.committed.max(*last.get(&s.partition).unwrap_or(&i64::MIN)));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_timestamps_and_assignments() {
        let line = "2026-11-28T22:02:13.274631Z  INFO ferry::guest: ledger delivered inc=a tp=in/3 offset=17 nonce=99 pipeline=\"rec-1\" stream=log";
        assert_eq!(field(line, "tp"), Some("in/3"));
        assert_eq!(field(line, "pipeline"), Some("rec-1"));
        assert_eq!(field(line, "offset"), Some("17"));
        let at = timestamp(line).unwrap().duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(at.as_secs(), 1_795_903_333);
        assert_eq!(at.subsec_micros(), 274_631);
        let assigned = "2026-01-01T00:00:00Z INFO ferry_host::pipeline::shared: partitions assigned pipeline=p partitions=[(\"in\", 0), (\"in\", 12)]";
        assert_eq!(partitions_in(assigned), [("in".to_owned(), 0), ("in".to_owned(), 12)]);
        assert_eq!(strip_ansi("\u{1b}[2mx\u{1b}[0m y"), "x y");
    }

    #[test]
    fn a_ledger_splits_deliveries_into_assignments() {
        let log = [
            "2026-01-01T00:00:01Z INFO shared: partitions assigned pipeline=a partitions=[(\"in\", 0)]",
            "2026-01-01T00:00:02Z INFO ferry::guest: ledger delivered inc=a tp=in/0 offset=0 nonce=1 pipeline=a",
            "2026-01-01T00:00:02Z INFO ferry::guest: ledger outcome nonce=1 result=processed pipeline=a",
            "2026-01-01T00:00:03Z INFO shared: partitions revoked pipeline=a partitions=[(\"in\", 0)]",
            "2026-01-01T00:00:04Z INFO shared: partitions assigned pipeline=a partitions=[(\"in\", 0)]",
            "2026-01-01T00:00:05Z INFO ferry::guest: ledger delivered inc=a tp=in/0 offset=1 nonce=2 pipeline=a",
        ]
        .join("\n");
        let ledger = ledger(&[log], "a", "in");
        assert_eq!(ledger.deliveries.len(), 2);
        assert_ne!(ledger.deliveries[0].session, ledger.deliveries[1].session);
        assert_eq!(ledger.outcomes[&1], "processed");
    }

    /// Two workers of one pipeline are two members: a partition handed from worker 0
    /// to worker 1 starts a new assignment even when worker 1's assignment is logged
    /// before worker 0's revoke (their threads log independently).
    #[test]
    fn each_worker_is_a_member_of_its_own() {
        let batch = |w: u32| format!("batch{{pipeline=a worker={w} topic=in partition=0}}: ferry::guest:");
        let log = [
            "2026-01-01T00:00:01Z INFO shared: partitions assigned pipeline=a worker=0 partitions=[(\"in\", 0)]"
                .to_owned(),
            format!(
                "2026-01-01T00:00:02Z INFO {} ledger delivered inc=a tp=in/0 offset=0 nonce=1 pipeline=a",
                batch(0)
            ),
            "2026-01-01T00:00:03Z INFO shared: partitions assigned pipeline=a worker=1 partitions=[(\"in\", 0)]"
                .to_owned(),
            "2026-01-01T00:00:03Z INFO shared: partitions revoked pipeline=a worker=0 partitions=[(\"in\", 0)]"
                .to_owned(),
            format!(
                "2026-01-01T00:00:04Z INFO {} ledger delivered inc=a tp=in/0 offset=1 nonce=2 pipeline=a",
                batch(1)
            ),
            format!(
                "2026-01-01T00:00:05Z INFO {} ledger delivered inc=a tp=in/0 offset=2 nonce=3 pipeline=a",
                batch(1)
            ),
        ]
        .join("\n");
        let ledger = ledger(&[log], "a", "in");
        let members: Vec<&str> = ledger.deliveries.iter().map(|d| d.incarnation.as_str()).collect();
        assert_eq!(members, ["a#0", "a#1", "a#1"]);
        let sessions: Vec<usize> = ledger.deliveries.iter().map(|d| d.session).collect();
        assert_eq!(sessions, [1, 2, 2], "worker 0's revoke does not end worker 1's assignment");
    }
}
