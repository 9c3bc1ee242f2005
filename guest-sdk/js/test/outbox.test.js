// Buffered outputs (`output.limits` and `output.emit-many`), driven by fake
// bindings that decode the buffer and check it as the real host does.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { makeHandler } from '../src/component.js';
import { Fault, OverBudget, Processor, TooLarge, TooMany, TopicNotAllowed, UnknownSource, exportProcessor } from '../src/index.js';
import { BatchEncoder } from '../src/wire.js';

const RECORD_COST = 300;
const HEADER_COST = 100;
const utf8 = new TextEncoder();
const text = new TextDecoder();

/**
 * `emit-many`'s buffer, as the host reads it.
 * @param {Uint8Array} buf
 */
function decode(buf) {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = [];
  let at = 0;
  const take = (/** @type {number} */ n) => buf.slice(at, (at += n));
  const optional = (/** @type {number} */ n) => (n === 0xffffffff ? null : text.decode(take(n)));
  while (at < buf.byteLength) {
    const source = view.getBigInt64(at, true);
    const [topicLen, keyLen, valueLen, count] = [8, 12, 16, 20].map((o) => view.getUint32(at + o, true));
    at += 24;
    const topic = text.decode(take(topicLen));
    const key = optional(keyLen);
    const value = optional(valueLen);
    const headers = [];
    for (let i = 0; i < count; i++) {
      const [nameLen, valueLen2] = [view.getUint32(at, true), view.getUint32(at + 4, true)];
      at += 8;
      headers.push([text.decode(take(nameLen)), optional(valueLen2)]);
    }
    out.push({ source: source === -(1n << 63n) ? null : source, topic, key, value, headers, size: 0 });
  }
  return out;
}

/** The host's side, shaped like componentize-js's bindings (u64 as BigInt, `err` thrown with a payload). */
class BufferedHost {
  /** @type {any[]} */
  sent = [];
  calls = { limits: 0, emitMany: 0 };
  used = { records: 0, bytes: 0 };
  disagree = false;

  /** @param {{maxRecords?: number, maxRecordBytes?: number, batchBytes?: number}} [limits] */
  constructor({ maxRecords = 100, maxRecordBytes = 1000, batchBytes = 100_000 } = {}) {
    Object.assign(this, { maxRecords, maxRecordBytes, batchBytes });
    this.maxRecords = maxRecords;
    this.maxRecordBytes = maxRecordBytes;
    this.batchBytes = batchBytes;
  }

  output() {
    return {
      emit() {
        throw new Error('emit is not called when outputs are buffered');
      },
      limits: () => {
        this.calls.limits += 1;
        return {
          topics: ['out'],
          maxRecords: BigInt(this.maxRecords),
          recordsUsed: BigInt(this.used.records),
          maxRecordBytes: BigInt(this.maxRecordBytes),
          batchBytes: BigInt(this.batchBytes),
          bytesUsed: BigInt(this.used.bytes),
          recordCost: BigInt(RECORD_COST),
          headerCost: BigInt(HEADER_COST),
        };
      },
      emitMany: (/** @type {Uint8Array} */ buf) => {
        this.calls.emitMany += 1;
        for (const [index, record] of decode(buf).entries()) {
          if (this.disagree) throw Object.assign(new Error('refused'), { payload: [index, { tag: 'too-many' }] });
          let size = utf8.encode(record.key ?? '').length + utf8.encode(record.value ?? '').length;
          for (const [name, value] of record.headers) size += utf8.encode(name).length + utf8.encode(value ?? '').length;
          const charged = RECORD_COST + record.topic.length + size + HEADER_COST * record.headers.length;
          assert.ok(record.topic === 'out' && this.used.records < this.maxRecords && size <= this.maxRecordBytes);
          assert.ok(this.used.bytes + charged <= this.batchBytes);
          this.used.records += 1;
          this.used.bytes += charged;
          this.sent.push(record);
        }
      },
    };
  }
}

/** @type {any[]} records kept by `keep`, for `late` */
const kept = [];

class Emitter extends Processor {
  /** @type {Processor['process']} */
  process(record, ctx) {
    const command = record.valueText() ?? '';
    if (command === 'keep') kept.push(record);
    else if (command === 'late') ctx.forRecord(kept[0], () => ctx.emitValue('out', 'late'));
    else if (command === 'kv') ctx.emitKv('out', 'k', `v${record.offset}`);
    else if (command === 'tombstone') ctx.emit({ topic: 'out', key: '' });
    else if (command === 'headers') ctx.emit({ topic: 'out', value: 'x', headers: [['h', '1'], ['é', null]] });
    else if (command.startsWith('bytes:')) ctx.emitValue('out', 'b'.repeat(Number(command.slice(6))));
    else if (command.startsWith('topic:')) ctx.emitValue(command.slice(6), 'x');
    else if (command.startsWith('caught:')) {
      try {
        ctx.emitValue(command.slice(7), 'x');
      } catch (error) {
        if (!(error instanceof TopicNotAllowed)) throw error;
        ctx.emitValue('out', 'refused');
      }
    }
  }
}

/**
 * @param {BufferedHost} host
 * @param {string[]} values
 * @param {number} [first]
 */
function run(host, values, first = 10) {
  exportProcessor(Emitter);
  const handler = makeHandler({ settings: { entries: () => [] }, output: host.output() });
  const encoder = new BatchEncoder();
  for (const [i, value] of values.entries()) encoder.push(first + i, null, utf8.encode('k'), utf8.encode(value));
  host.used = { records: 0, bytes: 0 };
  return handler.process({ topic: 'in', partition: 0, count: encoder.count, records: encoder.bytes() });
}

test('a batch hands its outputs over in one call, in order and attributed', () => {
  const host = new BufferedHost();
  const result = run(host, ['kv', 'none', 'tombstone', 'headers', 'kv']);
  assert.deepEqual(result.failures, []);
  assert.deepEqual(host.calls, { limits: 1, emitMany: 1 });
  assert.deepEqual(
    host.sent.map((r) => [r.source, r.topic, r.key, r.value, r.headers]),
    [
      [10n, 'out', 'k', 'v10', []],
      [12n, 'out', '', null, []],
      [13n, 'out', null, 'x', [['h', '1'], ['é', null]]],
      [14n, 'out', 'k', 'v14', []],
    ],
  );
});

test('a batch that emits nothing makes no call', () => {
  const host = new BufferedHost();
  run(host, ['none', 'none']);
  assert.deepEqual(host.calls, { limits: 0, emitMany: 0 });
});

test("each refusal is the host's, thrown when emitted, and the rest go through", () => {
  const host = new BufferedHost({ maxRecords: 2, maxRecordBytes: 100, batchBytes: 2 * (RECORD_COST + 3) + 150 });
  const result = run(host, ['topic:nope\u001b', 'bytes:101', 'bytes:60', 'bytes:91', 'caught:other', 'kv', 'kv']);
  assert.deepEqual(result.statuses, ['reject', 'reject', 'processed', 'reject', 'processed', 'reject', 'reject']);
  assert.deepEqual(
    result.failures.map((f) => [f.offset, f.reason]),
    [
      [10n, new TopicNotAllowed('nope\ufffd').message],
      [11n, new TooLarge(100).message],
      [13n, new OverBudget(host.batchBytes).message],
      [15n, new TooMany().message],
      [16n, new TooMany().message],
    ],
  );
  assert.deepEqual(new Set(host.sent.map((r) => `${r.source}:${r.value}`)), new Set(['12:' + 'b'.repeat(60), '14:refused']));
});

test('headers count toward the size and the budget', () => {
  // value "x", header names "h" and "é" (2 bytes) and value "1": 5 bytes.
  assert.deepEqual(run(new BufferedHost({ maxRecordBytes: 4 }), ['headers']).failures[0].reason, new TooLarge(4).message);
  const exact = RECORD_COST + 3 + 5 + 2 * HEADER_COST;
  assert.deepEqual(run(new BufferedHost({ batchBytes: exact }), ['headers']).statuses, ['processed']);
  assert.deepEqual(run(new BufferedHost({ batchBytes: exact - 1 }), ['headers']).failures[0].reason, new OverBudget(exact - 1).message);
});

test('a source outside the batch is refused', () => {
  const host = new BufferedHost();
  run(host, ['keep'], 5);
  const result = run(host, ['late'], 6);
  assert.deepEqual(result.failures, [{ offset: 6n, reason: new UnknownSource(5n).message }]);
  assert.deepEqual(host.sent, []);
});

test('a host that refuses what the SDK accepted faults the call', () => {
  const host = new BufferedHost();
  host.disagree = true;
  assert.throws(() => run(host, ['kv']), (error) => error instanceof Fault && /accepted \(output 0\)/.test(error.message));
});
