//! Test guest: implements the processor world and imports nothing it needs a grant
//! for, but its self-test fails, so the host must refuse to deploy it.

use ferry_sdk::{Context, Error, Processor, Record};

/// Processes everything; refuses to go live.
#[derive(Debug, Default)]
pub struct FailingSelfTest;

impl Processor for FailingSelfTest {
    fn process(&mut self, _record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        Ok(())
    }

    fn self_test(&mut self) -> Result<(), String> {
        Err("the reference table is missing (self-test of the failing-self-test guest)".to_owned())
    }
}

ferry_sdk::export_processor!(FailingSelfTest);
