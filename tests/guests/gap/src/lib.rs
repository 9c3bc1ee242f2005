//! Test guest: holds back the record at offset 5 (`retry`, "held back") and processes
//! every other record, to prove the commit never passes offset 5.

use ferry_sdk::{Context, Outcome, Processor, Record};

/// The offset that is never finished.
pub const HELD_BACK: i64 = 5;

/// Processes everything except offset [`HELD_BACK`].
#[derive(Debug, Default)]
pub struct Gap;

impl Processor for Gap {
    fn process(&mut self, record: &Record<'_>, _ctx: &mut Context) -> Outcome {
        if record.offset() == HELD_BACK { Outcome::retry("held back") } else { Outcome::Processed }
    }
}

ferry_sdk::export_processor!(Gap);
