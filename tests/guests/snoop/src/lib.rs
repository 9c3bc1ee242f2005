//! Test guest: proves a reused (pooled) instance slot starts with zeroed memory.
//!
//! It owns a 16 MiB zero-initialized static region (in `.bss`, so it is not part of
//! the module's data segments: only a correctly zeroed linear memory makes it zero).
//! On the first batch of an instance it scans the region for any non-zero byte, then
//! fills it with `0xAB`. If the scan found anything, every record of every batch of
//! that instance is rejected with "saw stale data"; otherwise records are processed.
//! It imports nothing.

use std::cell::UnsafeCell;
use std::hint::black_box;

use ferry_sdk::{Batch, Context, Error, Outcome, Processor, Record};

/// Size of the scanned region.
pub const REGION_BYTES: usize = 16 << 20;
/// The byte the region is filled with after the scan.
pub const MARKER: u8 = 0xAB;

struct Region(UnsafeCell<[u8; REGION_BYTES]>);

// SAFETY: a wasm32 component instance is single-threaded and the region is only
// touched from `Snoop::scan`, which is not reentrant.
unsafe impl Sync for Region {}

static REGION: Region = Region(UnsafeCell::new([0; REGION_BYTES]));

/// Scans on first use, remembers what it saw.
#[derive(Debug, Default)]
pub struct Snoop {
    saw_stale: Option<bool>,
}

impl Snoop {
    fn scan() -> bool {
        // Hide the pointer's origin so the optimizer cannot assume the static still
        // holds its initial zeros.
        let ptr = black_box(REGION.0.get().cast::<u8>());
        // SAFETY: the pointer covers the whole static; nothing else borrows it (see
        // the `Sync` impl above).
        let region = unsafe { std::slice::from_raw_parts_mut(ptr, REGION_BYTES) };
        let stale = region.iter().any(|&b| b != 0);
        region.fill(MARKER);
        black_box(region.as_ptr());
        stale
    }
}

impl Processor for Snoop {
    fn process(&mut self, _record: &Record<'_>, _ctx: &mut Context) -> Result<(), Error> {
        Ok(())
    }

    fn process_batch(&mut self, batch: &Batch<'_>, _ctx: &mut Context) -> Vec<Outcome> {
        let stale = *self.saw_stale.get_or_insert_with(Self::scan);
        let outcome = if stale { Outcome::reject("saw stale data") } else { Outcome::Processed };
        vec![outcome; batch.len()]
    }
}

ferry_sdk::export_processor!(Snoop);
