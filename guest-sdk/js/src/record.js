/**
 * Views over the records of a batch: keys and values are `Uint8Array` views into
 * the one buffer the host copied in, so nothing is copied again.
 * @module
 */

import { decode } from './wire.js';

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

/** A batch of records from one topic-partition, in offset order. Iterable. */
export class Batch {
  /** @type {Record[]} */
  #records;

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
    const shared = { topic, partition, headerGate };
    this.#records = decode(records, count).map((raw) => new Record(shared, raw));
  }

  /** How many records the batch holds. */
  get length() {
    return this.#records.length;
  }

  /**
   * The record at `index` (negative counts from the end).
   * @param {number} index
   */
  at(index) {
    return this.#records.at(index);
  }

  /** The records as an array (a copy of the list, not of the data). */
  records() {
    return [...this.#records];
  }

  [Symbol.iterator]() {
    return this.#records[Symbol.iterator]();
  }
}

/** One input record: a view into its batch's buffer. */
export class Record {
  #shared;
  #raw;

  /**
   * @param {{topic: string, partition: number, headerGate: () => void}} shared
   * @param {import('./wire.d.ts').RawRecord} raw
   */
  constructor(shared, raw) {
    this.#shared = shared;
    this.#raw = raw;
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
    return this.#raw.offset;
  }

  /** Milliseconds since the Unix epoch, or `null` when the record has none. */
  get timestampMs() {
    return this.#raw.timestampMs;
  }

  /** The key (a view, valid while the batch is), or `null` for none (distinct from empty). */
  get key() {
    return this.#raw.key;
  }

  /** The value (a view, valid while the batch is), or `null` for a tombstone. */
  get value() {
    return this.#raw.value;
  }

  /** The key decoded as UTF-8 (throws `TypeError` if it is not), or `null`. */
  keyText() {
    return this.#raw.key === null ? null : utf8.decode(this.#raw.key);
  }

  /** The value decoded as UTF-8 (throws `TypeError` if it is not), or `null`. */
  valueText() {
    return this.#raw.value === null ? null : utf8.decode(this.#raw.value);
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
    this.#shared.headerGate();
    return this.#raw.headers;
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
