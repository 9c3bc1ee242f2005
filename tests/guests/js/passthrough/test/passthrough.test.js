// Every record processed, nothing emitted or logged, no capability used.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { Outcome } from 'ferry-sdk';
import { Harness, TestBatch } from 'ferry-sdk/testing';

import { Passthrough } from '../src/passthrough.js';

const PROJECT = fileURLToPath(new URL('..', import.meta.url));

test('every record is processed', () => {
  const batch = new TestBatch('in', 0).record('k', 'a').valueOnly('b').tombstone('c');
  const run = new Harness().denyAllTopics().declaredBy(PROJECT).run(new Passthrough(), batch);
  assert.deepEqual(run.outcomes, [Outcome.processed(), Outcome.processed(), Outcome.processed()]);
  assert.deepEqual(run.emitted, []);
  assert.deepEqual(run.logs, []);
});
