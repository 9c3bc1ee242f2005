//! Test guest: processes everything, but its self-test sleeps for [`SELF_TEST_MS`]
//! (a blocking WASI clock wait, no CPU), so a deploy of it holds one slot of the
//! host's instance pool that long: two deploys of it at once on a host with one
//! free slot find the pool full.

use std::time::Duration;

use ferry_sdk::{Context, Error, Processor, Record};

/// How long the self-test takes.
pub const SELF_TEST_MS: u64 = 6_000;

/// Processes everything; slow to go live.
#[derive(Debug, Default)]
pub struct SlowSelfTest;

impl Processor for SlowSelfTest {
    fn process(&mut self, _record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        Ok(())
    }

    fn self_test(&mut self) -> Result<(), String> {
        std::thread::sleep(Duration::from_millis(SELF_TEST_MS));
        Ok(())
    }
}

ferry_sdk::export_processor!(SlowSelfTest);
