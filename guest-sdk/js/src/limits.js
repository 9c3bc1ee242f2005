/**
 * The host's default per-batch and state limits: the same numbers as the Rust SDK's
 * `ferry_sdk::limits` (which the host takes its defaults from), so a test that
 * passes under the Harness does not first fail on a limit in production.
 * @module
 */

/** Most output records one batch may emit. */
export const MAX_OUTPUTS_PER_BATCH = 100_000;
/** Largest output record (key + value + header names and values), in bytes. */
export const MAX_OUTPUT_BYTES = 1 << 20;
/** Most output bytes (the sum of record sizes) one batch may emit. */
export const OUTPUT_BYTES_PER_BATCH = 16 << 20;
/** Most bytes of state one input partition may hold: each entry counts its key and value plus `STATE_ENTRY_COST`. */
export const STATE_BYTES_PER_PARTITION = 64 << 20;
/** What each state entry costs its partition on top of its key and value. */
export const STATE_ENTRY_COST = 128;
/** Longest state key, in bytes. */
export const MAX_STATE_KEY_BYTES = 4 << 10;
/** Longest state value, in bytes. */
export const MAX_STATE_VALUE_BYTES = 512 << 10;
/** Most state writes (puts and deletes) one batch may make. */
export const STATE_WRITES_PER_BATCH = 100_000;
/** Most entries one state scan returns. */
export const MAX_SCAN_ENTRIES = 10_000;
/** Most key and value bytes one state scan returns (at least one entry is returned). */
export const MAX_SCAN_BYTES = 4 << 20;
