//! Section 3: a fresh processor instance, and recovery from a trap.
//!
//! Instantiation is measured as the first batch of one record after `recycle()`
//! minus the same batch on a warm instance, so it is everything a fresh instance
//! costs the pipeline (store, pooled slot, instantiation, the guest's first-call
//! set-up). Recovery is the chaos guest's "panic" record followed by an ordinary
//! record: the time from the trap's return to the next processed record.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use ferry_host::pipeline::run::run_batch;
use ferry_host::sandbox::{Batch, Grants, Outcome, ProcessorInstance};
use ferry_sdk::wire::BatchEncoder;

use crate::boundary::{empty_batch, far, instance as new_instance};
use crate::common::{median, quantile};

/// Targets, in µs.
pub const INSTANTIATE_TARGET_US: f64 = 20.0;
pub const RECOVERY_TARGET_US: f64 = 50.0;

/// Warm call, recycle, cold call: this many times.
const PAIRS: usize = 1_000;
const TRAPS: usize = 200;

/// The figures, in µs.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// (warm batch, batch right after `recycle()`, its p99): instantiated in place,
    /// and taking a prepared spare.
    pub fresh: [(f64, f64, f64); 2],
    pub trap_call: f64,
    pub recovery: f64,
    pub recovery_p99: f64,
    /// Trap to the next processed record when no spare was ready.
    pub recovery_in_place: f64,
    /// From handing over the "panic" record to the next record processed.
    pub panic_to_next: f64,
    /// A 1000-record batch with one poison record in the middle, isolated by halving.
    pub poison_batch_ms: f64,
    pub clean_batch_ms: f64,
}

impl Figures {
    /// A fresh instance's cost to the batch, in each of the two ways.
    pub fn instantiate(&self, way: usize) -> f64 {
        self.fresh[way].1 - self.fresh[way].0
    }
}

fn one(batch: &mut Batch, offset: i64, value: &[u8]) {
    let mut encoder = BatchEncoder::from_vec(std::mem::take(&mut batch.records));
    encoder.push(offset, None, Some(b"key"), Some(value), []);
    batch.count = encoder.count();
    batch.records = encoder.into_bytes();
}

fn micros(started: Instant) -> f64 {
    started.elapsed().as_nanos() as f64 / 1_000.0
}

fn call(instance: &mut ProcessorInstance, batch: &Batch, offsets: &[i64]) -> f64 {
    let started = Instant::now();
    let result = instance.process(black_box(batch), offsets, far());
    let elapsed = micros(started);
    assert!(result.is_ok_and(|(reply, _)| reply.all_processed()), "the record was not processed");
    elapsed
}

/// Measures instantiation (passthrough) and trap recovery (chaos).
pub fn run(passthrough: &Path, chaos: &Path) -> anyhow::Result<Figures> {
    let value = [b'x'; 100];
    let mut batch = empty_batch();
    one(&mut batch, 7, &value);
    let offsets = [7];

    // Two ways: instantiating in place (no spare ready: a pipeline that had no idle
    // moment since its last fresh instance), and taking the spare a pipeline prepares
    // when it has nothing else to do (here before each warm call, untimed).
    let mut fresh = Vec::new();
    for spare in [false, true] {
        let mut instance = new_instance(passthrough, Grants::default())?.keep_spare(true);
        for _ in 0..100 {
            call(&mut instance, &batch, &offsets);
        }
        // Warm and cold calls alternate, so both see the same machine load.
        let before = instance.instantiations();
        let (mut warm, mut cold) = (Vec::with_capacity(PAIRS), Vec::with_capacity(PAIRS));
        for _ in 0..PAIRS {
            if spare {
                instance.prepare_spare();
                anyhow::ensure!(instance.has_spare(), "no spare was prepared");
            }
            warm.push(call(&mut instance, &batch, &offsets));
            instance.recycle();
            cold.push(call(&mut instance, &batch, &offsets));
        }
        anyhow::ensure!(instance.instantiations() - before == PAIRS as u64, "recycle did not instantiate afresh");
        fresh.push((median(&mut warm), median(&mut cold), quantile(&mut cold, 0.99)));
    }

    // The chaos guest imports both capabilities.
    let grants = Grants { output_topics: ["bench-out".to_owned()].into(), log: true, state: false, http: None };
    let mut chaos_instance = new_instance(chaos, grants)?.keep_spare(true);
    let mut poison = empty_batch();
    one(&mut poison, 7, b"panic");
    call(&mut chaos_instance, &batch, &offsets);
    let mut in_place = Vec::new();
    for _ in 0..TRAPS {
        anyhow::ensure!(chaos_instance.process(&poison, &offsets, far()).is_err(), "no trap on \"panic\"");
        in_place.push(call(&mut chaos_instance, &batch, &offsets));
    }
    let (mut trap_call, mut recovery, mut total) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..TRAPS {
        // The pipeline prepares its spare whenever it would wait: here, untimed,
        // before each trap.
        chaos_instance.prepare_spare();
        anyhow::ensure!(chaos_instance.has_spare(), "no spare was prepared");
        let started = Instant::now();
        let fault = chaos_instance.process(&poison, &offsets, far());
        let trapped = micros(started);
        anyhow::ensure!(fault.is_err(), "the chaos guest did not trap on \"panic\"");
        let recovered = call(&mut chaos_instance, &batch, &offsets);
        trap_call.push(trapped);
        recovery.push(recovered);
        total.push(trapped + recovered);
    }

    let (poison_batch_ms, clean_batch_ms) = isolation(&mut chaos_instance)?;
    Ok(Figures {
        fresh: [fresh[0], fresh[1]],
        trap_call: median(&mut trap_call),
        recovery: median(&mut recovery),
        recovery_p99: quantile(&mut recovery, 0.99),
        recovery_in_place: median(&mut in_place),
        panic_to_next: median(&mut total),
        poison_batch_ms,
        clean_batch_ms,
    })
}

/// The pipeline's view: a 1000-record batch with one "panic" record at index 500
/// (halving isolates it: about 2·log2(1000) extra calls, each after a fresh
/// instance), against the same batch without it. Medians of 9 runs, in ms.
fn isolation(instance: &mut ProcessorInstance) -> anyhow::Result<(f64, f64)> {
    let build = |poisoned: bool| {
        let mut encoder = BatchEncoder::new();
        for i in 0..1000i64 {
            let value: &[u8] = if poisoned && i == 500 { b"panic" } else { &[b'x'; 100] };
            encoder.push(i, None, Some(b"key"), Some(value), []);
        }
        encoder
    };
    let offsets: Vec<i64> = (0..1000).collect();
    let mut figures = [Vec::new(), Vec::new()];
    for _ in 0..9 {
        for (poisoned, out) in [(true, 0), (false, 1)] {
            let encoder = build(poisoned);
            let mut batch =
                Batch { topic: "bench".into(), partition: 0, count: encoder.count(), records: encoder.into_bytes() };
            let started = Instant::now();
            let run = run_batch(instance, &mut batch, &offsets, None);
            figures[out].push(micros(started) / 1_000.0);
            let faulted = run.outcomes.iter().filter(|v| matches!(v, Outcome::Fault(_))).count();
            anyhow::ensure!(
                faulted == usize::from(poisoned),
                "expected {} faulted records, got {faulted}",
                usize::from(poisoned)
            );
        }
    }
    let [mut poisoned, mut clean] = figures;
    Ok((median(&mut poisoned), median(&mut clean)))
}

/// The markdown table.
pub fn table(f: &Figures) -> String {
    let verdict = |value: f64, target: f64| if value <= target { "met" } else { "**missed**" };
    let mut out = String::from("| measure | median | p99 | target | |\n|---|---:|---:|---:|---|\n");
    for (way, label) in ["instantiated in place", "prepared spare"].into_iter().enumerate() {
        let (warm, cold, p99) = f.fresh[way];
        out.push_str(&format!(
            "| {label}: warm batch of 1 record | {warm:.1} µs | | | |\n\
             | {label}: batch of 1 right after `recycle()` | {cold:.1} µs | {p99:.1} µs | | |\n\
             | {label}: **fresh instance** (difference) | **{:.1} µs** | | < {INSTANTIATE_TARGET_US} µs | {} |\n",
            f.instantiate(way),
            verdict(f.instantiate(way), INSTANTIATE_TARGET_US),
        ));
    }
    out.push_str(&format!(
        "| call that traps (chaos `panic`) | {:.1} µs | | | |\n\
         | trap → next processed record, instantiated in place | {:.1} µs | | < {RECOVERY_TARGET_US} µs | {} |\n\
         | **trap → next processed record**, prepared spare | **{:.1} µs** | {:.1} µs | < {RECOVERY_TARGET_US} µs | {} |\n\
         | \"panic\" record handed over → next processed record, prepared spare | {:.1} µs | | | |\n\
         | 1000-record batch, clean | {:.2} ms | | | |\n\
         | 1000-record batch, 1 poison record isolated | {:.2} ms | | | |\n",
        f.trap_call,
        f.recovery_in_place,
        verdict(f.recovery_in_place, RECOVERY_TARGET_US),
        f.recovery,
        f.recovery_p99,
        verdict(f.recovery, RECOVERY_TARGET_US),
        f.panic_to_next,
        f.clean_batch_ms,
        f.poison_batch_ms,
    ));
    out
}
