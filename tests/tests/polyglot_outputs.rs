//! Outputs of Python and JavaScript processors, whose SDKs check each output as
//! the host does the moment it is emitted and hand a call's outputs to the host
//! in one `output.emit-many`: a refused emit (over the byte budget, over the
//! count, a topic not granted) reaches the tenant at the emit that caused it, the
//! budget is the batch's across the calls it takes, and the outputs of a record
//! that ends retry or reject are never published, on a real broker. Judged by
//! sets: offsets that emitted, (key, value) of what was published, dead letters.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_host::config::Config;
use ferry_host::devtools::GuestLanguage;
use ferry_host::host::Host;
use ferry_host::sandbox::{
    Batch, Emitted, Grants, Limits, OutputLimits, OutputUsed, ProcessorComponent, ProcessorInstance, Provisions,
    Sandbox, SandboxSettings,
};
use ferry_sdk::limits::OUTPUT_RECORD_COST;
use ferry_sdk::wire::BatchEncoder;
use ferry_tests::hostile::dead_lettered;
use ferry_tests::*;

/// The first offset of every batch below.
const FIRST: i64 = 100;

fn chaos(language: GuestLanguage) -> std::path::PathBuf {
    polyglot_guest(language, &format!("tests/guests/{}/chaos", language.name()))
}

fn chaos_instance(language: GuestLanguage, output: OutputLimits) -> ProcessorInstance {
    let sandbox = Sandbox::new(SandboxSettings {
        max_instances: 4,
        cache_dir: ferry_host::sandbox::default_cache_dir(),
        ..SandboxSettings::default()
    })
    .unwrap();
    let grants = Grants { output_topics: ["out".to_owned()].into(), log: true, state: false, http: None };
    let bytes = std::fs::read(chaos(language)).unwrap();
    let component = Arc::new(ProcessorComponent::load(&sandbox, &bytes, &grants).unwrap());
    let limits = Limits { memory_bytes: 64 << 20, time_per_batch_ms: 30_000, output, ..Limits::default() };
    ProcessorInstance::new(sandbox, component, "outputs", Provisions::simple("outputs", grants), limits)
}

/// A batch of `values` (key `k<offset>`) from offset `first` on, and its offsets.
fn batch(first: i64, values: &[&str]) -> (Batch, Vec<i64>) {
    let mut encoder = BatchEncoder::new();
    let offsets: Vec<i64> = (first..).take(values.len()).collect();
    for (offset, value) in offsets.iter().zip(values) {
        encoder.push(*offset, None, Some(format!("k{offset}").as_bytes()), Some(value.as_bytes()), []);
    }
    (Batch { topic: "in".into(), partition: 0, count: encoder.count(), records: encoder.into_bytes() }, offsets)
}

/// Each record's outcome, and the offsets and values of the outputs.
fn run(
    instance: &mut ProcessorInstance,
    first: i64,
    values: &[&str],
    used: &mut OutputUsed,
) -> (Vec<String>, BTreeSet<(i64, String)>) {
    let (batch, offsets) = batch(first, values);
    let deadline = instance.deadline_from_now();
    let (reply, emitted) = instance.process_within(&batch, &offsets, deadline, used, &mut None).unwrap();
    let outcomes = reply.into_outcomes().map(outcome_label).collect();
    let outputs = emitted
        .iter()
        .map(|Emitted { source, record }| {
            assert_eq!(record.topic, "out");
            assert_eq!(record.key.as_deref(), Some(format!("k{}", source.unwrap()).as_bytes()), "tied to its record");
            (source.unwrap(), String::from_utf8(record.value.clone().unwrap()).unwrap())
        })
        .collect();
    (outcomes, outputs)
}

/// Offsets of `outcomes` (from [`FIRST`]) that are processed.
fn processed(first: i64, outcomes: &[String]) -> BTreeSet<i64> {
    (first..).zip(outcomes).filter(|(_, o)| *o == "processed").map(|(offset, _)| offset).collect()
}

/// What the host charges a chaos output of `value` with a key of `key_len` bytes.
fn charge(key_len: usize, value: &str) -> usize {
    OUTPUT_RECORD_COST + "out".len() + key_len + value.len()
}

fn refusals_reach_the_emit_that_caused_them(language: GuestLanguage) {
    // The byte budget holds three outputs of "emit:out" (keys k100..k106: 4 bytes).
    let budget = 3 * charge(4, "emit:out") + 100;
    let mut instance =
        chaos_instance(language, OutputLimits { max_records: 100, max_record_bytes: 1 << 20, batch_bytes: budget });
    let values = ["emit:out", "emit:nope", "emit:out", "x", "emit:out", "emit:out", "emit:out"];
    let (outcomes, outputs) = run(&mut instance, FIRST, &values, &mut OutputUsed::default());
    let over = format!("retry: emit refused: batch outputs exceed the budget of {budget} bytes");
    let not_allowed = "retry: emit refused: topic \"nope\" is not allowed for this pipeline (the operator lists the \
                       topics it may write to in the pipeline's `output_topics`)";
    assert_eq!(outcomes, ["processed", not_allowed, "processed", "processed", "processed", &over, &over]);
    assert_eq!(outputs, [100, 102, 104].map(|o| (o, "emit:out".to_owned())).into());

    // The count, across the two calls of one batch (as when a batch is split
    // around a faulting record): three outputs for the whole batch.
    let mut instance =
        chaos_instance(language, OutputLimits { max_records: 3, max_record_bytes: 1 << 20, batch_bytes: 1 << 20 });
    let mut used = OutputUsed::default();
    let (first, first_outputs) = run(&mut instance, FIRST, &["emit:out", "emit:out"], &mut used);
    assert_eq!(used.records, 2);
    let (second, second_outputs) = run(&mut instance, FIRST + 2, &["emit:out", "emit:out", "x"], &mut used);
    let too_many = "retry: emit refused: batch emitted more records than allowed";
    assert_eq!(first, ["processed", "processed"]);
    assert_eq!(second, ["processed", too_many, "processed"]);
    let emitted: BTreeSet<i64> = first_outputs.iter().chain(&second_outputs).map(|(o, _)| *o).collect();
    assert_eq!(emitted, [100, 101, 102].into());
    assert_eq!(used, OutputUsed { records: 3, bytes: 3 * charge(4, "emit:out") });

    // Every record of a large batch emits: one output per processed record.
    let big = "emit:out".to_owned();
    let values: Vec<&str> = std::iter::repeat_n(big.as_str(), 3000).collect();
    let mut instance = chaos_instance(language, OutputLimits::default());
    let (outcomes, outputs) = run(&mut instance, FIRST, &values, &mut OutputUsed::default());
    assert_eq!(outputs.iter().map(|(o, _)| *o).collect::<BTreeSet<_>>(), processed(FIRST, &outcomes));
    assert_eq!(outputs.len(), 3000);
}

#[test]
fn python_refusals_reach_the_emit_that_caused_them() {
    refusals_reach_the_emit_that_caused_them(GuestLanguage::Python);
}

#[test]
fn javascript_refusals_reach_the_emit_that_caused_them() {
    refusals_reach_the_emit_that_caused_them(GuestLanguage::JavaScript);
}

const PARTITIONS: i32 = 4;
const RECORDS: usize = 400;

/// Record `i`'s command: emits and is processed, emits and is retried once, emits
/// and is rejected, or emits nothing.
fn command(i: usize) -> &'static str {
    ["emit:out", "emit-retry-once:out", "emit-reject:out", "x"][i % 4]
}

fn outputs_of_failed_records_are_never_published(language: GuestLanguage) {
    let component = chaos(language);
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", PARTITIONS);
    broker.create_topic("out", PARTITIONS);
    broker.create_topic("dlq", 1);
    let values: Vec<String> = (0..RECORDS).map(|i| command(i).to_owned()).collect();
    produce(&brokers, "in", PARTITIONS, &values);
    let produced = read_all(&brokers, "in");
    assert_eq!(produced.len(), RECORDS);

    let group = unique("outputs");
    let text = format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "outputs"
        inputs = ["in"]
        group = "{group}"
        component = "{component}"
        batch_size = 50
        max_wait_ms = 10
        output_topics = ["out"]
        commit = {{ policy = "per-batch" }}
        limits = {{ memory_mib = 128 }}
        failure = {{ on_failure = "dead-letter", dead_letter_topic = "dlq", max_attempts = 5, backoff_initial_ms = 10 }}
        "#,
        component = component.display(),
    );
    let host = Host::start(&Config::parse(&text).unwrap()).unwrap();
    wait_until("lag 0 on every partition", || {
        let rows = lag(&brokers, &group, "in");
        rows.len() == PARTITIONS as usize && rows.iter().all(|p| p.lag() == 0)
    });
    host.shutdown_flag().store(true, Ordering::Relaxed);
    host.wait();

    // Every output once: a sorted list, so a duplicate (a retried attempt's output
    // published) shows.
    let mut published: Vec<(String, String)> =
        read_all(&brokers, "out").into_iter().map(|r| (r.key, r.value)).collect();
    published.sort();
    let mut expected: Vec<(String, String)> = produced
        .iter()
        .filter(|r| r.value == "emit:out" || r.value == "emit-retry-once:out")
        .map(|r| (r.key.clone(), r.value.clone()))
        .collect();
    expected.sort();
    assert_eq!(published, expected, "{}: the outputs of exactly the processed records, each once", language.name());
    let rejected: BTreeSet<(i32, i64)> =
        produced.iter().filter(|r| r.value == "emit-reject:out").map(|r| (r.partition, r.offset)).collect();
    assert_eq!(dead_lettered(&brokers), rejected, "{}: dead letters of exactly the rejected records", language.name());
}

#[test]
fn python_outputs_of_failed_records_are_never_published() {
    outputs_of_failed_records_are_never_published(GuestLanguage::Python);
}

#[test]
fn javascript_outputs_of_failed_records_are_never_published() {
    outputs_of_failed_records_are_never_published(GuestLanguage::JavaScript);
}
