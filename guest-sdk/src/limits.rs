//! The host's default per-batch limits. The host takes its defaults from here, and
//! [`testing::Harness`](crate::testing::Harness) enforces the same numbers, so a test
//! that passes natively does not first fail on a limit in production.

/// Most output records one batch may emit.
pub const MAX_OUTPUTS_PER_BATCH: usize = 100_000;
/// Largest output record (key + value + header names and values), in bytes: what
/// fits librdkafka's default `message.max.bytes` (1,000,000) with room for the
/// record's framing.
pub const MAX_OUTPUT_BYTES: usize = 960 << 10;
/// Most output bytes (the sum of record sizes) one batch may emit: what one batch
/// can make the host hold in memory.
pub const OUTPUT_BYTES_PER_BATCH: usize = 16 << 20;
