//! Benchmark guest: a fixed amount of computation per record, so that the guest, not
//! the boundary or librdkafka, is what a pipeline thread spends its time on (the
//! `workers` section of the benchmark suite).
//!
//! Each record costs `rounds` steps of a multiply-xorshift mix seeded by its value
//! (setting `rounds`, default [`DEFAULT_ROUNDS`]: about 5 µs on the benchmark
//! machine). The result decides nothing but is checked, so the work cannot be
//! optimised away.

use ferry_sdk::{Context, Error, Processor, Record, Settings};

/// Mixing steps per record unless the pipeline sets `rounds`.
pub const DEFAULT_ROUNDS: u32 = 2_000;

/// Works `rounds` steps per record, then marks it processed.
#[derive(Debug)]
pub struct Busy {
    rounds: u32,
}

impl Default for Busy {
    fn default() -> Self {
        Busy { rounds: DEFAULT_ROUNDS }
    }
}

/// The work: a chain of dependent multiplies and shifts over `seed`.
pub fn mix(seed: u64, rounds: u32) -> u64 {
    let mut x = seed | 1;
    for _ in 0..rounds {
        x ^= x >> 29;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 32;
    }
    x
}

impl Processor for Busy {
    fn configure(&mut self, settings: &Settings) -> Result<(), String> {
        self.rounds = settings.parse_or("rounds", DEFAULT_ROUNDS).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        let seed = record
            .value()
            .unwrap_or_default()
            .iter()
            .fold(record.offset() as u64, |h, b| h.rotate_left(5) ^ u64::from(*b));
        // Every step maps 0 to 0 and nothing else to 0, so `mix` of a nonzero seed is
        // never 0: a check the optimiser cannot see through.
        if mix(seed, self.rounds) == 0 { Err(Error::reject("the mix reached 0")) } else { Ok(()) }
    }
}

ferry_sdk::export_processor!(Busy);
