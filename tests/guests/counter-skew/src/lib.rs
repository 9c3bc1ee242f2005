//! A wrong version of `examples/counter`, for shadow tests: the same state format and
//! outputs, but every record counts twice, so the state it writes (and the counts it
//! emits) differ from the counter's from its first record on.

use ferry_sdk::{Context, Error, Processor, Record, Settings};

/// Counts each record twice.
#[derive(Debug)]
pub struct CounterSkew {
    output_topic: String,
}

impl Default for CounterSkew {
    fn default() -> Self {
        CounterSkew { output_topic: "counts".to_owned() }
    }
}

impl Processor for CounterSkew {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        if let Some(topic) = settings.get("output_topic") {
            self.output_topic = topic.to_owned();
        }
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let Some(key) = record.key() else { return Ok(()) };
        let count = ctx.state().get_u64(key).unwrap_or(0) + 2;
        ctx.state().put_u64(key, count).map_err(|e| Error::reject(e.to_string()))?;
        ctx.emit_kv(&self.output_topic, key, count.to_string()).map_err(|e| Error::retry(e.to_string()))?;
        Ok(())
    }
}

ferry_sdk::export_processor!(CounterSkew);
