//! The host's default per-batch limits. The host takes its defaults from here, and
//! [`testing::Harness`](crate::testing::Harness) enforces the same numbers, so a test
//! that passes natively does not first fail on a limit in production.

/// Most output records one batch may emit.
pub const MAX_OUTPUTS_PER_BATCH: usize = 100_000;
/// Largest output record (key + value + header names and values), in bytes: what
/// fits librdkafka's default `message.max.bytes` (1,000,000) with room for the
/// record's framing.
pub const MAX_OUTPUT_BYTES: usize = 960 << 10;
/// Most output bytes one batch may emit: what one batch can make the host hold in
/// memory. Each record counts its topic, key, value, header names and values, plus
/// [`OUTPUT_RECORD_COST`], plus [`OUTPUT_HEADER_COST`] per header.
pub const OUTPUT_BYTES_PER_BATCH: usize = 16 << 20;
/// What each output record costs the batch's budget on top of its bytes: what the
/// host holds for a record besides them.
pub const OUTPUT_RECORD_COST: usize = 256;
/// Most bytes of state one input partition may hold: each entry counts its key and
/// value plus [`STATE_ENTRY_COST`].
pub const STATE_BYTES_PER_PARTITION: usize = 64 << 20;
/// What each state entry costs its partition on top of its key and value.
pub const STATE_ENTRY_COST: usize = 128;
/// Longest state key, in bytes.
pub const MAX_STATE_KEY_BYTES: usize = 4 << 10;
/// Longest state value, in bytes: a changelog record must fit librdkafka's default
/// `message.max.bytes` with its key.
pub const MAX_STATE_VALUE_BYTES: usize = 512 << 10;
/// Most state writes (puts and deletes) one batch may make.
pub const STATE_WRITES_PER_BATCH: u32 = 100_000;
/// What each header of an output record costs the batch's budget on top of its name
/// and value: what the host holds for a header besides them.
pub const OUTPUT_HEADER_COST: usize = 96;
