/**
 * State kept per input partition, dropped when the partition is revoked.
 * @module
 */

import { TopicPartition } from './record.js';

/**
 * One state per input partition, created on first use by `factory`. A processor
 * instance serves every partition its pipeline owns; keeping state here and
 * calling `revoke` from `revoked` makes sure one partition's state is never mixed
 * with another's, and never outlives its ownership.
 *
 *     const counts = new PerPartition(() => 0);
 *     counts.set('clicks', 0, counts.entry('clicks', 0) + 1);
 *     const totals = new PerPartition(() => new Map());
 *     totals.of(record).set('alice', 3);
 * @template T
 */
export class PerPartition {
  /** @type {Map<string, Map<number, T>>} by topic, then partition */
  #states = new Map();
  #factory;

  /** @param {() => T} factory */
  constructor(factory) {
    this.#factory = factory;
  }

  /**
   * The state of `topic`/`partition`, created if new.
   * @param {string} topic
   * @param {number} partition
   * @returns {T}
   */
  entry(topic, partition) {
    let partitions = this.#states.get(topic);
    if (partitions === undefined) this.#states.set(topic, (partitions = new Map()));
    if (!partitions.has(partition)) partitions.set(partition, this.#factory());
    return /** @type {T} */ (partitions.get(partition));
  }

  /**
   * The state of `record`'s partition, created if new.
   * @param {{topic: string, partition: number}} record
   */
  of(record) {
    return this.entry(record.topic, record.partition);
  }

  /**
   * The state of `topic`/`partition`, if any.
   * @param {string} topic
   * @param {number} partition
   * @returns {T | undefined}
   */
  get(topic, partition) {
    return this.#states.get(topic)?.get(partition);
  }

  /**
   * Replaces the state of `topic`/`partition` (for immutable states).
   * @param {string} topic
   * @param {number} partition
   * @param {T} state
   */
  set(topic, partition, state) {
    let partitions = this.#states.get(topic);
    if (partitions === undefined) this.#states.set(topic, (partitions = new Map()));
    partitions.set(partition, state);
  }

  /**
   * Drops the state of a revoked partition, returning it.
   * @param {{topic: string, partition: number}} partition
   * @returns {T | undefined}
   */
  revoke(partition) {
    const partitions = this.#states.get(partition.topic);
    const state = partitions?.get(partition.partition);
    partitions?.delete(partition.partition);
    if (partitions?.size === 0) this.#states.delete(partition.topic);
    return state;
  }

  /**
   * Every partition with state, and its state.
   * @returns {Generator<[TopicPartition, T]>}
   */
  *entries() {
    for (const [topic, partitions] of this.#states) {
      for (const [partition, state] of partitions) yield [new TopicPartition(topic, partition), state];
    }
  }

  /** How many partitions have state. */
  get size() {
    let size = 0;
    for (const partitions of this.#states.values()) size += partitions.size;
    return size;
  }
}
