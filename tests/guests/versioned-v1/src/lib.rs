//! Test guest for hot swaps: every record it processes goes to the `ledger` topic
//! tagged with the build that processed it, so a test can tell which version handled
//! each record in each attempt.
//!
//! The crates `ferry-guest-versioned-v1` to `-v4` all build this file; the tag is
//! the last part of the package name, so each build has its own digest. v4's
//! self-test needs 24 MiB of memory: it passes under a pipeline's default 64 MiB
//! limit and fails under a 16 MiB one (a version one host of a group refuses).
//!
//! Ledger value: `<partition>:<offset>:<tag>:<first offset of the batch>:<unix µs>`,
//! keyed by the partition so one input partition's entries stay in processing order.
//! The time is the guest's wall clock when it handled the record (WASI clocks are
//! the host's), which the hot-swap benchmark uses to time switches.

use std::time::{SystemTime, UNIX_EPOCH};

use ferry_sdk::{Batch, Context, Error, Outcome, Processor, Record, ResultExt};

/// Which build this is: `v1`, `v2`, ...
const TAG: &str = match env!("CARGO_PKG_NAME").as_bytes() {
    [.., b'-', b'v', b'1'] => "v1",
    [.., b'-', b'v', b'2'] => "v2",
    [.., b'-', b'v', b'3'] => "v3",
    [.., b'-', b'v', b'4'] => "v4",
    _ => panic!("unexpected package name"),
};

/// What v4's self-test allocates.
const SELF_TEST_BYTES: usize = 24 << 20;

/// The ledger writer.
#[derive(Debug, Default)]
pub struct Versioned;

impl Processor for Versioned {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        tag(record, record.offset(), ctx)
    }

    fn self_test(&mut self) -> Result<(), String> {
        if TAG == "v4" {
            let table = std::hint::black_box(vec![1_u8; SELF_TEST_BYTES]);
            if table.iter().step_by(4096).any(|b| *b != 1) {
                return Err("the table did not hold".to_owned());
            }
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: &Batch<'_>, ctx: &mut Context) -> Vec<Outcome> {
        let first = batch.iter().next().map_or(-1, |r| r.offset());
        batch.iter().map(|record| ctx.for_record(&record, |ctx| tag(&record, first, ctx)).into()).collect()
    }
}

fn tag(record: &Record<'_>, batch_first: i64, ctx: &mut Context) -> Result<(), Error> {
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let partition = record.partition().to_string();
    let entry = format!("{partition}:{}:{TAG}:{batch_first}:{micros}", record.offset());
    ctx.emit_kv("ledger", &partition, &entry).transient()
}

ferry_sdk::export_processor!(Versioned);
