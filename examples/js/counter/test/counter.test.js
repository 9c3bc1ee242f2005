// The counter under the host's limits and its declared capabilities: counts carry
// over batches and instances per partition, as the host keeps state.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { PartitionFull } from 'ferry-sdk';
import { Harness, TestBatch } from 'ferry-sdk/testing';

import { Counter, OUTPUT_TOPIC } from '../src/counter.js';

const PROJECT = fileURLToPath(new URL('..', import.meta.url));

const host = () => new Harness().allowTopic(OUTPUT_TOPIC).declaredBy(PROJECT);

/** @param {import('ferry-sdk/testing').Run} run */
const counts = (run) => run.emitted.map((e) => [e.keyText(), e.valueText()]);

/** @param {number} n */
const u64 = (n) => {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(n), true);
  return bytes;
};

test('counts carry over batches and instances per partition', () => {
  const harness = host();
  const first = new TestBatch('clicks', 1).record('alice', 'x').record('bob', 'x').record('alice', 'x');
  assert.deepEqual(counts(harness.run(new Counter(), first)), [['alice', '1'], ['bob', '1'], ['alice', '2']]);
  // A fresh instance (after a trap, a redeploy, a restart) sees the same state.
  const second = new TestBatch('clicks', 1).atOffset(3).record('alice', 'y').valueOnly('no key');
  const run = harness.run(new Counter(), second);
  assert.ok(run.allProcessed());
  assert.deepEqual(counts(run), [['alice', '3']]);
  assert.deepEqual(counts(harness.run(new Counter(), new TestBatch('clicks', 2).record('alice', 'z'))), [['alice', '1']]);
  assert.deepEqual(harness.state('clicks', 1), new Map([['alice', u64(3)], ['bob', u64(1)]]));
});

test('counts go on from a restored state as the Rust counter wrote it', () => {
  const harness = host().withState('clicks', 0, [['alice', u64(41)]]);
  assert.deepEqual(counts(harness.run(new Counter(), new TestBatch('clicks', 0).record('alice', 'x'))), [['alice', '42']]);
});

test('a batch that is retried leaves its state as it was', () => {
  // Emits to `counts` are refused (not an allowed topic): every record retries.
  const harness = new Harness().allowTopic('elsewhere');
  const run = harness.run(new Counter(), new TestBatch('clicks', 0).record('a', '1'));
  assert.ok(!run.allProcessed());
  assert.equal(harness.state('clicks', 0).size, 0, 'the writes of an unfinished batch are dropped');
});

test('a full partition rejects new keys and counts the ones it has', () => {
  // One entry: 128 bytes, the key and the 8-byte count.
  const harness = host().stateBytes(128 + 1 + 8);
  const run = harness.run(new Counter(), new TestBatch('clicks', 0).record('a', 'x').record('b', 'x').record('a', 'x'));
  assert.deepEqual(run.outcomes.map((o) => o.status), ['processed', 'reject', 'processed']);
  assert.equal(run.outcomes[1].reason, new PartitionFull(137).message);
  assert.deepEqual(counts(run), [['a', '1'], ['a', '2']]);
});

test('the output topic is a setting', () => {
  const harness = new Harness().setting('output_topic', 'tallies').allowTopic('tallies');
  const run = harness.run(harness.processor(Counter), new TestBatch().record('k', 'v'));
  assert.deepEqual(run.emitted.map((e) => [e.topic, e.valueText()]), [['tallies', '1']]);
});
