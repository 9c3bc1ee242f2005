/**
 * Views over the records of a batch: keys and values are `Uint8Array` views into
 * the one buffer the host copied in, so nothing is copied again.
 * @module
 */

import { ABSENT_LEN, ABSENT_TIMESTAMP, RECORD_FIXED_LEN, headersAt, index } from './wire.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** One partition of an input topic. */
export class TopicPartition {
  /**
   * @param {string} topic
   * @param {number} partition
   */
  constructor(topic, partition) {
    /** @readonly */
    this.topic = topic;
    /** @readonly */
    this.partition = partition;
    Object.freeze(this);
  }

  /**
   * The partition `record` comes from.
   * @param {Record} record
   */
  static of(record) {
    return new TopicPartition(record.topic, record.partition);
  }

  /** @param {TopicPartition} other */
  equals(other) {
    return this.topic === other.topic && this.partition === other.partition;
  }

  toString() {
    return `${this.topic}/${this.partition}`;
  }
}

/** Headers may be read (native use without a capability check). */
function noGate() {}

/**
 * What every record of a batch shares: where it came from, the buffer and the
 * header gate.
 * @typedef {{topic: string, partition: number, headerGate: () => void, buf: Uint8Array, view: DataView}} Shared
 */

/** A batch of records from one topic-partition, in offset order. Iterable. */
export class Batch {
  /** @type {Record[] | null} made when the processor first looks at the records */
  #records = null;
  /** @type {number[]} */
  #starts;
  /** @type {Shared} */
  #shared;

  /**
   * Wraps an encoded batch after checking that it holds exactly `count`
   * well-formed records (throws `WireError` otherwise). `headerGate` runs before
   * any record's headers are read: the component uses it to ask the host for
   * headers once, the test harness to check the `headers` capability.
   * @param {string} topic
   * @param {number} partition
   * @param {number} count
   * @param {Uint8Array} records
   * @param {() => void} [headerGate]
   */
  constructor(topic, partition, count, records, headerGate = noGate) {
    /** The topic every record of the batch comes from. @readonly */
    this.topic = topic;
    /** The partition every record of the batch comes from. @readonly */
    this.partition = partition;
    this.#starts = index(records, count);
    const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
    this.#shared = { topic, partition, headerGate, buf: records, view };
  }

  /** The record objects, made on first use (a processor that answers the whole batch never needs them). */
  #all() {
    let records = this.#records;
    if (records === null) {
      const starts = this.#starts;
      const shared = this.#shared;
      records = new Array(starts.length);
      for (let i = 0; i < starts.length; i++) records[i] = new Record(shared, starts[i]);
      this.#records = records;
    }
    return records;
  }

  /** How many records the batch holds. */
  get length() {
    return this.#starts.length;
  }

  /**
   * The record at `index` (negative counts from the end).
   * @param {number} index
   */
  at(index) {
    return this.#all().at(index);
  }

  /** The records as an array (a copy of the list, not of the data). */
  records() {
    return this.#all().slice();
  }

  [Symbol.iterator]() {
    return this.#all()[Symbol.iterator]();
  }
}

/**
 * One input record: a view into its batch's buffer. Its fields are read from the
 * buffer when asked for.
 */
export class Record {
  /** @type {Shared} */
  #shared;
  #start;

  /**
   * @param {Shared} shared
   * @param {number} start where the record starts in the buffer
   */
  constructor(shared, start) {
    this.#shared = shared;
    this.#start = start;
  }

  /** The topic the record was read from. */
  get topic() {
    return this.#shared.topic;
  }

  /** The partition the record was read from. */
  get partition() {
    return this.#shared.partition;
  }

  /** The record's offset in its partition (a bigint: offsets are 64-bit). */
  get offset() {
    return this.#shared.view.getBigInt64(this.#start, true);
  }

  /** Milliseconds since the Unix epoch, or `null` when the record has none. */
  get timestampMs() {
    const timestamp = this.#shared.view.getBigInt64(this.#start + 8, true);
    return timestamp === ABSENT_TIMESTAMP ? null : Number(timestamp);
  }

  /** The key (a view, valid while the batch is), or `null` for none (distinct from empty). */
  get key() {
    const { view, buf } = this.#shared;
    const keyLen = view.getUint32(this.#start + 16, true);
    const start = this.#start + RECORD_FIXED_LEN;
    return keyLen === ABSENT_LEN ? null : buf.subarray(start, start + keyLen);
  }

  /** The value (a view, valid while the batch is), or `null` for a tombstone. */
  get value() {
    const { view, buf } = this.#shared;
    const keyLen = view.getUint32(this.#start + 16, true);
    const valueLen = view.getUint32(this.#start + 20, true);
    const start = this.#start + RECORD_FIXED_LEN + (keyLen === ABSENT_LEN ? 0 : keyLen);
    return valueLen === ABSENT_LEN ? null : buf.subarray(start, start + valueLen);
  }

  /** The key decoded as UTF-8 (throws `TypeError` if it is not), or `null`. */
  keyText() {
    const key = this.key;
    return key === null ? null : utf8.decode(key);
  }

  /** The value decoded as UTF-8 (throws `TypeError` if it is not), or `null`. */
  valueText() {
    const value = this.value;
    return value === null ? null : utf8.decode(value);
  }

  /**
   * The headers as `[name, value]` pairs in the order they were produced. Names
   * may repeat; a value may be `null`.
   *
   * Batches carry headers only for processors that declare the `headers`
   * capability (reading headers is most of a record's cost on the host);
   * reading them without it throws `CapabilityError`.
   * @returns {ReadonlyArray<readonly [string, Uint8Array | null]>}
   */
  get headers() {
    const { headerGate, view, buf } = this.#shared;
    headerGate();
    const headerCount = view.getUint32(this.#start + 24, true);
    if (headerCount === 0) return [];
    const value = this.value;
    const end = value === null ? this.#start + RECORD_FIXED_LEN + (this.key?.byteLength ?? 0) : value.byteOffset - buf.byteOffset + value.byteLength;
    return headersAt(buf, view, end, headerCount);
  }

  /**
   * The value of the first header called `name`; `null` if there is none or its
   * value is absent.
   * @param {string} name
   */
  header(name) {
    const found = this.headers.find(([headerName]) => headerName === name);
    return found ? found[1] : null;
  }

  toString() {
    return `Record(${this.topic}/${this.partition}@${this.offset})`;
  }
}
