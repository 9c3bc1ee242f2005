//! A second version of `examples/counter`: the same state (a key's count as the
//! SDK's `u64`, under the record key), its counts emitted as `v2:<count>` to the
//! `output_topic` setting's topic, so a test can tell which version counted what.

use ferry_sdk::{Context, Error, Processor, Record, Settings};

/// Counts records per key in state, like the counter.
#[derive(Debug)]
pub struct CounterV2 {
    output_topic: String,
}

impl Default for CounterV2 {
    fn default() -> Self {
        CounterV2 { output_topic: "counts".to_owned() }
    }
}

impl Processor for CounterV2 {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        if let Some(topic) = settings.get("output_topic") {
            self.output_topic = topic.to_owned();
        }
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let Some(key) = record.key() else { return Ok(()) };
        let count = ctx.state().get_u64(key).unwrap_or(0) + 1;
        ctx.state().put_u64(key, count).map_err(|e| Error::reject(e.to_string()))?;
        ctx.emit_kv(&self.output_topic, key, format!("v2:{count}")).map_err(|e| Error::retry(e.to_string()))?;
        Ok(())
    }
}

ferry_sdk::export_processor!(CounterV2);
