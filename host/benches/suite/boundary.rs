//! Section 1: the guest boundary. The passthrough guest through
//! `ProcessorInstance::process` against a native function doing the same work on the
//! same flat buffer; both include the host-side encoding the worker does.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use ferry_host::sandbox::{
    Batch, Grants, Limits, ProcessorComponent, ProcessorInstance, Provisions, Sandbox, SandboxSettings, Status,
};
use ferry_sdk::wire::{self, BatchEncoder};

use crate::common::{self, HEADER_NAME, Shape, median, ns_per_call};

/// The overhead target at 1000 records of 100 B, in ns per record.
pub const TARGET_NS: f64 = 60.0;

const BATCHES: [usize; 3] = [1, 100, 1000];
const VALUES: [usize; 3] = [100, 1024, 10 * 1024];
const SAMPLES: usize = 15;
const WARMUP_SAMPLES: usize = 3;

/// One case's figures, in ns per record (medians over samples).
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub batch: usize,
    pub value_len: usize,
    pub encode: f64,
    pub validate: f64,
    pub native: f64,
    pub wasm: f64,
}

impl Row {
    pub fn overhead(&self) -> f64 {
        self.wasm - self.native
    }
}

/// One record, owned, as the consumer would hand it over.
struct Item {
    offset: i64,
    key: Vec<u8>,
    value: Vec<u8>,
    header: Vec<u8>,
}

/// The records of one case.
struct Records {
    items: Vec<Item>,
    offsets: Vec<i64>,
}

impl Records {
    fn new(batch: usize, shape: Shape) -> Self {
        let items: Vec<_> = (0..batch as u64)
            .map(|i| {
                let (key, value, header) = common::record(shape, i);
                Item { offset: 1_000 + i as i64, key, value, header }
            })
            .collect();
        let offsets = items.iter().map(|r| r.offset).collect();
        Self { items, offsets }
    }

    /// Encodes every record into `batch.records`, reusing its allocation, exactly as
    /// the worker does from the consumer's messages.
    fn encode_into(&self, batch: &mut Batch) {
        let mut encoder = BatchEncoder::from_vec(std::mem::take(&mut batch.records));
        for item in &self.items {
            let header = [(HEADER_NAME, Some(&item.header[..]))];
            encoder.push(item.offset, Some(1_700_000_000_000), Some(&item.key), Some(&item.value), header);
        }
        batch.count = encoder.count();
        batch.records = encoder.into_bytes();
    }
}

/// The native counterpart of the passthrough guest: decode the flat buffer (every
/// length checked, as the guest's validation pass does) and mark every record
/// processed.
pub fn native(batch: &Batch) -> Vec<Status> {
    wire::decode(&batch.records, batch.count)
        .map(|record| {
            record.map(|record| {
                black_box(&record);
                Status::Processed
            })
        })
        .collect::<Result<_, _>>()
        .expect("the bench encoded this batch")
}

/// An instance of `component` on a fresh sandbox, granted what it needs.
pub fn instance(component: &Path, grants: Grants) -> anyhow::Result<ProcessorInstance> {
    let sandbox = Sandbox::new(SandboxSettings::default())?;
    let bytes = std::fs::read(component)?;
    let loaded = ProcessorComponent::load(&sandbox, &bytes, &grants)?;
    Ok(ProcessorInstance::new(
        sandbox,
        Arc::new(loaded),
        "bench",
        Provisions::simple("bench", grants),
        Limits::default(),
    ))
}

/// A deadline no bench call reaches.
pub fn far() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(3600)
}

/// An empty batch for the bench topic.
pub fn empty_batch() -> Batch {
    Batch { topic: "bench".into(), partition: 0, count: 0, records: Vec::new() }
}

/// Measures every case.
pub fn run(component: &Path) -> anyhow::Result<Vec<Row>> {
    let mut instance = instance(component, Grants::default())?;
    let mut rows = Vec::new();
    for &batch_len in &BATCHES {
        for &value_len in &VALUES {
            let records = Records::new(batch_len, Shape { value_len });
            let mut batch = empty_batch();
            records.encode_into(&mut batch);
            let batch_bytes = batch.records.len();
            // Enough calls per sample to last a few milliseconds.
            let iters = (20_000 / batch_len).min(40_000_000 / batch_bytes).max(2);
            let (reply, _) = instance.process(&batch, &records.offsets, far()).map_err(anyhow::Error::from)?;
            anyhow::ensure!(
                reply.len() == batch_len && reply.all_processed(),
                "the passthrough guest did not process every record"
            );
            anyhow::ensure!(native(&batch).len() == batch_len, "native path miscounted");

            let (mut encode, mut validate, mut native_ns, mut wasm) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for sample in 0..WARMUP_SAMPLES + SAMPLES {
                let e = ns_per_call(iters, || records.encode_into(black_box(&mut batch)));
                let v = ns_per_call(iters, || {
                    black_box(wire::validate(black_box(&batch.records), batch.count)).expect("valid");
                });
                let n = ns_per_call(iters, || {
                    records.encode_into(&mut batch);
                    black_box(native(black_box(&batch)));
                });
                let w = ns_per_call(iters, || {
                    records.encode_into(&mut batch);
                    black_box(
                        instance.process(black_box(&batch), &records.offsets, far()).expect("passthrough never faults"),
                    );
                });
                if sample >= WARMUP_SAMPLES {
                    let per = batch_len as f64;
                    encode.push(e / per);
                    validate.push(v / per);
                    native_ns.push(n / per);
                    wasm.push(w / per);
                }
            }
            rows.push(Row {
                batch: batch_len,
                value_len,
                encode: median(&mut encode),
                validate: median(&mut validate),
                native: median(&mut native_ns),
                wasm: median(&mut wasm),
            });
        }
    }
    Ok(rows)
}

/// The markdown table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| batch | value | encode (host) | validate (native) | native total | wasm total | overhead | wasm / native |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | **{:.1}** | {:.2}× |\n",
            r.batch,
            size(r.value_len),
            r.encode,
            r.validate,
            r.native,
            r.wasm,
            r.overhead(),
            r.wasm / r.native
        ));
    }
    out.push_str("\nAll figures in ns per record, medians of 15 samples. \"native total\" and \"wasm total\" both include the host-side encoding.\n");
    out
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 { format!("{} KiB", bytes / 1024) } else { format!("{bytes} B") }
}
