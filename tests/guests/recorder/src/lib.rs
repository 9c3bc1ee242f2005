//! Test guest: the independent checker's ledger (`ferry_tests::checker`).
//!
//! For every record handed to it, it logs a delivery line, then an outcome line,
//! and emits `"<incarnation>/<topic>/<partition>/<offset>/<nonce>"` to the `seen`
//! topic (with the record's key and headers), so a published output can be traced
//! to the delivery that made it. It logs the partition lifecycle too:
//!
//! ```text
//! ledger assigned inc=<incarnation> tp=<topic>/<partition>
//! ledger revoked inc=<incarnation> tp=<topic>/<partition>
//! ledger delivered inc=<incarnation> tp=<topic>/<partition> offset=<offset> nonce=<nonce>
//! ledger outcome nonce=<nonce> result=<processed|retry|reject>
//! ```
//!
//! The incarnation is the pipeline setting `incarnation` (one per process start in
//! the tests). The record's value picks a behaviour:
//!
//! | value | behaviour |
//! | --- | --- |
//! | `slow:<ms>;...` | busy-waits that long, then as below |
//! | `...retry-once...` | `Retry` the first time this instance sees the record, then processed |
//! | `...retry...` | `Retry` on every attempt |
//! | `...reject...` | `Reject` |
//! | `...panic...` | panics (a trap) |
//! | `...flaky...` | `Retry` on about half the attempts, else processed |
//! | anything else | processed |

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ferry_sdk::{Context, Error, Output, Processor, Record, Settings, TopicPartition};

/// The recorder.
#[derive(Debug, Default)]
pub struct Recorder {
    incarnation: String,
    /// (partition, offset) of `retry-once` records already asked to retry.
    retried_once: HashSet<(i32, i64)>,
}

impl Processor for Recorder {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        self.incarnation = settings.get("incarnation").unwrap_or("?").to_owned();
        Ok(())
    }

    fn assigned(&mut self, partition: &TopicPartition) {
        log_line(&format!("ledger assigned inc={} tp={partition}", self.incarnation));
    }

    fn revoked(&mut self, partition: &TopicPartition) {
        log_line(&format!("ledger revoked inc={} tp={partition}", self.incarnation));
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let nonce = wasi::random::random::get_random_u64();
        let (topic, partition, offset) = (record.topic(), record.partition(), record.offset());
        ctx.info(&format!(
            "ledger delivered inc={} tp={topic}/{partition} offset={offset} nonce={nonce}",
            self.incarnation
        ));
        let value = record.value().and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
        if let Some(ms) =
            value.strip_prefix("slow:").and_then(|rest| rest.split(';').next()).and_then(|ms| ms.parse().ok())
        {
            let until = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let result = if value.contains("panic") {
            panic!("recorder: asked to panic at {topic}/{partition}/{offset}");
        } else if value.contains("reject") {
            Err(Error::reject("asked to reject"))
        } else if value.contains("retry-once") && self.retried_once.insert((partition, offset)) {
            Err(Error::retry("asked to retry once"))
        } else if (value.contains("retry") && !value.contains("retry-once"))
            || (value.contains("flaky") && nonce.is_multiple_of(2))
        {
            Err(Error::retry("asked to retry"))
        } else {
            let seen = format!("{}/{topic}/{partition}/{offset}/{nonce}", self.incarnation);
            ctx.emit(Output::to("seen").optional_key(record.key()).value(&seen).headers(record.headers()))
                .map_err(|error| Error::retry(format!("could not report: {error}")))
        };
        let word = match &result {
            Ok(()) => "processed",
            Err(e) if e.is_transient() => "retry",
            Err(_) => "reject",
        };
        ctx.info(&format!("ledger outcome nonce={nonce} result={word}"));
        result
    }
}

/// Lifecycle calls have no context to log through: stdout reaches the same log.
fn log_line(line: &str) {
    println!("{line}");
}

ferry_sdk::export_processor!(Recorder);
