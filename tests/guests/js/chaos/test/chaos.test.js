// The chaos guest's harmless commands natively, and that its hostile ones escape
// the SDK as faults (those that end at all).
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { Fault, Outcome } from 'ferry-sdk';
import { Harness, TestBatch } from 'ferry-sdk/testing';

import { Chaos } from '../src/chaos.js';

const PROJECT = fileURLToPath(new URL('..', import.meta.url));
const harness = () => new Harness().allowTopic('out').declaredBy(PROJECT);

test('harmless commands', () => {
  const batch = new TestBatch('in', 0)
    .record('k', 'retry')
    .valueOnly('reject')
    .record('k', 'emit:out')
    .valueOnly('emit:elsewhere')
    .valueOnly('log:hello')
    .valueOnly('sleep:1')
    .valueOnly('sleep:x')
    .valueOnly('anything')
    .valueOnly('error')
    .valueOnly('block:1')
    .valueOnly('block:x');
  const run = harness().run(new Chaos(), batch);
  assert.deepEqual(run.outcomes.slice(0, 3), [Outcome.retry('asked to retry'), Outcome.reject('asked to reject'), Outcome.processed()]);
  assert.match(run.outcomes[3].reason, /^emit refused: topic "elsewhere" is not allowed/);
  assert.deepEqual(run.outcomes.slice(4, 8), [Outcome.processed(), Outcome.processed(), Outcome.reject('bad sleep duration "x"'), Outcome.processed()]);
  assert.match(run.outcomes[8].reason, /^TypeError: /);
  assert.deepEqual(run.outcomes.slice(9), [Outcome.processed(), Outcome.reject('bad block duration "x"')]);
  assert.deepEqual(run.emitted.map((e) => [e.topic, e.keyText(), e.valueText()]), [['out', 'k', 'emit:out']]);
  assert.deepEqual(run.logs, [{ level: 'info', message: 'hello' }, { level: 'info', message: 'blocking for 1 ms' }]);
});

test('emit, then fail', () => {
  const chaos = new Chaos();
  const batch = new TestBatch('in', 0).record('a', 'emit-reject:out').record('b', 'emit-retry-once:out');
  const first = harness().run(chaos, batch);
  assert.deepEqual(first.outcomes, [Outcome.reject('asked to reject after emitting'), Outcome.retry('asked to retry after emitting')]);
  assert.deepEqual(first.emitted, []);
  const again = harness().run(chaos, batch);
  assert.deepEqual(again.outcomes[1], Outcome.processed());
  assert.deepEqual(again.emitted.map((e) => [e.keyText(), e.valueText()]), [['b', 'emit-retry-once:out']]);
});

test('faults escape', () => {
  for (const command of ['panic', 'throw']) assert.throws(() => harness().run(new Chaos(), new TestBatch().valueOnly(command)), Fault);
  // V8's stack overflow natively; SpiderMonkey's InternalError in a component.
  assert.throws(() => harness().run(new Chaos(), new TestBatch().valueOnly('recurse')), RangeError);
});
