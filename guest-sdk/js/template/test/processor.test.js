// Unit tests: the processor under the host's default limits, natively.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { Outcome } from 'ferry-sdk';
import { Harness, TestBatch } from 'ferry-sdk/testing';

import { Upper } from '../src/processor.js';

const PROJECT = fileURLToPath(new URL('..', import.meta.url));

/** The pipeline this processor expects: its grant, its setting, its declared capabilities. */
const harness = () => new Harness().allowTopic('shouted').setting('output_topic', 'shouted').declaredBy(PROJECT);

test('upper-cases values', () => {
  const h = harness();
  const run = h.run(h.processor(Upper), new TestBatch('in', 0).record('k', 'hi').tombstone('gone'));
  assert.deepEqual(run.outcomes, [Outcome.processed(), Outcome.reject('tombstones are not supported')]);
  assert.deepEqual(run.emitted.map((e) => [e.topic, e.keyText(), e.valueText()]), [['shouted', 'k', 'HI']]);
});

test('the output topic is required', () => {
  assert.throws(() => new Harness().processor(Upper), { message: /setting `output_topic` is required/ });
});
