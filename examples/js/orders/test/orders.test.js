// The orders example under the same host limits and grant as examples/ferry.toml.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { Outcome } from 'ferry-sdk';
import { Harness, TestBatch } from 'ferry-sdk/testing';

import { OUTPUT_TOPIC, Orders, commissionCents } from '../src/orders.js';

const PROJECT = fileURLToPath(new URL('..', import.meta.url));

/** The host's limits, this example's grant, and its declared capabilities. */
const host = () => new Harness().allowTopic(OUTPUT_TOPIC).declaredBy(PROJECT);

/** @param {Outcome} outcome */
function reason(outcome) {
  assert.equal(outcome.status, 'reject', `expected a reject, got ${outcome}`);
  return outcome.reason;
}

test('commission rounds half up', () => {
  assert.equal(commissionCents(0), 0);
  assert.equal(commissionCents(9), 0); // 0.45
  assert.equal(commissionCents(10), 1); // 0.5
  assert.equal(commissionCents(29), 1); // 1.45
  assert.equal(commissionCents(30), 2); // 1.5
  assert.equal(commissionCents(12345), 617); // 617.25
  assert.equal(commissionCents(12350), 618); // 617.5
  assert.equal(commissionCents(Number.MAX_SAFE_INTEGER), 450_359_962_737_050);
});

test('the seed order becomes a commission', () => {
  const batch = new TestBatch('orders', 0).record('o-1', '{"id":"o-1","agent":"alice","amount_cents":12345}');
  const run = host().run(new Orders(), batch);
  assert.deepEqual(run.outcomes, [Outcome.processed()]);
  assert.equal(run.emitted.length, 1);
  const [out] = run.emitted;
  assert.equal(out.topic, 'commissions');
  assert.equal(out.keyText(), 'alice');
  assert.equal(out.valueText(), '{"order_id":"o-1","agent":"alice","amount_cents":12345,"commission_cents":617}');
  assert.deepEqual(out.headers, []);
  assert.deepEqual(run.logs, []);
});

test('extra fields are ignored and text is kept as is', () => {
  const batch = new TestBatch('orders', 0)
    .valueOnly('{"amount_cents":100,"agent":"bob","id":"o-2","currency":"EUR"}')
    .valueOnly('{"id":"o-\\"3\\"","agent":"zoë","amount_cents":9007199254740991}');
  const run = host().run(new Orders(), batch);
  assert.ok(run.allProcessed(), String(run.outcomes));
  assert.equal(run.emitted[0].valueText(), '{"order_id":"o-2","agent":"bob","amount_cents":100,"commission_cents":5}');
  assert.equal(
    run.emitted[1].valueText(),
    '{"order_id":"o-\\"3\\"","agent":"zoë","amount_cents":9007199254740991,"commission_cents":450359962737050}',
  );
});

test('bad orders are rejected and the rest go through', () => {
  const batch = new TestBatch('orders', 3)
    .atOffset(40)
    .valueOnly('not json')
    .valueOnly('{"id":"o-3","amount_cents":1}')
    .valueOnly('{"id":"o-4","agent":"carol","amount_cents":-5}')
    .valueOnly('{"id":"o-5","agent":"dave","amount_cents":"12"}')
    .tombstone('o-6')
    .valueOnly('{"id":"o-7","agent":"erin","amount_cents":200}');
  const run = host().run(new Orders(), batch);
  assert.equal(run.outcomes.length, 6);
  assert.match(reason(run.outcomes[0]), /^malformed order/);
  assert.match(reason(run.outcomes[1]), /missing field `agent`/);
  assert.match(reason(run.outcomes[2]), /negative amount_cents \(-5\)/);
  assert.match(reason(run.outcomes[3]), /^malformed order/);
  assert.equal(reason(run.outcomes[4]), 'record has no value');
  assert.deepEqual(run.outcomes[5], Outcome.processed());
  assert.deepEqual(run.emitted.map((e) => e.keyText()), ['erin']);
});

test('what serde refuses is malformed', () => {
  const values = [
    new Uint8Array([0xff, 0xfe]),
    '[1, 2]',
    'null',
    '{"id":"a","agent":"b","amount_cents":1.5}',
    '{"id":"a","agent":"b","amount_cents":true}',
    '{"id":"a","agent":"b","amount_cents":NaN}',
    '{"id":"a","agent":"b","amount_cents":9223372036854775807}',
    '{"id":7,"agent":"b","amount_cents":1}',
    '{"id":"\\ud800","agent":"b","amount_cents":1}',
    '['.repeat(100_000),
  ];
  for (const value of values) {
    const run = host().run(new Orders(), new TestBatch('orders', 0).valueOnly(value));
    assert.match(reason(run.outcomes[0]), /^malformed order: /, String(value).slice(0, 40));
  }
});

test('a refused emit is rejected', () => {
  const batch = new TestBatch('orders', 0).valueOnly('{"id":"o-1","agent":"alice","amount_cents":12345}');
  let run = new Harness().denyAllTopics().run(new Orders(), batch);
  assert.match(reason(run.outcomes[0]), /"commissions" is not allowed/);
  assert.deepEqual(run.emitted, []);

  run = host()
    .maxEmits(1)
    .run(
      new Orders(),
      new TestBatch('orders', 0).valueOnly('{"id":"a","agent":"x","amount_cents":1}').valueOnly('{"id":"b","agent":"y","amount_cents":1}'),
    );
  assert.deepEqual(run.outcomes[0], Outcome.processed());
  assert.match(reason(run.outcomes[1]), /more records than allowed/);
});

test('the output topic is a setting', () => {
  const harness = new Harness().allowTopic('payouts').setting('output_topic', 'payouts');
  const orders = harness.processor(Orders);
  const run = harness.run(orders, new TestBatch('orders', 0).valueOnly('{"id":"o-1","agent":"alice","amount_cents":100}'));
  assert.ok(run.allProcessed(), String(run.outcomes));
  assert.equal(run.emitted[0].topic, 'payouts');
});
