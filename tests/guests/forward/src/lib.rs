//! Forwards every record, key and value, to the topic named by the `to` setting:
//! one output per record, the smallest guest that writes to Kafka (the benchmarks'
//! exactly-once and at-least-once runs).

use ferry_sdk::{Context, Error, Output, Processor, Record, Settings};

/// Sends each record on, unchanged, to `to`.
#[derive(Debug, Default)]
pub struct Forward {
    to: String,
}

impl Processor for Forward {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        self.to = settings.require("to").map_err(|e| e.to_string())?.to_owned();
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        ctx.emit(Output::to(&self.to).optional_key(record.key()).optional_value(record.value()))
            .map_err(|e| Error::retry(e.to_string()))
    }
}

ferry_sdk::export_processor!(Forward);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::testing::{Harness, TestBatch};

    #[test]
    fn forwards_key_and_value() {
        let harness = Harness::new().setting("to", "out").allow_topic("out");
        let mut forward: Forward = harness.processor().unwrap();
        let run = harness.run(&mut forward, &TestBatch::new("in", 0).record("k", "v").value_only("w"));
        assert!(run.all_processed());
        let sent: Vec<_> =
            run.emitted.iter().map(|e| (e.topic.as_str(), e.key.as_deref(), e.value.as_deref())).collect();
        assert_eq!(sent, [("out", Some(&b"k"[..]), Some(&b"v"[..])), ("out", None, Some(&b"w"[..]))]);
    }

    #[test]
    fn refuses_to_start_without_a_destination() {
        assert!(Harness::new().processor::<Forward>().is_err());
    }
}
