/**
 * The host's default per-batch limits: the same numbers as the Rust SDK's
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
