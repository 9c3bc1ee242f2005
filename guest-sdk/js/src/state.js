/**
 * Keyed state: a map of byte keys to byte values per input partition, kept by the
 * host across batches, restarts and rebalances.
 *
 * A processor reaches the state of the batch's partition with `ctx.state()` and
 * declares the `state` capability in its package.json (only then is the component
 * built with the `state` import, and the pipeline needs a `[pipeline.state]`
 * section). The writes of a batch take effect only if every record of the batch
 * finishes (processed or rejected); after a retry the whole batch comes again
 * against the state as it was before it.
 *
 * With at-least-once delivery, records after the last commit run again after a
 * crash, against state that may already include them: make updates idempotent
 * where that matters. With exactly-once, state, outputs and offsets commit together.
 * @module
 */

import { toBytes } from './context.js';
import * as limits from './limits.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The host refused a state write. The subclasses say why and carry the host's
 * limit; their messages are the Rust SDK's `StateError` messages. Left uncaught in
 * `process` it rejects the record (the write will not fit next time either).
 */
export class StateError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** The key is longer than `limit` bytes. */
export class KeyTooLarge extends StateError {
  /** @param {number} limit */
  constructor(limit) {
    super(`state key exceeds the limit of ${limit} bytes`);
    this.limit = limit;
  }
}

/** The value is longer than `limit` bytes. */
export class ValueTooLarge extends StateError {
  /** @param {number} limit */
  constructor(limit) {
    super(`state value exceeds the limit of ${limit} bytes`);
    this.limit = limit;
  }
}

/** The partition's state would exceed `limit` bytes. */
export class PartitionFull extends StateError {
  /** @param {number} limit */
  constructor(limit) {
    super(`the partition's state would exceed its limit of ${limit} bytes`);
    this.limit = limit;
  }
}

/** The batch already made `limit` writes (puts and deletes). */
export class TooManyWrites extends StateError {
  /** @param {number} limit */
  constructor(limit) {
    super(`the batch made its ${limit} state writes already`);
    this.limit = limit;
  }
}

/**
 * Where state calls go: the host's `state` import in a component, the harness's
 * memory in tests. `put` and `delete` throw `StateError`.
 * @typedef {object} Store
 * @property {(key: Uint8Array) => Uint8Array | null} get
 * @property {(key: Uint8Array, value: Uint8Array) => void} put
 * @property {(key: Uint8Array) => void} delete
 * @property {(prefix: Uint8Array, limit: number) => Array<[Uint8Array, Uint8Array]>} scan
 */

/**
 * The keyed state of the input partition whose batch is being processed, from
 * `ctx.state()`. Keys and values are bytes (strings are sent as UTF-8); the typed
 * helpers encode as the Rust SDK's do, so processors in either language read each
 * other's state:
 *
 *     const state = ctx.state();
 *     const count = (state.getU64(record.key) ?? 0n) + 1n;
 *     state.putU64(record.key, count);
 */
export class State {
  #store;

  /** @param {Store} store */
  constructor(store) {
    this.#store = store;
  }

  /**
   * The value of `key`, as this batch left it so far, or `null`.
   * @param {string | Uint8Array} key
   * @returns {Uint8Array | null}
   */
  get(key) {
    return this.#store.get(toBytes(key));
  }

  /**
   * Sets `key` to `value`; throws `StateError` over a limit.
   * @param {string | Uint8Array} key
   * @param {string | Uint8Array} value
   */
  put(key, value) {
    this.#store.put(toBytes(key), toBytes(value));
  }

  /**
   * Removes `key` (absent is fine); throws `StateError` over a limit.
   * @param {string | Uint8Array} key
   */
  delete(key) {
    this.#store.delete(toBytes(key));
  }

  /**
   * Up to `limit` `[key, value]` pairs whose key starts with `prefix`, in key
   * order. The host returns at most 10,000 entries and 4 MiB per call: scan on
   * from the last key returned for more.
   * @param {string | Uint8Array} [prefix]
   * @param {number} [limit]
   * @returns {Array<[Uint8Array, Uint8Array]>}
   */
  scan(prefix = '', limit = limits.MAX_SCAN_ENTRIES) {
    if (!Number.isInteger(limit) || limit < 0 || limit > 0xffff_ffff) throw new RangeError(`scan limit ${limit} is not a u32`);
    return this.#store.scan(toBytes(prefix), limit);
  }

  /**
   * The value of `key` as UTF-8 text (`null` if absent or not UTF-8).
   * @param {string | Uint8Array} key
   * @returns {string | null}
   */
  getText(key) {
    const value = this.get(key);
    if (value === null) return null;
    try {
      return utf8.decode(value);
    } catch {
      return null;
    }
  }

  /**
   * The value of `key` as a little-endian u64 (`null` if absent or not 8 bytes),
   * as the Rust SDK's `put_u64` writes it.
   * @param {string | Uint8Array} key
   * @returns {bigint | null}
   */
  getU64(key) {
    const value = this.get(key);
    if (value === null || value.byteLength !== 8) return null;
    return new DataView(value.buffer, value.byteOffset, 8).getBigUint64(0, true);
  }

  /**
   * Sets `key` to `value` as a little-endian u64.
   * @param {string | Uint8Array} key
   * @param {bigint | number} value
   */
  putU64(key, value) {
    const n = BigInt(value);
    if (n < 0n || n >= 1n << 64n) throw new RangeError(`${value} is not a u64`);
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, n, true);
    this.put(key, bytes);
  }

  /**
   * The value of `key` parsed as JSON, or `fallback` if absent (throws
   * `SyntaxError` if the value is not JSON).
   * @param {string | Uint8Array} key
   * @param {unknown} [fallback]
   * @returns {any}
   */
  getJson(key, fallback = null) {
    const text = this.get(key);
    return text === null ? fallback : JSON.parse(utf8.decode(text));
  }

  /**
   * Sets `key` to `value` as JSON (UTF-8).
   * @param {string | Uint8Array} key
   * @param {unknown} value
   */
  putJson(key, value) {
    const text = JSON.stringify(value);
    if (text === undefined) throw new TypeError(`${String(value)} has no JSON form`);
    this.put(key, text);
  }
}

/**
 * Bytes as a string of one char per byte: a map key that sorts like the bytes.
 * @param {Uint8Array} bytes
 */
function binary(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 4096) text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  return text;
}

/**
 * What an entry costs its partition, as the host counts it.
 * @param {Uint8Array} key
 * @param {Uint8Array} value
 */
export function charge(key, value) {
  return limits.STATE_ENTRY_COST + key.byteLength + value.byteLength;
}

/**
 * One partition's state during one batch, in memory: the host's limits, checked
 * in the host's order. Writes go to a copy of the partition's map, which the
 * harness keeps only if the batch finishes.
 * @implements {Store}
 */
export class MemoryStore {
  /** @type {Map<string, [Uint8Array, Uint8Array]>} */
  entries;
  #require;
  #partitionBytes;
  #writesPerBatch;
  #bytes = 0;
  #writes = 0;
  /** Whether the batch wrote anything. */
  touched = false;

  /**
   * @param {Map<string, [Uint8Array, Uint8Array]>} entries the partition's map (copied)
   * @param {() => void} require checks the `state` capability
   * @param {number} [partitionBytes]
   * @param {number} [writesPerBatch]
   */
  constructor(entries, require, partitionBytes = limits.STATE_BYTES_PER_PARTITION, writesPerBatch = limits.STATE_WRITES_PER_BATCH) {
    this.entries = new Map(entries);
    this.#require = require;
    this.#partitionBytes = partitionBytes;
    this.#writesPerBatch = writesPerBatch;
    for (const [key, value] of this.entries.values()) this.#bytes += charge(key, value);
  }

  /** @param {Uint8Array} key */
  get(key) {
    this.#require();
    const entry = this.entries.get(binary(key));
    return entry ? entry[1].slice() : null;
  }

  #countWrite() {
    if (this.#writes >= this.#writesPerBatch) throw new TooManyWrites(this.#writesPerBatch);
    this.#writes += 1;
    this.touched = true;
  }

  /**
   * @param {Uint8Array} key
   * @param {Uint8Array} value
   */
  put(key, value) {
    this.#require();
    if (key.byteLength > limits.MAX_STATE_KEY_BYTES) throw new KeyTooLarge(limits.MAX_STATE_KEY_BYTES);
    if (value.byteLength > limits.MAX_STATE_VALUE_BYTES) throw new ValueTooLarge(limits.MAX_STATE_VALUE_BYTES);
    const name = binary(key);
    const old = this.entries.get(name);
    const oldCharge = old ? charge(old[0], old[1]) : 0;
    const newCharge = charge(key, value);
    if (newCharge > oldCharge && this.#bytes - oldCharge + newCharge > this.#partitionBytes) {
      throw new PartitionFull(this.#partitionBytes);
    }
    this.#countWrite();
    this.#bytes += newCharge - oldCharge;
    // Copies, as the host does: the processor may reuse its buffers.
    this.entries.set(name, [key.slice(), value.slice()]);
  }

  /** @param {Uint8Array} key */
  delete(key) {
    this.#require();
    if (key.byteLength > limits.MAX_STATE_KEY_BYTES) throw new KeyTooLarge(limits.MAX_STATE_KEY_BYTES);
    this.#countWrite();
    const name = binary(key);
    const old = this.entries.get(name);
    if (old) {
      this.#bytes -= charge(old[0], old[1]);
      this.entries.delete(name);
    }
  }

  /**
   * @param {Uint8Array} prefix
   * @param {number} limit
   * @returns {Array<[Uint8Array, Uint8Array]>}
   */
  scan(prefix, limit) {
    this.#require();
    const start = binary(prefix);
    const names = [...this.entries.keys()].filter((name) => name.startsWith(start)).sort();
    /** @type {Array<[Uint8Array, Uint8Array]>} */
    const out = [];
    let size = 0;
    for (const name of names) {
      if (out.length >= Math.min(limit, limits.MAX_SCAN_ENTRIES)) break;
      const [key, value] = /** @type {[Uint8Array, Uint8Array]} */ (this.entries.get(name));
      size += key.byteLength + value.byteLength;
      if (out.length > 0 && size > limits.MAX_SCAN_BYTES) break;
      out.push([key.slice(), value.slice()]);
    }
    return out;
  }
}

export { binary as stateKey };
