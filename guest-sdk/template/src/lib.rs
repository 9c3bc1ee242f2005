//! A ferry processor: forwards each record's value, upper-cased, to the topic the
//! pipeline sets as `output_topic`, keyed like the input. Replace it with yours.

use ferry_sdk::{Context, Error, Output, Processor, Record, ResultExt, Settings};

/// Upper-cases values.
#[derive(Debug, Default)]
pub struct Upper {
    output_topic: String,
}

impl Processor for Upper {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        // Missing: "setting `output_topic` is required but the pipeline does not set it".
        self.output_topic = settings.require("output_topic")?.to_owned();
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context) -> Result<(), Error> {
        let value = record.value().reject_with("tombstones are not supported")?;
        let text = std::str::from_utf8(value).reject_with("the value is not UTF-8")?;
        ctx.debug(&format!("offset {}", record.offset()));
        let upper = text.to_uppercase();
        ctx.emit(Output::to(&self.output_topic).optional_key(record.key()).value(&upper))?;
        Ok(())
    }
}

ferry_sdk::export_processor!(Upper);

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sdk::Outcome;
    use ferry_sdk::testing::{Harness, TestBatch};

    /// The pipeline in ferry.toml: its grants, settings and limits, as the host applies them.
    fn harness() -> Harness {
        Harness::from_config("ferry.toml", "{{name}}").unwrap()
    }

    #[test]
    fn upper_cases_values() {
        let harness = harness();
        let mut upper = harness.processor::<Upper>().unwrap();
        let run = harness.run(&mut upper, &TestBatch::new("in", 0).record("k", "hi").value_only("there"));
        run.assert_all_processed();
        let outputs: Vec<_> = run.emitted.iter().map(|e| (e.key_str(), e.value_str())).collect();
        assert_eq!(outputs, [(Some("k"), Some("HI")), (None, Some("THERE"))]);
    }

    #[test]
    fn rejects_tombstones() {
        let harness = harness();
        let mut upper = harness.processor::<Upper>().unwrap();
        let run = harness.run(&mut upper, &TestBatch::new("in", 0).tombstone("gone"));
        assert_eq!(run.outcomes, [Outcome::reject("tombstones are not supported")]);
        assert!(run.emitted.is_empty());
    }

    #[test]
    fn the_output_topic_is_required() {
        let missing = Harness::new().processor::<Upper>().unwrap_err();
        assert_eq!(missing, "setting `output_topic` is required but the pipeline does not set it");
    }
}
