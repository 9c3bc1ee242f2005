//! Hostile guests, built from source, are contained and classified; the host keeps
//! serving healthy guests in the same process afterwards.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_host::sandbox::{
    Batch, Emitted, Grants, GuestFault, Limits, LoadError, Outcome, ProcessorComponent, ProcessorInstance, Provisions,
    Sandbox, SandboxSettings,
};
use ferry_sdk::wire::BatchEncoder;
use ferry_tests::{Broker as _, Embedded, ferry_bin, guest, lag, outcome_label, produce, wait_until};

fn sandbox() -> Sandbox {
    Sandbox::new(SandboxSettings { max_instances: 32, ..SandboxSettings::default() }).unwrap()
}

fn load(sandbox: &Sandbox, package: &str, grants: &Grants) -> Result<Arc<ProcessorComponent>, LoadError> {
    let bytes = std::fs::read(guest(package)).unwrap();
    ProcessorComponent::load(sandbox, &bytes, grants).map(Arc::new)
}

fn limits() -> Limits {
    Limits { memory_bytes: 32 << 20, time_per_batch_ms: 300, ..Limits::default() }
}

fn instance(sandbox: &Sandbox, package: &str) -> ProcessorInstance {
    let grants = Grants { output_topics: ["out".to_owned()].into(), log: true, state: false, http: None };
    let component = load(sandbox, package, &grants).unwrap();
    ProcessorInstance::new(sandbox.clone(), component, package, Provisions::simple(package, grants), limits())
}

/// A batch of records with these values, at offsets 0..n.
fn batch(values: &[&str]) -> (Batch, Vec<i64>) {
    let mut encoder = BatchEncoder::new();
    for (offset, value) in values.iter().enumerate() {
        encoder.push(
            offset as i64,
            Some(1_700_000_000_000),
            Some(b"k"),
            Some(value.as_bytes()),
            [("h", Some(&b"v"[..]))],
        );
    }
    let batch = Batch { topic: "in".into(), partition: 0, count: encoder.count(), records: encoder.into_bytes() };
    (batch, (0..values.len() as i64).collect())
}

fn process(instance: &mut ProcessorInstance, values: &[&str]) -> Result<(Vec<String>, Vec<Emitted>), GuestFault> {
    let (batch, offsets) = batch(values);
    let (reply, outputs) = instance.process(&batch, &offsets, instance.deadline_from_now())?;
    let outcomes = reply.into_outcomes().map(outcome_label).collect();
    Ok((outcomes, outputs))
}

fn run(instance: &mut ProcessorInstance, values: &[&str]) -> Result<Vec<String>, GuestFault> {
    process(instance, values).map(|(outcomes, _)| outcomes)
}

#[test]
fn hostile_guests_are_contained_classified_and_replaced() {
    let sandbox = sandbox();
    let mut healthy = instance(&sandbox, "ferry-example-passthrough");
    let mut chaos = instance(&sandbox, "ferry-guest-chaos");
    type IsExpected = fn(&GuestFault) -> bool;
    let cases: [(&str, IsExpected); 6] = [
        ("loop", |f| matches!(f, GuestFault::Timeout(300))),
        ("oom", |f| matches!(f, GuestFault::OutOfMemory(_))),
        ("recurse", |f| matches!(f, GuestFault::StackOverflow)),
        ("panic", |f| matches!(f, GuestFault::Panic(_))),
        // Waits in host code (a WASI clock sleep, a poll on a pollable that never
        // fires) end at the deadline like a busy loop does.
        ("block:120000", |f| matches!(f, GuestFault::Timeout(300))),
        ("poll", |f| matches!(f, GuestFault::Timeout(300))),
    ];
    for (behaviour, expected) in cases {
        let started = Instant::now();
        let fault = run(&mut chaos, &["fine", behaviour, "fine"]).expect_err(behaviour);
        assert!(expected(&fault), "{behaviour} classified as {fault:?}");
        if let GuestFault::Timeout(_) = fault {
            // The ceiling is generous: the point is that 120 s never pass.
            assert!(started.elapsed() < Duration::from_secs(60), "{behaviour} held the call past its deadline");
        }
        // The faulted store is gone: the next batch runs on a fresh instance.
        assert_eq!(run(&mut chaos, &["fine", "fine"]).unwrap(), ["processed", "processed"], "after {behaviour}");
        assert_eq!(
            run(&mut healthy, &["a", "b", "c"]).unwrap().len(),
            3,
            "the healthy guest keeps serving after {behaviour}"
        );
    }
    assert_eq!(chaos.instantiations(), 7, "one fresh instance per fault, plus the first");
    assert_eq!(healthy.instantiations(), 1, "the healthy guest was never disturbed");
}

#[test]
fn an_empty_batch_gets_an_empty_answer() {
    let sandbox = sandbox();
    assert!(run(&mut instance(&sandbox, "ferry-example-passthrough"), &[]).unwrap().is_empty());
    assert!(run(&mut instance(&sandbox, "ferry-guest-chaos"), &[]).unwrap().is_empty());
}

#[test]
fn invalid_results_are_guest_errors_never_commits() {
    let sandbox = sandbox();
    let fault = run(&mut instance(&sandbox, "ferry-guest-bad-count"), &["a", "b", "c"]).unwrap_err();
    assert!(matches!(&fault, GuestFault::BadReturn(m) if m.contains("2 statuses for a batch of 3")), "{fault:?}");
    let fault = run(&mut instance(&sandbox, "ferry-guest-foreign-offsets"), &["a", "b"]).unwrap_err();
    assert!(matches!(&fault, GuestFault::BadReturn(m) if m.contains("not in the batch")), "{fault:?}");
    assert_eq!(run(&mut instance(&sandbox, "ferry-example-passthrough"), &["a"]).unwrap(), ["processed"]);

    // In a pipeline: the partition halts on the guest's answers, and nothing is
    // ever committed past them.
    let broker = Embedded::start();
    let brokers = broker.brokers();
    broker.create_topic("in", 1);
    produce(&brokers, "in", 1, &["a".to_owned(), "b".to_owned(), "c".to_owned()]);
    let config = ferry_host::config::Config::parse(&format!(
        r#"
        brokers = "{brokers}"
        [[pipeline]]
        name = "bad"
        inputs = ["in"]
        group = "bad"
        component = "{}"
        max_wait_ms = 10
        commit = {{ policy = "per-batch" }}
        failure = {{ on_failure = "halt", max_attempts = 2, backoff_initial_ms = 5 }}
        "#,
        guest("ferry-guest-bad-count").display()
    ))
    .unwrap();
    let host = ferry_host::host::Host::start(&config).unwrap();
    let halted = || {
        host.pipelines[0].shared.stats.snapshot().partitions.get(&("in".to_owned(), 0)).and_then(|p| p.halted.clone())
    };
    wait_until("the partition halted on the invalid answers", || halted().is_some());
    assert!(halted().unwrap().contains("invalid result"), "{:?}", halted());
    host.shutdown_flag().store(true, std::sync::atomic::Ordering::Relaxed);
    host.wait();
    assert_eq!(lag(&brokers, "bad", "in")[0].committed.unwrap_or(0), 0, "nothing committed past an invalid answer");
}

#[test]
fn outcomes_reasons_and_emits_come_back_validated() {
    let sandbox = sandbox();
    let mut chaos = instance(&sandbox, "ferry-guest-chaos");
    let out = run(&mut chaos, &["retry", "reject", "emit:out", "emit:forbidden"]).unwrap();
    assert_eq!(out[..3], ["retry: asked to retry", "reject: asked to reject", "processed"]);
    assert!(out[3].starts_with("retry: emit refused") && out[3].contains("forbidden"), "{out:?}");
    let (_, outputs) = process(&mut chaos, &["fine", "emit:out"]).unwrap();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].source, Some(1), "an output belongs to the record that emitted it");
    assert_eq!(outputs[0].record.topic, "out");
    assert_eq!(outputs[0].record.value.as_deref(), Some(&b"emit:out"[..]));
}

#[test]
fn a_reused_instance_slot_starts_zeroed() {
    let sandbox = sandbox();
    for spare in [false, true] {
        for round in 0..5 {
            // snoop scans a 16 MiB region for non-zero bytes, then fills it with 0xAB.
            let mut snoop = instance(&sandbox, "ferry-guest-snoop");
            if spare {
                snoop = snoop.keep_spare(true);
            }
            assert_eq!(run(&mut snoop, &["x"]).unwrap(), ["processed"], "round {round}, spare {spare}");
            snoop.prepare_spare();
            assert_eq!(snoop.has_spare(), spare, "round {round}");
            snoop.recycle();
            assert_eq!(run(&mut snoop, &["x"]).unwrap(), ["processed"], "round {round} after recycling, spare {spare}");
        }
    }
}

#[test]
fn a_spare_instance_takes_over_after_a_fault_with_the_same_limits_and_grants() {
    let sandbox = sandbox();
    let mut chaos = instance(&sandbox, "ferry-guest-chaos").keep_spare(true);
    chaos.prepare_spare();
    assert!(!chaos.has_spare(), "no spare before the first instance");
    for round in 0..3 {
        // Every fault hands the next batch to the spare, which must hold to the same
        // memory and time limits, and the same grants, as the instance it replaces.
        let spare = |chaos: &mut ProcessorInstance| {
            chaos.prepare_spare();
            assert!(chaos.has_spare(), "round {round}: no spare");
        };
        run(&mut chaos, &["fine"]).unwrap();
        spare(&mut chaos);
        let fault = run(&mut chaos, &["fine", "oom"]).expect_err("oom");
        assert!(matches!(fault, GuestFault::OutOfMemory(_)), "round {round}: oom classified as {fault:?}");
        let fault = run(&mut chaos, &["loop"]).expect_err("loop");
        assert!(!chaos.has_spare(), "round {round}: the spare went live");
        assert!(matches!(fault, GuestFault::Timeout(300)), "round {round}: loop classified as {fault:?}");
        spare(&mut chaos);
        let (outcomes, emitted) = process(&mut chaos, &["emit:out", "emit:not-granted"]).unwrap();
        assert_eq!(outcomes[0], "processed", "round {round}");
        assert!(outcomes[1].starts_with("retry"), "round {round}: an ungranted topic was not refused: {outcomes:?}");
        let topics: Vec<&str> = emitted.iter().map(|e| e.record.topic.as_str()).collect();
        assert_eq!(topics, ["out"], "round {round}");
        // And a recycle (memory grown past half its room) hands over just the same.
        spare(&mut chaos);
        chaos.recycle();
        assert_eq!(run(&mut chaos, &["fine"]).unwrap(), ["processed"], "round {round} after recycling");
    }
    assert_eq!(chaos.instantiations(), 1 + 3 * 3, "one fresh instance per fault and recycle, plus the first");
}

#[test]
fn ungranted_capabilities_are_refused_at_load_by_name() {
    let sandbox = sandbox();
    let error = load(
        &sandbox,
        "ferry-example-orders",
        &Grants { output_topics: Default::default(), log: true, state: false, http: None },
    )
    .unwrap_err();
    assert!(error.to_string().contains("ferry:processor/output@0.2.0"), "{error}");
    let error = load(
        &sandbox,
        "ferry-example-counter",
        &Grants { output_topics: Default::default(), log: false, state: false, http: None },
    )
    .unwrap_err();
    assert!(error.to_string().contains("ferry:processor/log@0.2.0"), "{error}");
    assert!(load(&sandbox, "ferry-example-passthrough", &Grants::default()).is_ok(), "no capabilities needed");
}

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(ferry_bin()).arg("check").arg(path).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn ferry_check_reports_the_world_capabilities_and_clear_errors() {
    let (ok, text) = check(&guest("ferry-example-orders"));
    assert!(ok, "{text}");
    assert!(text.contains("implements ferry:processor") && text.contains("ferry:processor/output@0.2.0"), "{text}");
    assert!(text.contains("linked: produces to the pipeline's output_topics"), "{text}");
    let (ok, text) = check(&guest("ferry-example-passthrough"));
    assert!(ok && !text.contains("ferry:processor/output") && !text.contains("ferry:processor/log"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("garbage.wasm", b"definitely not wasm".to_vec(), "not a WebAssembly file"),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec(), "core WebAssembly module, not a component"),
        ("broken.wasm", b"\0asm\x0d\0\x01\0\x99\x99".to_vec(), "invalid component"),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let (ok, text) = check(&path);
        assert!(!ok && text.contains(expected), "{name}: {text}");
    }
    let (ok, text) = check(&guest("ferry-guest-wrong-world"));
    assert!(!ok && text.contains("does not implement the ferry:processor world"), "{text}");
    let (ok, text) = check(&dir.path().join("missing.wasm"));
    assert!(!ok && text.contains("failed to read"), "{text}");
}

/// A batch that faults is split to isolate the faulting record, and its calls share
/// the batch's one output budget: a record that spent it in a call that faulted
/// finds it spent when it runs again alone (each call once got a full budget).
#[test]
fn the_calls_of_a_split_batch_share_one_output_budget() {
    let sandbox = sandbox();
    let mut chaos = instance(&sandbox, "ferry-guest-chaos");
    // Time enough for a bomb (about 18 emits of 900 KiB) and its splits.
    chaos = ProcessorInstance::new(
        sandbox.clone(),
        chaos.component().clone(),
        "chaos",
        Provisions::simple(
            "chaos",
            Grants { output_topics: ["out".to_owned()].into(), log: true, state: false, http: None },
        ),
        Limits { memory_bytes: 64 << 20, time_per_batch_ms: 10_000, ..Limits::default() },
    );
    let (mut batch, offsets) = batch(&["bomb:out", "panic"]);
    let run = ferry_host::pipeline::run::run_batch(&mut chaos, &mut batch, &offsets, None);
    assert_eq!(run.outcomes[0], Outcome::Processed, "the bomb, alone, stops at the refusal");
    assert!(matches!(run.outcomes[1], Outcome::Fault(GuestFault::Panic(_))), "{:?}", run.outcomes[1]);
    assert!(run.outputs.is_empty(), "{} outputs: the first call spent the batch's budget", run.outputs.len());
}

/// A full instance pool is the host's trouble, not the guest's: the fault says so,
/// and the pipeline tries the batch again without charging its records.
#[test]
fn a_full_instance_pool_is_a_fault_of_the_host() {
    let sandbox = Sandbox::new(SandboxSettings { max_instances: 1, ..SandboxSettings::default() }).unwrap();
    let mut holder = instance(&sandbox, "ferry-example-passthrough");
    assert_eq!(run(&mut holder, &["x"]).unwrap(), ["processed"], "it holds the only slot");
    let mut other = instance(&sandbox, "ferry-example-passthrough");
    let fault = run(&mut other, &["y"]).unwrap_err();
    assert!(matches!(fault, GuestFault::PoolFull(_)) && fault.is_the_hosts(), "{fault:?}");
    holder.recycle();
    assert_eq!(run(&mut other, &["y"]).unwrap(), ["processed"], "once the slot is free");
}
