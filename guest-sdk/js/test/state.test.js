// Keyed state: the API, the harness holding state per partition as the host does,
// and the component glue turning the host's refusals (componentize-js's shape) into
// StateError.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { makeHandler } from '../src/component.js';
import {
  CapabilityError,
  KeyTooLarge,
  Outcome,
  PartitionFull,
  Processor,
  Retry,
  StateError,
  TooManyWrites,
  ValueTooLarge,
  exportProcessor,
  limits,
} from '../src/index.js';
import { Harness, TestBatch } from '../src/testing.js';
import { BatchEncoder } from '../src/wire.js';

const bytes = (/** @type {string} */ s) => new TextEncoder().encode(s);
/** @param {number} n */
const u64 = (n) => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n), true);
  return out;
};

/** Counts per key in state and emits the running count; a value of "retry" retries. */
class Counter extends Processor {
  /** @type {Processor['process']} */
  process(record, ctx) {
    const key = record.key ?? new Uint8Array();
    const state = ctx.state();
    const count = (state.getU64(key) ?? 0n) + 1n;
    state.putU64(key, count);
    if (record.valueText() === 'retry') throw new Retry('asked to');
    ctx.emitKv('counts', key, String(count));
  }
}

/** @param {import('../src/testing.js').Run} run */
const counts = (run) => run.emitted.map((e) => [e.keyText(), e.valueText()]);

test('counts carry over batches and instances per partition', () => {
  const host = new Harness();
  const first = new TestBatch('clicks', 1).record('alice', 'x').record('bob', 'x').record('alice', 'x');
  assert.deepEqual(counts(host.run(new Counter(), first)), [['alice', '1'], ['bob', '1'], ['alice', '2']]);
  // A fresh instance (after a trap, a redeploy, a restart) sees the same state.
  const second = new TestBatch('clicks', 1).atOffset(3).record('alice', 'y');
  assert.deepEqual(counts(host.run(new Counter(), second)), [['alice', '3']]);
  const other = host.run(new Counter(), new TestBatch('clicks', 2).record('alice', 'z'));
  assert.deepEqual(counts(other), [['alice', '1']], 'partitions are counted apart');
  assert.deepEqual(host.state('clicks', 1), new Map([['alice', u64(3)], ['bob', u64(1)]]));
  assert.equal(host.state('clicks', 3).size, 0);
});

test('a batch with a retry leaves the state as it was, and a reject keeps it', () => {
  const host = new Harness().withState('t', 0, [['a', u64(5)]]);
  const run = host.run(new Counter(), new TestBatch('t', 0).record('a', 'x').record('b', 'retry'));
  assert.deepEqual(run.outcomes[1], Outcome.retry('asked to'));
  assert.deepEqual(host.state('t', 0), new Map([['a', u64(5)]]), 'the writes of an unfinished batch are dropped');
  assert.deepEqual(counts(host.run(new Counter(), new TestBatch('t', 0).record('a', 'x'))), [['a', '6']]);

  class Rejecting extends Processor {
    /** @type {Processor['process']} */
    process(record, ctx) {
      ctx.state().put(record.key ?? '', 'seen');
      throw new TypeError('bad record');
    }
  }
  const rejected = host.run(new Rejecting(), new TestBatch('t', 0).record('z', 'x'));
  assert.equal(rejected.outcomes[0].reason, 'TypeError: bad record');
  assert.deepEqual(host.state('t', 0).get('z'), bytes('seen'), 'a rejected record finished: its writes stay');
});

test('bytes, text, JSON, delete and scan', () => {
  /** @type {Record<string, unknown>} */
  const seen = {};
  class Everything extends Processor {
    /** @type {Processor['process']} */
    process(_record, ctx) {
      const state = ctx.state();
      state.put('b/1', new Uint8Array([0, 0xff]));
      state.put(bytes('a/2'), 'zwei');
      state.putJson('a/1', { n: 1, tags: ['x', 'ü'] });
      state.put('c', 'gone');
      state.delete('c');
      state.delete('never-there');
      seen.bytes = state.get('b/1');
      seen.text = state.getText('a/2');
      seen.notText = state.getText('b/1');
      seen.json = state.getJson('a/1');
      seen.fallback = state.getJson('missing', { n: 0 });
      seen.u64Of2Bytes = state.getU64('b/1');
      seen.a = state.scan('a/').map(([k]) => new TextDecoder().decode(k));
      seen.one = state.scan('', 1);
      seen.all = state.scan().length;
      seen.deleted = state.get('c');
    }
  }
  const host = new Harness();
  assert.ok(host.run(new Everything(), new TestBatch().record('k', 'v')).allProcessed());
  assert.deepEqual(seen, {
    bytes: new Uint8Array([0, 0xff]),
    text: 'zwei',
    notText: null,
    json: { n: 1, tags: ['x', 'ü'] },
    fallback: { n: 0 },
    u64Of2Bytes: null,
    a: ['a/1', 'a/2'],
    one: [[bytes('a/1'), bytes('{"n":1,"tags":["x","ü"]}')]],
    all: 3,
    deleted: null,
  });
  assert.deepEqual([...host.state('in', 0).keys()], ['a/1', 'a/2', 'b/1'], 'in key order');
});

/** Writes a value of the record's value length under its key until refused. */
class Filler extends Processor {
  /** @type {StateError[]} */
  refused = [];

  /** @type {Processor['process']} */
  process(record, ctx) {
    try {
      ctx.state().put(record.key ?? '', new Uint8Array(record.value?.byteLength ?? 0).fill(7));
    } catch (error) {
      if (error instanceof StateError) this.refused.push(error);
      throw error;
    }
  }
}

test('the harness refuses what the host refuses, with its limits', () => {
  const filler = new Filler();
  const bigKey = 'k'.repeat(limits.MAX_STATE_KEY_BYTES + 1);
  const bigValue = new Uint8Array(limits.MAX_STATE_VALUE_BYTES + 1);
  // Each entry costs 128 + key + value: 300 bytes hold two 10-byte entries.
  const host = new Harness().stateBytes(300);
  const batch = new TestBatch('t', 0).record(bigKey, 'x').record('a', bigValue).record('b', 'x'.repeat(9)).record('c', 'x'.repeat(9));
  batch.record('d', 'x'.repeat(9)).record('b', 'y'.repeat(9));
  const run = host.run(filler, batch);
  assert.deepEqual(filler.refused.map((e) => e.constructor), [KeyTooLarge, ValueTooLarge, PartitionFull]);
  assert.deepEqual(filler.refused.map((e) => /** @type {any} */ (e).limit), [limits.MAX_STATE_KEY_BYTES, limits.MAX_STATE_VALUE_BYTES, 300]);
  assert.deepEqual(run.outcomes.map((o) => o.status), ['reject', 'reject', 'processed', 'processed', 'reject', 'processed']);
  assert.equal(run.outcomes[4].reason, "the partition's state would exceed its limit of 300 bytes");
  assert.deepEqual([...host.state('t', 0).keys()], ['b', 'c'], 'rewriting a key that fits is fine');
  // The other partition has its own budget.
  assert.ok(host.run(new Filler(), new TestBatch('t', 1).record('d', 'x'.repeat(9))).allProcessed());

  const writes = new Harness().stateWrites(2);
  const limited = writes.run(new Filler(), new TestBatch().record('a', '').record('b', '').record('c', ''));
  assert.deepEqual(limited.outcomes[2], Outcome.reject('the batch made its 2 state writes already'));
  assert.deepEqual([...writes.state('in', 0).keys()], ['a', 'b']);
  assert.ok(writes.run(new Filler(), new TestBatch().atOffset(3).record('c', '')).allProcessed(), 'the count is per batch');
  assert.equal(new TooManyWrites(5).limit, 5);
});

test('state needs the capability', () => {
  assert.throws(
    () => new Harness().capabilities('output').run(new Counter(), new TestBatch().record('k', 'v')),
    (error) => error instanceof CapabilityError && /does not declare the `state` capability/.test(error.message),
  );
});

test('u64 and scan arguments are checked', () => {
  class Bad extends Processor {
    /** @type {Processor['process']} */
    process(record, ctx) {
      if (record.valueText() === 'neg') ctx.state().putU64('k', -1);
      else ctx.state().scan('', -1);
    }
  }
  const run = new Harness().run(new Bad(), new TestBatch().record('k', 'neg').record('k', 'scan'));
  assert.deepEqual(
    run.outcomes.map((o) => o.reason),
    ['RangeError: -1 is not a u64', 'RangeError: scan limit -1 is not a u32'],
  );
});

test('the component glue turns the state import and its errors into the SDK API', () => {
  class Writer extends Processor {
    /** @type {Processor['process']} */
    process(record, ctx) {
      const state = ctx.state();
      if (record.valueText() === 'del') state.delete(record.key ?? '');
      else state.put(record.key ?? '', record.value ?? '');
      ctx.emitValue('out', String(state.getText(record.key ?? '') ?? '-'));
    }
  }
  exportProcessor(Writer);
  /** @type {Map<string, Uint8Array>} */
  const map = new Map();
  const text = (/** @type {Uint8Array} */ b) => new TextDecoder().decode(b);
  // Shaped like componentize-js's bindings: `option` is undefined when none, and a
  // refused call throws an error whose `payload` is the variant.
  const state = {
    get: (/** @type {Uint8Array} */ key) => map.get(text(key)),
    put(/** @type {Uint8Array} */ key, /** @type {Uint8Array} */ value) {
      if (value.byteLength > 3) throw Object.assign(new Error('refused'), { payload: { tag: 'value-too-large', val: 3n } });
      map.set(text(key), value);
    },
    delete: (/** @type {Uint8Array} */ key) => void map.delete(text(key)),
    scan: () => [],
  };
  /** @type {string[]} */
  const emitted = [];
  const output = { emit: (/** @type {any} */ _source, /** @type {any} */ out) => void emitted.push(text(out.value)) };
  const handler = makeHandler({ settings: { entries: () => [] }, output, state });
  const encoder = new BatchEncoder();
  encoder.push(0n, null, bytes('a'), bytes('abc'), []);
  encoder.push(1n, null, bytes('b'), bytes('abcd'), []);
  encoder.push(2n, null, bytes('a'), bytes('del'), []);
  const result = handler.process({ topic: 't', partition: 0, count: encoder.count, records: encoder.bytes() });
  assert.deepEqual(result.statuses, ['processed', 'reject', 'processed']);
  assert.deepEqual(result.failures, [{ offset: 1n, reason: 'state value exceeds the limit of 3 bytes' }]);
  assert.deepEqual(emitted, ['abc', '-']);
  assert.equal(map.size, 0);

  // Built without the `state` import: using state is a capability fault.
  const without = makeHandler({ settings: { entries: () => [] }, output });
  assert.throws(() => without.process({ topic: 't', partition: 0, count: encoder.count, records: encoder.bytes() }), CapabilityError);
});
