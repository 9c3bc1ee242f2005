//! Test guest for shadow deploys: every record goes to the `ledger` topic with its
//! key and value as they came, and a `ts` header with the guest's wall clock (which
//! the shadow tests ignore, as a pipeline would a timestamp).
//!
//! The crates `ferry-guest-mirror-*` all build this file; the last part of the
//! package name says how the build behaves, so each has its own digest:
//!
//! | build | behaviour |
//! |---|---|
//! | `v1`, `v2` | the same: the record as it came |
//! | `odd` | the same, except a record whose value is a number `n` with `n % 100 == 37`: its value gets a `!` (a known 1 %) |
//! | `panic` | panics on every record |
//! | `sleep` | sleeps an hour in every batch (a blocking WASI clock wait) |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_sdk::{Batch, Context, Error, Output, Processor, Record, ResultExt};

/// How this build behaves.
const BUILD: &str = match env!("CARGO_PKG_NAME").as_bytes() {
    [.., b'-', b'v', b'1'] => "v1",
    [.., b'-', b'v', b'2'] => "v2",
    [.., b'-', b'o', b'd', b'd'] => "odd",
    [.., b'-', b'p', b'a', b'n', b'i', b'c'] => "panic",
    [.., b'-', b's', b'l', b'e', b'e', b'p'] => "sleep",
    _ => panic!("unexpected package name"),
};

/// The mirror.
#[derive(Debug, Default)]
pub struct Mirror;

impl Processor for Mirror {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        mirror(record, ctx)
    }

    fn self_test(&mut self) -> Result<(), String> {
        // Keeps the build's name in the component, so v1 and v2 differ in digest.
        if std::hint::black_box(BUILD).is_empty() { Err("no build".to_owned()) } else { Ok(()) }
    }

    fn process_batch(&mut self, batch: &Batch<'_>, ctx: &mut Context) -> Vec<ferry_sdk::Outcome> {
        if BUILD == "sleep" {
            std::thread::sleep(Duration::from_secs(3600));
        }
        batch.iter().map(|record| ctx.for_record(&record, |ctx| mirror(&record, ctx)).into()).collect()
    }
}

fn mirror(record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
    if BUILD == "panic" {
        panic!("the panic build panics on every record");
    }
    let mut value = record.value().unwrap_or_default().to_vec();
    if BUILD == "odd"
        && std::str::from_utf8(&value).ok().and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| n % 100 == 37)
    {
        value.push(b'!');
    }
    let micros = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros()).to_string();
    ctx.emit(Output::to("ledger").optional_key(record.key()).value(&value).header("ts", &micros)).transient()
}

ferry_sdk::export_processor!(Mirror);
