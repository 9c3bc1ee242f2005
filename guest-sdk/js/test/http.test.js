// fetch under a harness: the pipeline's rules before the stand-in service or the
// real fetch, the capability, and async processBatch in the harness and the guest.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CapabilityError, Outcome, Processor } from '../src/index.js';
import { allows, endpoint } from '../src/http.js';
import { Harness, TestBatch } from '../src/testing.js';

/** Fetches the URL in each record's value; emits the status and body. */
class Fetch extends Processor {
  /** @param {import('../src/index.js').Batch} batch @param {import('../src/index.js').Context} ctx */
  async processBatch(batch, ctx) {
    const records = batch.records();
    const answers = await Promise.allSettled(
      records.map(async (r) => {
        const response = await fetch(new TextDecoder().decode(/** @type {Uint8Array} */ (r.value)));
        return `${response.status} ${await response.text()}`;
      }),
    );
    return records.map((record, i) => {
      const answer = answers[i];
      if (answer.status === 'rejected') return Outcome.retry(answer.reason.message);
      ctx.forRecord(record, (c) => c.emitValue('out', answer.value));
      return Outcome.processed();
    });
  }
}

/** @param {Request} request */
const echo = (request) => new Response(`${request.method} ${new URL(request.url).pathname}`);

test('requests pass the rules before the service', async () => {
  const harness = new Harness().allowHttp('http://127.0.0.1:8089').allowHttp('https://*.example.com').httpService(echo);
  const urls = [
    'http://127.0.0.1:8089/a?b',
    'http://127.0.0.1:8090/',
    'https://api.example.com/x',
    'https://example.com/x',
    'https://a.b.example.com/x',
    'http://api.example.com/x',
  ];
  const batch = urls.reduce((b, url) => b.valueOnly(url), new TestBatch());
  const run = await harness.run(new Fetch(), batch);
  const refused = (/** @type {string} */ at) => Outcome.retry(`fetch refused: ${at} is not in the pipeline's [pipeline.http] allow`);
  assert.deepEqual(run.outcomes, [
    Outcome.processed(),
    refused('http://127.0.0.1:8090'),
    Outcome.processed(),
    refused('https://example.com:443'),
    refused('https://a.b.example.com:443'),
    refused('http://api.example.com:80'),
  ]);
  assert.deepEqual(run.emitted.map((e) => e.valueText()), ['200 GET /a', '200 GET /x']);
  assert.equal(globalThis.fetch.name, 'fetch', 'the real fetch is back after the run');
});

test('a processor that does not declare http cannot fetch', async () => {
  const harness = new Harness().capabilities('output').httpService(echo);
  const run = await harness.run(new Fetch(), new TestBatch().valueOnly('http://a:1/'));
  assert.equal(run.outcomes[0].status, 'retry');
  assert.match(run.outcomes[0].reason, /does not declare the `http` capability/);
  const declared = await new Harness().capabilities('output', 'http').httpService(echo).runAsync(new Fetch(), new TestBatch().valueOnly('http://a:1/'));
  assert.ok(declared.allProcessed());
  assert.ok(CapabilityError);
});

test('rules read as the host reads them', () => {
  assert.deepEqual(endpoint('HTTP://Api.Example.COM.'), { scheme: 'http', host: 'api.example.com', port: 80 });
  assert.deepEqual(endpoint('https://x:8443/'), { scheme: 'https', host: 'x', port: 8443 });
  for (const bad of ['ftp://x', 'http://x/path', 'http://x:0', 'http://x:70000', 'x']) assert.throws(() => endpoint(bad), TypeError);
  assert.ok(allows(endpoint('https://*.example.com'), endpoint('https://api.example.com')));
  assert.ok(!allows(endpoint('https://*.example.com'), endpoint('https://evilexample.com')));
});

test('a synchronous processor still gets a Run, not a Promise', () => {
  class Quiet extends Processor {
    process() {}
  }
  const run = new Harness().run(new Quiet(), new TestBatch().valueOnly('x'));
  assert.ok(!(run instanceof Promise) && run.allProcessed());
});
