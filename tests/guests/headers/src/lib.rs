//! A passthrough that reads every record's headers: the benchmark guest for the cost
//! of headers (it imports `headers`, so the host reads and sends them; the example
//! passthrough does not).

use std::hint::black_box;

use ferry_sdk::{Context, Error, Processor, Record};

/// Marks every record processed after walking its headers.
#[derive(Debug, Default)]
pub struct ReadHeaders;

impl Processor for ReadHeaders {
    fn process(&mut self, record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        let bytes: usize = record.headers().map(|(name, value)| name.len() + value.map_or(0, <[u8]>::len)).sum();
        black_box(bytes);
        Ok(())
    }
}

ferry_sdk::export_processor!(ReadHeaders);
