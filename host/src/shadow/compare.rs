//! The comparison of a shadow version against the live one, record by record. Pure
//! code: no Kafka, no guest, so it is property-tested like the offset tracker.
//!
//! Per record, both sides must agree on the outcome (processed, retry, reject, or a
//! fault) and on the outputs, as (topic, key, value, headers), in order or as a
//! multiset. State writes are per batch (the host cannot tell which record made
//! which write), so they are compared per batch and a difference names the batch's
//! offsets. Headers and JSON fields a pipeline declares as noise (timestamps) are
//! left out of both sides before comparing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// How outputs of one record are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputOrder {
    /// The same records in the same order.
    #[default]
    Ordered,
    /// The same records, each as often, in any order.
    Multiset,
}

/// What a pipeline compares, and how much of the differences it keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Order of outputs.
    pub order: OutputOrder,
    /// Header names left out of both sides.
    pub ignore_headers: Vec<String>,
    /// Fields of JSON values left out of both sides, as dotted paths (`meta.ts`).
    pub ignore_fields: Vec<String>,
    /// How many differences are kept in full (the rest are counted).
    pub keep: usize,
}

/// What became of one record on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done.
    Processed,
    /// To be tried again, with the guest's reason.
    Retry(String),
    /// Rejected for good (dead-lettered by policy), with the guest's reason.
    Reject(String),
    /// The guest trapped, ran out of time or resources on it.
    Fault(String),
    /// Not known: the side did not get to it (out of time with others, host stopping).
    Unknown,
}

impl Verdict {
    /// The kind alone: reasons are not compared (a reworded reason is not a change
    /// of behaviour downstream; what is dead-lettered is).
    fn kind(&self) -> &'static str {
        match self {
            Verdict::Processed => "processed",
            Verdict::Retry(_) => "retry",
            Verdict::Reject(_) => "reject",
            Verdict::Fault(_) => "fault",
            Verdict::Unknown => "unknown",
        }
    }

    fn describe(&self) -> String {
        match self {
            Verdict::Processed | Verdict::Unknown => self.kind().to_owned(),
            Verdict::Retry(why) | Verdict::Reject(why) | Verdict::Fault(why) => format!("{} ({why})", self.kind()),
        }
    }
}

/// One output record, as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Output {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One record on one side: its verdict and what it emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Side {
    /// Outcome.
    pub verdict: Verdict,
    /// Outputs, in the order the guest emitted them.
    pub outputs: Vec<Output>,
}

/// A state write: a key set (`Some`) or deleted (`None`).
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// One difference, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: i32,
    /// The record's offset (for state: the batch's first).
    pub offset: i64,
    /// For state: the batch's last offset; for a record, its own.
    pub last_offset: i64,
    /// What differs: `outcome`, `outputs` or `state`.
    pub aspects: Vec<&'static str>,
    /// The live side, rendered.
    pub live: String,
    /// The shadow side, rendered.
    pub shadow: String,
    /// A line per difference: `-` the live side, `+` the shadow's.
    pub diff: String,
}

/// The counts of a comparison so far, and the first differences.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Records both sides ran to a verdict, and compared.
    pub compared: u64,
    /// Of which the same.
    pub equal: u64,
    /// Of which different.
    pub different: u64,
    /// Records not compared: a side did not get to them, or the shadow skipped their
    /// batch.
    pub skipped: u64,
    /// Batches the shadow did not run (over its share of time).
    pub skipped_batches: u64,
    /// Batches in which the shadow ran out of its time limit (the records it did not
    /// finish there are skipped: which of them held it up is not known).
    pub shadow_timeouts: u64,
    /// Batches whose state writes were compared.
    pub state_batches: u64,
    /// Of which different.
    pub state_different: u64,
    /// The first differences, up to [`Rules::keep`].
    pub differences: Vec<Difference>,
}

impl Tally {
    /// Compares one record of `topic`/`partition` at `offset`.
    pub fn record(&mut self, rules: &Rules, at: (&str, i32, i64), live: &Side, shadow: &Side) {
        if live.verdict == Verdict::Unknown || shadow.verdict == Verdict::Unknown {
            self.skipped += 1;
            return;
        }
        self.compared += 1;
        match compare_record(rules, live, shadow) {
            None => self.equal += 1,
            Some((aspects, diff)) => {
                self.different += 1;
                if !self.has_room(rules) {
                    return;
                }
                self.keep(
                    rules,
                    Difference {
                        topic: at.0.to_owned(),
                        partition: at.1,
                        offset: at.2,
                        last_offset: at.2,
                        aspects,
                        live: render_side(live),
                        shadow: render_side(shadow),
                        diff,
                    },
                );
            }
        }
    }

    /// Compares the state writes of one batch (offsets `first..=last`), each side's
    /// in key order.
    pub fn state(&mut self, rules: &Rules, at: (&str, i32, i64, i64), live: &[Write], shadow: &[Write]) {
        self.state_batches += 1;
        if let Some(diff) = compare_writes(live, shadow) {
            self.state_different += 1;
            if !self.has_room(rules) {
                return;
            }
            self.keep(
                rules,
                Difference {
                    topic: at.0.to_owned(),
                    partition: at.1,
                    offset: at.2,
                    last_offset: at.3,
                    aspects: vec!["state"],
                    live: render_writes(live),
                    shadow: render_writes(shadow),
                    diff,
                },
            );
        }
    }

    /// Counts a batch of `records` the shadow did not run.
    pub fn skip_batch(&mut self, records: u64) {
        self.skipped_batches += 1;
        self.skipped += records;
    }

    /// Whether another difference is kept in full: both sides are rendered only then
    /// (a version that differs everywhere would otherwise pay for it on every record).
    fn has_room(&self, rules: &Rules) -> bool {
        self.differences.len() < rules.keep
    }

    fn keep(&mut self, rules: &Rules, difference: Difference) {
        if self.differences.len() < rules.keep {
            self.differences.push(difference);
        }
    }
}

/// `None` if the two sides agree under `rules`; otherwise what differs and a
/// readable diff.
pub fn compare_record(rules: &Rules, live: &Side, shadow: &Side) -> Option<(Vec<&'static str>, String)> {
    let mut aspects = Vec::new();
    let mut diff = String::new();
    if live.verdict.kind() != shadow.verdict.kind() {
        aspects.push("outcome");
        let _ = writeln!(diff, "- outcome: {}", live.verdict.describe());
        let _ = writeln!(diff, "+ outcome: {}", shadow.verdict.describe());
    }
    let ours: Vec<Output> = live.outputs.iter().map(|o| normalize(rules, o)).collect();
    let theirs: Vec<Output> = shadow.outputs.iter().map(|o| normalize(rules, o)).collect();
    let outputs = match rules.order {
        OutputOrder::Ordered => diff_ordered(&ours, &theirs),
        OutputOrder::Multiset => diff_multiset(&ours, &theirs),
    };
    if !outputs.is_empty() {
        aspects.push("outputs");
        diff += &outputs;
    }
    (!aspects.is_empty()).then_some((aspects, diff))
}

/// `None` if both batches wrote the same; otherwise a readable diff.
pub fn compare_writes(live: &[Write], shadow: &[Write]) -> Option<String> {
    if live == shadow {
        return None;
    }
    let ours: BTreeMap<&[u8], Option<&[u8]>> = live.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
    let theirs: BTreeMap<&[u8], Option<&[u8]>> = shadow.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
    let mut diff = String::new();
    let keys: std::collections::BTreeSet<&[u8]> = ours.keys().chain(theirs.keys()).copied().collect();
    for key in keys {
        let (a, b) = (ours.get(key), theirs.get(key));
        if a == b {
            continue;
        }
        if let Some(a) = a {
            let _ = writeln!(diff, "- state {}", render_write(key, *a));
        }
        if let Some(b) = b {
            let _ = writeln!(diff, "+ state {}", render_write(key, *b));
        }
    }
    Some(diff)
}

/// Position by position: a line for each output that is not the same at its index.
fn diff_ordered(ours: &[Output], theirs: &[Output]) -> String {
    let mut diff = String::new();
    for i in 0..ours.len().max(theirs.len()) {
        let (a, b) = (ours.get(i), theirs.get(i));
        if a == b {
            continue;
        }
        if let Some(a) = a {
            let _ = writeln!(diff, "- output[{i}] {}", render_output(a));
        }
        if let Some(b) = b {
            let _ = writeln!(diff, "+ output[{i}] {}", render_output(b));
        }
    }
    diff
}

/// What one side has more often than the other.
fn diff_multiset(ours: &[Output], theirs: &[Output]) -> String {
    let mut counts: BTreeMap<&Output, i64> = BTreeMap::new();
    for o in ours {
        *counts.entry(o).or_default() += 1;
    }
    for o in theirs {
        *counts.entry(o).or_default() -= 1;
    }
    let mut diff = String::new();
    for (output, n) in counts {
        let sign = if n > 0 { '-' } else { '+' };
        for _ in 0..n.unsigned_abs() {
            let _ = writeln!(diff, "{sign} output {}", render_output(output));
        }
    }
    diff
}

/// The output with the ignored headers and JSON fields left out.
fn normalize(rules: &Rules, output: &Output) -> Output {
    let mut output = output.clone();
    if !rules.ignore_headers.is_empty() {
        output.headers.retain(|(name, _)| !rules.ignore_headers.iter().any(|i| i == name));
    }
    if !rules.ignore_fields.is_empty() {
        output.value = output.value.map(|v| without_fields(&rules.ignore_fields, v));
    }
    output
}

/// A JSON value without the `fields` (dotted paths); anything else as it was.
fn without_fields(fields: &[String], value: Vec<u8>) -> Vec<u8> {
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&value) else { return value };
    for field in fields {
        let path: Vec<&str> = field.split('.').collect();
        remove_path(&mut json, &path);
    }
    // Maps serialize in key order, so both sides come out the same way.
    serde_json::to_vec(&json).unwrap_or(value)
}

fn remove_path(json: &mut serde_json::Value, path: &[&str]) {
    match path {
        [] => {}
        [last] => {
            if let Some(object) = json.as_object_mut() {
                object.remove(*last);
            }
        }
        [step, rest @ ..] => {
            if let Some(next) = json.get_mut(*step) {
                remove_path(next, rest);
            }
        }
    }
}

/// Longest bytes shown of a key, value or header.
const SHOWN: usize = 120;

/// Bytes as text when they are UTF-8 (escaped, cut), else as hex.
fn bytes(b: Option<&[u8]>) -> String {
    let Some(b) = b else { return "null".to_owned() };
    match std::str::from_utf8(b) {
        Ok(text) => {
            let cut: String = text.chars().take(SHOWN).collect();
            let more = if cut.len() < text.len() { "…" } else { "" };
            format!("{:?}{more}", cut)
        }
        Err(_) => {
            let hex: String = b.iter().take(SHOWN / 2).map(|x| format!("{x:02x}")).collect();
            let more = if b.len() > SHOWN / 2 { "…" } else { "" };
            format!("0x{hex}{more}")
        }
    }
}

fn render_output(o: &Output) -> String {
    let mut s = format!("{} key={} value={}", o.topic, bytes(o.key.as_deref()), bytes(o.value.as_deref()));
    if !o.headers.is_empty() {
        let headers: Vec<String> = o.headers.iter().map(|(n, v)| format!("{n}={}", bytes(v.as_deref()))).collect();
        let _ = write!(s, " headers[{}]", headers.join(", "));
    }
    s
}

fn render_side(side: &Side) -> String {
    let mut s = side.verdict.describe();
    for output in &side.outputs {
        let _ = write!(s, "\n  {}", render_output(output));
    }
    s
}

fn render_write(key: &[u8], value: Option<&[u8]>) -> String {
    match value {
        Some(v) => format!("{} = {}", bytes(Some(key)), bytes(Some(v))),
        None => format!("{} deleted", bytes(Some(key))),
    }
}

fn render_writes(writes: &[Write]) -> String {
    writes.iter().map(|(k, v)| render_write(k, v.as_deref())).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn output() -> impl Strategy<Value = Output> {
        (
            prop::sample::select(vec!["a", "b"]),
            prop::option::of(prop::collection::vec(0u8..4, 0..3)),
            prop::option::of(prop::collection::vec(0u8..4, 0..3)),
            prop::collection::vec(
                (prop::sample::select(vec!["h", "ts"]), prop::option::of(prop::collection::vec(0u8..4, 0..2))),
                0..3,
            ),
        )
            .prop_map(|(topic, key, value, headers)| Output {
                topic: topic.to_owned(),
                key,
                value,
                headers: headers.into_iter().map(|(n, v)| (n.to_owned(), v)).collect(),
            })
    }

    fn verdict() -> impl Strategy<Value = Verdict> {
        prop_oneof![
            Just(Verdict::Processed),
            Just(Verdict::Retry("later".into())),
            Just(Verdict::Reject("bad".into())),
            Just(Verdict::Fault("trap".into())),
        ]
    }

    fn side() -> impl Strategy<Value = Side> {
        (verdict(), prop::collection::vec(output(), 0..6)).prop_map(|(verdict, outputs)| Side { verdict, outputs })
    }

    fn rules(order: OutputOrder) -> Rules {
        Rules { order, keep: 10, ..Rules::default() }
    }

    proptest! {
        /// A run compared with itself: every record equal, in either mode.
        #[test]
        fn a_run_equals_itself(sides in prop::collection::vec(side(), 0..20), multiset in any::<bool>()) {
            let rules = rules(if multiset { OutputOrder::Multiset } else { OutputOrder::Ordered });
            let mut tally = Tally::default();
            for (i, s) in sides.iter().enumerate() {
                tally.record(&rules, ("in", 0, i as i64), s, s);
            }
            prop_assert_eq!(tally.compared, sides.len() as u64);
            prop_assert_eq!(tally.equal, sides.len() as u64);
            prop_assert_eq!(tally.different, 0);
            prop_assert!(tally.differences.is_empty());
        }

        /// The same outputs in another order: equal as a multiset; in order mode
        /// different exactly when the order really changed.
        #[test]
        fn a_permutation_is_equal_only_as_a_multiset(
            outputs in prop::collection::vec(output(), 0..8),
            shuffle in any::<prop::sample::Index>(),
        ) {
            let mut moved = outputs.clone();
            if !moved.is_empty() {
                let k = shuffle.index(moved.len());
                moved.rotate_left(k);
            }
            let live = Side { verdict: Verdict::Processed, outputs: outputs.clone() };
            let shadow = Side { verdict: Verdict::Processed, outputs: moved.clone() };
            prop_assert!(compare_record(&rules(OutputOrder::Multiset), &live, &shadow).is_none());
            let ordered = compare_record(&rules(OutputOrder::Ordered), &live, &shadow);
            prop_assert_eq!(ordered.is_some(), moved != outputs);
            if let Some((aspects, diff)) = ordered {
                prop_assert_eq!(aspects, vec!["outputs"]);
                prop_assert!(diff.lines().all(|l| l.starts_with("- output[") || l.starts_with("+ output[")), "{}", diff);
            }
        }

        /// Counts add up, and the differences kept are the first ones, by offset.
        #[test]
        fn counts_add_up(pairs in prop::collection::vec((side(), side(), any::<bool>()), 0..30), keep in 0usize..5) {
            let rules = Rules { keep, ..Rules::default() };
            let mut tally = Tally::default();
            let mut different = Vec::new();
            for (i, (a, b, unknown)) in pairs.iter().enumerate() {
                let b = if *unknown { Side { verdict: Verdict::Unknown, outputs: Vec::new() } } else { b.clone() };
                if !unknown && compare_record(&rules, a, &b).is_some() {
                    different.push(i as i64);
                }
                tally.record(&rules, ("in", 3, i as i64), a, &b);
            }
            prop_assert_eq!(tally.compared + tally.skipped, pairs.len() as u64);
            prop_assert_eq!(tally.equal + tally.different, tally.compared);
            prop_assert_eq!(tally.different, different.len() as u64);
            let kept: Vec<i64> = tally.differences.iter().map(|d| d.offset).collect();
            prop_assert_eq!(&kept[..], &different[..different.len().min(keep)]);
        }

        /// Ignored headers make no difference; others do.
        #[test]
        fn ignored_headers_are_left_out(base in output(), a in prop::option::of(prop::collection::vec(0u8..4, 0..2)), b in prop::option::of(prop::collection::vec(0u8..4, 0..2))) {
            let mut ours = base.clone();
            ours.headers.push(("ts".into(), a.clone()));
            let mut theirs = base;
            theirs.headers.push(("ts".into(), b.clone()));
            let live = Side { verdict: Verdict::Processed, outputs: vec![ours] };
            let shadow = Side { verdict: Verdict::Processed, outputs: vec![theirs] };
            let ignoring = Rules { ignore_headers: vec!["ts".into()], ..rules(OutputOrder::Ordered) };
            prop_assert!(compare_record(&ignoring, &live, &shadow).is_none());
            prop_assert_eq!(compare_record(&rules(OutputOrder::Ordered), &live, &shadow).is_some(), a != b);
        }
    }

    #[test]
    fn a_different_outcome_shows_both_sides() {
        let live = Side { verdict: Verdict::Processed, outputs: vec![] };
        let shadow = Side { verdict: Verdict::Reject("too big".into()), outputs: vec![] };
        let (aspects, diff) = compare_record(&rules(OutputOrder::Ordered), &live, &shadow).unwrap();
        assert_eq!(aspects, ["outcome"]);
        assert_eq!(diff, "- outcome: processed\n+ outcome: reject (too big)\n");
    }

    #[test]
    fn ignored_json_fields_are_left_out() {
        let out =
            |v: &str| Output { topic: "o".into(), key: None, value: Some(v.as_bytes().to_vec()), headers: vec![] };
        let live = Side { verdict: Verdict::Processed, outputs: vec![out(r#"{"id":1,"meta":{"ts":5,"x":1}}"#)] };
        let shadow = Side { verdict: Verdict::Processed, outputs: vec![out(r#"{"meta":{"x":1,"ts":9},"id":1}"#)] };
        let ignoring = Rules { ignore_fields: vec!["meta.ts".into()], ..rules(OutputOrder::Ordered) };
        assert!(compare_record(&ignoring, &live, &shadow).is_none());
        let (_, diff) = compare_record(&rules(OutputOrder::Ordered), &live, &shadow).unwrap();
        assert!(diff.contains("- output[0] o key=null value=\"{\\\"id\\\":1"), "{diff}");
        let other = Side { verdict: Verdict::Processed, outputs: vec![out(r#"{"id":2,"meta":{"ts":5,"x":1}}"#)] };
        assert!(compare_record(&ignoring, &live, &other).is_some());
    }

    #[test]
    fn state_writes_are_compared_per_key() {
        let live: Vec<Write> = vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)];
        let shadow: Vec<Write> = vec![(b"a".to_vec(), Some(b"2".to_vec())), (b"b".to_vec(), None)];
        assert!(compare_writes(&live, &live).is_none());
        let diff = compare_writes(&live, &shadow).unwrap();
        assert_eq!(diff, "- state \"a\" = \"1\"\n+ state \"a\" = \"2\"\n");
        let mut tally = Tally::default();
        tally.state(&rules(OutputOrder::Ordered), ("in", 0, 10, 19), &live, &shadow);
        assert_eq!((tally.state_batches, tally.state_different), (1, 1));
        assert_eq!((tally.differences[0].offset, tally.differences[0].last_offset), (10, 19));
    }
}
