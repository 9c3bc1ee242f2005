//! Test guest: holds back the record at offset 5 (`retry`, "held back") and processes
//! every other record, to prove the commit never passes offset 5.

use ferry_sdk::{Context, Error, Processor, Record};

/// The offset that is never finished.
pub const HELD_BACK: i64 = 5;

/// Processes everything except offset [`HELD_BACK`].
#[derive(Debug, Default)]
pub struct Gap;

impl Processor for Gap {
    fn process(&mut self, record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        if record.offset() == HELD_BACK { Err(Error::retry("held back")) } else { Ok(()) }
    }
}

ferry_sdk::export_processor!(Gap);
