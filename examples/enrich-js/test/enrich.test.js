// The enrichment processor natively: against a stand-in customers service, and
// against a real one on loopback through the real fetch, under the pipeline's rules.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { CapabilityError, Outcome } from 'ferry-sdk';
import { Harness, TestBatch } from 'ferry-sdk/testing';

import { CUSTOMERS_URL, Enrich, OUTPUT_TOPIC } from '../src/enrich.js';

const PROJECT = fileURLToPath(new URL('..', import.meta.url));

/**
 * `c-7` exists, `c-busy` is overloaded, `c-down` fails to connect, anything else
 * is unknown.
 * @param {Request} request
 */
function customers(request) {
  const path = new URL(request.url).pathname;
  if (path === '/customers/c-7') return new Response('{"id":"c-7","tier":"gold"}');
  if (path === '/customers/c-busy') return new Response('busy', { status: 503 });
  if (path === '/customers/c-down') throw new TypeError('fetch failed: connection refused');
  return new Response('', { status: 404 });
}

const host = () => new Harness().declaredBy(PROJECT).allowTopic(OUTPUT_TOPIC).allowHttp(CUSTOMERS_URL).httpService(customers);

/** @param {string} id @param {string} customer */
const order = (id, customer) => JSON.stringify({ id, customer, amount_cents: 100 });

test('an order gets its customer attached', async () => {
  const run = await host().run(new Enrich(), new TestBatch('orders', 0).record('o-1', order('o-1', 'c-7')));
  assert.ok(run.allProcessed());
  assert.deepEqual(
    run.emitted.map((e) => [e.keyText(), JSON.parse(/** @type {string} */ (e.valueText()))]),
    [['c-7', { order: { id: 'o-1', customer: 'c-7', amount_cents: 100 }, customer: { id: 'c-7', tier: 'gold' } }]],
  );
});

test('each record ends on its own answer', async () => {
  const batch = new TestBatch('orders', 0)
    .valueOnly(order('o-1', 'c-7'))
    .valueOnly(order('o-2', 'c-404'))
    .valueOnly(order('o-3', 'c-busy'))
    .valueOnly(order('o-4', 'c-down'))
    .valueOnly('not json')
    .valueOnly(order('o-6', 'c 7'))
    .valueOnly(order('o-7', 'c-7'));
  const run = await host().run(new Enrich(), batch);
  assert.deepEqual(
    run.outcomes.map((o) => [o.status, o.reason]),
    [
      ['processed', ''],
      ['reject', 'no customer c-404'],
      ['retry', 'customer c-busy: the service answered 503'],
      ['retry', 'customer c-down: the lookup failed: fetch failed: connection refused'],
      ['reject', run.outcomes[4].reason],
      ['reject', '`c 7` is not a customer id'],
      ['processed', ''],
    ],
  );
  assert.match(run.outcomes[4].reason, /^malformed order/);
  assert.deepEqual(
    run.emitted.map((e) => JSON.parse(/** @type {string} */ (e.valueText())).order.id),
    ['o-1', 'o-7'],
  );
});

test('a service the pipeline does not allow is refused before any request', async () => {
  /** @type {string[]} */
  const asked = [];
  const harness = new Harness()
    .declaredBy(PROJECT)
    .allowHttp(CUSTOMERS_URL)
    .httpService((request) => (asked.push(request.url), new Response('{}')))
    .setting('customers_url', 'http://127.0.0.1:9999');
  const run = await harness.run(harness.processor(Enrich), new TestBatch('orders', 0).valueOnly(order('o-1', 'c-7')));
  assert.deepEqual(
    run.outcomes,
    [Outcome.retry("customer c-7: the lookup failed: fetch refused: http://127.0.0.1:9999 is not in the pipeline's [pipeline.http] allow")],
  );
  assert.deepEqual(asked, []);
});

test('without the http capability a lookup is a capability error', async () => {
  const harness = new Harness().capabilities('output').httpService(customers);
  // A bug in the project, not in the record: it aborts the batch.
  await assert.rejects(
    async () => harness.run(new Enrich(), new TestBatch('orders', 0).valueOnly(order('o-1', 'c-7'))),
    (error) => error instanceof CapabilityError && /does not declare the `http` capability/.test(error.message),
  );
});

test('against a real service on loopback, through the real fetch', async () => {
  /** @type {string[]} */
  const seen = [];
  const server = createServer((request, response) => {
    seen.push(/** @type {string} */ (request.url));
    const known = request.url === '/customers/c-7';
    response.writeHead(known ? 200 : 404, { 'content-type': 'application/json' });
    response.end(known ? '{"id":"c-7","tier":"gold"}' : '');
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  try {
    const address = /** @type {import('node:net').AddressInfo} */ (server.address());
    const url = `http://127.0.0.1:${address.port}`;
    const harness = new Harness().declaredBy(PROJECT).allowHttp(url).setting('customers_url', url);
    const batch = new TestBatch('orders', 0).valueOnly(order('o-1', 'c-7')).valueOnly(order('o-2', 'c-404'));
    const run = await harness.run(harness.processor(Enrich), batch);
    assert.deepEqual(run.outcomes, [Outcome.processed(), Outcome.reject('no customer c-404')]);
    assert.deepEqual(seen.sort(), ['/customers/c-404', '/customers/c-7']);
  } finally {
    server.close();
  }
});

test('a bad customers_url is a configuration error', () => {
  assert.throws(() => new Harness().setting('customers_url', 'ftp://x').processor(Enrich), /is not an http/);
});
