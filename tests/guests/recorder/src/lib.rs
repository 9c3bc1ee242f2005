//! Test guest: the tests' independent ledger of what the guest saw.
//!
//! For every record it emits `"<topic>/<partition>/<offset>"` to the `seen` topic,
//! with the record's headers, and marks the record processed. A value starting with `slow:<ms>;` makes it busy-wait
//! that long first, so a test can kill the host mid-stream.

use std::time::{Duration, Instant};

use ferry_sdk::{Context, Error, Output, Processor, Record, ResultExt};

/// The recorder.
#[derive(Debug, Default)]
pub struct Recorder;

impl Processor for Recorder {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let value = record.value().and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
        if let Some(ms) =
            value.strip_prefix("slow:").and_then(|rest| rest.split(';').next()).and_then(|ms| ms.parse().ok())
        {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let seen = format!("{}/{}/{}", record.topic(), record.partition(), record.offset());
        ctx.emit(Output::to("seen").optional_key(record.key()).value(&seen).headers(record.headers())).transient()
    }
}

ferry_sdk::export_processor!(Recorder);
