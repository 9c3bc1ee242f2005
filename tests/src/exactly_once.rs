//! The exactly-once verdict: what a `read_committed` reader finds in the recorder's
//! `seen` topic and the dead-letter topic, against every input record.
//!
//! Independent of ferry: it reads the logs raw ([`crate::raw_log`]), decides what
//! is committed from the transaction markers itself, and compares sets of
//! (partition, offset) pairs. The promise it holds ferry to: every input record
//! has exactly one visible result, a `seen` output or a dead letter, never both,
//! never two.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::raw_log::read_committed;
use crate::{Read, parse_seen};

/// An input record: (partition, offset).
pub type Input = (i32, i64);

/// What the committed outputs say.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Inputs with one visible `seen` output.
    pub processed: BTreeSet<Input>,
    /// Inputs with one visible dead letter.
    pub dead_lettered: BTreeSet<Input>,
    /// Inputs with more than one visible result, and how many.
    pub duplicates: BTreeMap<Input, usize>,
    /// Inputs with no visible result.
    pub lost: BTreeSet<Input>,
    /// Visible results of records that are not in the input.
    pub unknown: BTreeSet<Input>,
    /// Visible results in an output partition of another number than their input's
    /// (see [`Verdict::assert_own_output_partitions`]).
    pub misplaced: Vec<String>,
    /// Inputs whose one visible result is not the one their record asks the
    /// recorder for ([`Class::of`]): an output for a record that always fails, a
    /// dead letter for one that succeeds.
    pub wrong_class: Vec<String>,
}

/// The result a record's value asks the recorder guest for, under a dead-letter
/// failure policy (see `tests/guests/recorder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Succeeds: a `seen` output.
    Processed,
    /// Fails on every attempt (a reject, a panic, a retry that never succeeds): a
    /// dead letter.
    DeadLettered,
    /// Either: fails on about half the attempts (`flaky`), or once per instance
    /// (`retry-once`: a record whose attempts each meet a new instance, after traps
    /// of its neighbours, can use them all up).
    Either,
}

impl Class {
    /// The class of a record with this value.
    pub fn of(value: &str) -> Class {
        let always_retries = value.contains("retry") && !value.contains("retry-once");
        if value.contains("reject") || value.contains("panic") || always_retries {
            Class::DeadLettered
        } else if value.contains("flaky") || value.contains("retry-once") {
            Class::Either
        } else {
            Class::Processed
        }
    }
}

impl Verdict {
    /// A summary for assertion messages.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "processed {}, dead-lettered {}, duplicates {}, lost {}, unknown {}, wrong class {}",
            self.processed.len(),
            self.dead_lettered.len(),
            self.duplicates.len(),
            self.lost.len(),
            self.unknown.len(),
            self.wrong_class.len()
        );
        if !self.wrong_class.is_empty() {
            let _ = writeln!(
                s,
                "  wrong class: {}",
                self.wrong_class.iter().take(10).cloned().collect::<Vec<_>>().join("; ")
            );
        }
        let first = |set: &BTreeSet<Input>| set.iter().take(10).map(|i| format!("{i:?}")).collect::<Vec<_>>().join(" ");
        if !self.duplicates.is_empty() {
            let dups: Vec<String> = self.duplicates.iter().take(10).map(|(i, n)| format!("{i:?}x{n}")).collect();
            let _ = writeln!(s, "  duplicates: {}", dups.join(" "));
        }
        if !self.lost.is_empty() {
            let _ = writeln!(s, "  lost: {}", first(&self.lost));
        }
        if !self.unknown.is_empty() {
            let _ = writeln!(s, "  unknown: {}", first(&self.unknown));
        }
        s
    }

    /// Panics unless every committed output (a `seen` record or a dead letter) is in the
    /// partition of the same number as its input's. ferry's exactly-once tests on Tansu
    /// arrange that (outputs keyed like their input, topics with as many partitions):
    /// Tansu holds back a committed transaction's offsets while another producer's
    /// transaction on the same output partition is open (see `broker_transactions.rs`),
    /// which no client can work around.
    pub fn assert_own_output_partitions(&self) {
        assert!(self.misplaced.is_empty(), "outputs outside their input's partition: {:?}", self.misplaced);
    }

    /// Panics unless every input has exactly one visible result, of the class its
    /// record asks for.
    pub fn assert_exactly_once(&self) {
        assert!(
            self.duplicates.is_empty()
                && self.lost.is_empty()
                && self.unknown.is_empty()
                && self.wrong_class.is_empty(),
            "exactly-once broken:\n{}",
            self.summary()
        );
    }
}

/// Judges the committed `seen` and dead-letter topics against `inputs`, every
/// record of the input topic.
pub fn judge(brokers: &str, input_topic: &str, inputs: &[Read], dead_letter_topic: Option<&str>) -> Verdict {
    let seen = read_committed(brokers, "seen");
    let letters = dead_letter_topic.map(|t| read_committed(brokers, t)).unwrap_or_default();
    judge_reads(input_topic, inputs, &seen, &letters)
}

/// [`judge`] on records already read.
pub fn judge_reads(input_topic: &str, inputs: &[Read], seen: &[Read], letters: &[Read]) -> Verdict {
    let mut results: BTreeMap<Input, usize> = BTreeMap::new();
    let mut verdict = Verdict::default();
    for output in seen {
        let (topic, partition, offset) = parse_seen(&output.value);
        if topic != input_topic {
            continue;
        }
        *results.entry((partition, offset)).or_default() += 1;
        verdict.processed.insert((partition, offset));
        if output.partition != partition {
            verdict.misplaced.push(format!("seen/{} <- {topic}/{partition}@{offset}", output.partition));
        }
    }
    for letter in letters {
        if letter.header("ferry.topic") != Some(input_topic) {
            continue;
        }
        let partition: i32 = letter.header("ferry.partition").and_then(|p| p.parse().ok()).expect("ferry.partition");
        let offset: i64 = letter.header("ferry.offset").and_then(|o| o.parse().ok()).expect("ferry.offset");
        *results.entry((partition, offset)).or_default() += 1;
        verdict.dead_lettered.insert((partition, offset));
        if letter.partition != partition {
            verdict.misplaced.push(format!("dead letter {} <- {input_topic}/{partition}@{offset}", letter.partition));
        }
    }
    let all: BTreeSet<Input> = inputs.iter().map(|r| (r.partition, r.offset)).collect();
    for input in inputs {
        let at = (input.partition, input.offset);
        let (processed, dead_lettered) = (verdict.processed.contains(&at), verdict.dead_lettered.contains(&at));
        let wrong = match Class::of(&input.value) {
            Class::Processed => dead_lettered,
            Class::DeadLettered => processed,
            Class::Either => false,
        };
        if wrong {
            let got = if processed { "an output" } else { "a dead letter" };
            verdict.wrong_class.push(format!("{input_topic}/{}@{} `{}` got {got}", at.0, at.1, input.value));
        }
    }
    for (input, n) in &results {
        if !all.contains(input) {
            verdict.unknown.insert(*input);
        } else if *n > 1 {
            verdict.duplicates.insert(*input, *n);
        }
    }
    verdict.lost = all.iter().filter(|i| !results.contains_key(i)).copied().collect();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(partition: i32, offset: i64, value: &str, headers: &[(&str, &str)]) -> Read {
        Read {
            partition,
            offset,
            key: String::new(),
            value: value.to_owned(),
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn finds_duplicates_losses_and_strangers() {
        let inputs: Vec<Read> = (0..4).map(|o| read(0, o, "x", &[])).collect();
        let seen = vec![
            read(0, 0, "a/in/0/0/1", &[]),
            read(0, 1, "b/in/0/0/2", &[]),
            read(0, 2, "a/in/0/2/3", &[]),
            read(0, 3, "a/in/0/9/4", &[]),
        ];
        let letters = vec![read(0, 0, "", &[("ferry.topic", "in"), ("ferry.partition", "0"), ("ferry.offset", "2")])];
        let verdict = judge_reads("in", &inputs, &seen, &letters);
        assert_eq!(verdict.duplicates, BTreeMap::from([((0, 0), 2), ((0, 2), 2)]));
        assert_eq!(verdict.lost, BTreeSet::from([(0, 1), (0, 3)]));
        assert_eq!(verdict.unknown, BTreeSet::from([(0, 9)]));
    }

    #[test]
    fn each_input_is_held_to_its_class() {
        let inputs = vec![read(0, 0, "r0", &[]), read(0, 1, "reject 1", &[]), read(0, 2, "flaky 2", &[])];
        let letter =
            |offset: &str| read(0, 0, "", &[("ferry.topic", "in"), ("ferry.partition", "0"), ("ferry.offset", offset)]);
        // A dead letter for a record that succeeds, an output for one that always fails.
        let seen = vec![read(0, 0, "a/in/0/1/1", &[]), read(0, 1, "a/in/0/2/2", &[])];
        let verdict = judge_reads("in", &inputs, &seen, &[letter("0")]);
        assert_eq!(verdict.wrong_class.len(), 2, "{:?}", verdict.wrong_class);
        // The right ones, and either for a flaky record.
        let seen = vec![read(0, 0, "a/in/0/0/1", &[])];
        let verdict = judge_reads("in", &inputs, &seen, &[letter("1"), letter("2")]);
        verdict.assert_exactly_once();
    }

    #[test]
    fn one_result_per_input_passes() {
        let inputs: Vec<Read> = vec![read(1, 0, "x", &[]), read(1, 1, "reject 1", &[])];
        let seen = vec![read(0, 0, "a/in/1/0/1", &[])];
        let letters = vec![read(0, 0, "", &[("ferry.topic", "in"), ("ferry.partition", "1"), ("ferry.offset", "1")])];
        let verdict = judge_reads("in", &inputs, &seen, &letters);
        verdict.assert_exactly_once();
        // Both results sit in partition 0, their inputs in partition 1.
        assert_eq!(verdict.misplaced, ["seen/0 <- in/1@0", "dead letter 0 <- in/1@1"]);
    }
}
