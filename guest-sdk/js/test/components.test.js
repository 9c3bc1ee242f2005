// Built components, run through tools/run-component.mjs (a stand-in host in
// Node): only when FERRY_COMPONENTS names a directory built by
// tools/build-components.sh.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const DIR = process.env.FERRY_COMPONENTS;
const RUNNER = fileURLToPath(new URL('../tools/run-component.mjs', import.meta.url));
const skip = !DIR && 'set FERRY_COMPONENTS to a directory built by tools/build-components.sh';

/**
 * @param {string} name
 * @param {object} scenario
 */
function runComponent(name, scenario) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => key !== 'NODE_TEST_CONTEXT'));
  const result = spawnSync(process.execPath, [RUNNER, join(/** @type {string} */ (DIR), `${name}.wasm`)], {
    input: JSON.stringify(scenario),
    encoding: 'utf8',
    env,
    maxBuffer: 1 << 26,
  });
  assert.equal(result.status, 0, result.stderr);
  return JSON.parse(result.stdout);
}

const SEED = '{"id":"o-1","agent":"alice","amount_cents":12345}';

for (const lang of ['python', 'js']) {
  test(`orders (${lang}): same outputs and rejects as the Rust example`, { skip }, () => {
    const { imports, results } = runComponent(`orders-${lang}`, {
      allowTopics: ['commissions'],
      steps: [
        { selfTest: true },
        { assigned: ['orders', 0] },
        { process: { topic: 'orders', firstOffset: 40, records: [{ key: 'o-1', value: SEED }, { value: 'not json' }, { key: 'o-6' }] } },
      ],
    });
    assert.deepEqual(imports.filter((/** @type {string} */ i) => i.startsWith('ferry:')).sort(), ['ferry:processor/output', 'ferry:processor/settings']);
    assert.ok(!imports.some((/** @type {string} */ i) => i.startsWith('wasi:http')));
    const [selfTest, , batch] = results;
    assert.deepEqual(selfTest, { selfTest: 'ok' });
    assert.deepEqual(batch.statuses, ['processed', 'reject', 'reject']);
    assert.match(batch.failures[0].reason, /^malformed order: /);
    assert.deepEqual(batch.failures[1], { offset: 42, reason: 'record has no value' });
    assert.deepEqual(batch.emitted, [
      { source: 40, topic: 'commissions', key: 'alice', value: '{"order_id":"o-1","agent":"alice","amount_cents":12345,"commission_cents":617}', headers: [] },
    ]);
  });

  test(`orders (${lang}): output_topic setting`, { skip }, () => {
    const { results } = runComponent(`orders-${lang}`, {
      settings: [['output_topic', 'payouts']],
      allowTopics: ['payouts'],
      steps: [{ process: { topic: 'orders', records: [{ value: SEED }] } }],
    });
    assert.equal(results[0].emitted[0].topic, 'payouts');
  });

  test(`chaos (${lang}): outcomes, and faults trap`, { skip }, () => {
    const { results } = runComponent(`chaos-${lang}`, {
      allowTopics: ['out'],
      steps: [
        { process: { topic: 'in', records: ['retry', 'reject', 'emit:out', 'emit:other', 'log:hello', 'sleep:1', 'x'].map((value) => ({ key: 'k', value })) } },
        { process: { topic: 'in', records: [{ value: 'panic' }] } },
        { process: { topic: 'in', records: [{ value: 'throw' }] } },
        { process: { topic: 'in', records: [{ value: 'recurse' }] } },
        { process: { topic: 'in', records: [{ value: 'after a trap' }] } },
      ],
    });
    assert.deepEqual(results[0].statuses, ['retry', 'reject', 'processed', 'retry', 'processed', 'processed', 'processed']);
    assert.deepEqual(results[0].emitted.map((/** @type {any} */ e) => [e.source, e.topic]), [[2, 'out']]);
    assert.deepEqual(results[0].logs, [['info', 'hello']]);
    for (const trapped of results.slice(1, 4)) assert.match(trapped.trap, /unreachable/);
    assert.deepEqual(results[4].statuses, ['processed']);
  });
}
