// The component glue (guest.js, component.js), driven by fake bindings shaped
// like componentize-js's: the real ones only exist in a component.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { makeHandler } from '../src/component.js';
import { Guest } from '../src/guest.js';
import { CapabilityError, Fault, Outcome, Processor, Reject, exportProcessor } from '../src/index.js';
import { BatchEncoder } from '../src/wire.js';

const bytes = (/** @type {string} */ s) => new TextEncoder().encode(s);

class FakeHost {
  settingsReads = 0;
  /** @type {Array<[bigint | null, any]>} */
  emitted = [];
  /** @type {Array<[string, string]>} */
  logs = [];
  headersAsked = 0;

  /** @param {Array<[string, string]>} [settings] */
  constructor(settings = []) {
    this.settings = settings;
  }

  /** @param {...string} declared */
  bindings(...declared) {
    return {
      entries: () => {
        this.settingsReads += 1;
        return this.settings;
      },
      emit: declared.includes('output')
        ? (/** @type {bigint | null} */ source, /** @type {any} */ output) => {
            if (output.topic === 'full') throw new (class extends Error {})('too many');
            this.emitted.push([source, output]);
          }
        : null,
      log: declared.includes('log') ? (/** @type {string} */ level, /** @type {string} */ message) => void this.logs.push([level, message]) : null,
      headersEnabled: declared.includes('headers') ? () => ++this.headersAsked > 0 : null,
    };
  }
}

class Tagger extends Processor {
  static created = 0;
  tag = '?';

  constructor() {
    super();
    Tagger.created += 1;
  }

  /** @type {Processor['configure']} */
  configure(settings) {
    this.tag = settings.require('tag');
  }

  /** @type {Processor['process']} */
  process(record, ctx) {
    const command = record.valueText();
    if (command === 'header') ctx.emitValue('out', record.header('h') ?? '-');
    else if (command === 'log') ctx.warn(this.tag);
    else if (command === 'reject') throw new Reject('no');
    else ctx.emitKv('out', this.tag, command ?? '');
  }

  selfTest() {
    if (this.tag !== 'ok') throw new Error(`tag is ${this.tag}`);
  }
}

/**
 * @param {string[]} values
 * @param {Array<[string, Uint8Array | null]>} [headers]
 * @returns {[number, Uint8Array]}
 */
function encode(values, headers = []) {
  const encoder = new BatchEncoder();
  values.forEach((value, i) => encoder.push(40 + i, null, null, bytes(value), headers));
  return [encoder.count, encoder.bytes()];
}

test('configures once on first use and attributes outputs', () => {
  const host = new FakeHost([['tag', 't1']]);
  const guest = new Guest(Tagger, host.bindings('output', 'log'));
  assert.equal(host.settingsReads, 0);
  const results = guest.process('in', 0, ...encode(['a', 'reject', 'log']));
  assert.deepEqual(results, [[40n, Outcome.processed()], [41n, Outcome.reject('no')], [42n, Outcome.processed()]]);
  assert.deepEqual(host.emitted.map(([s, o]) => [s, o.topic, o.key, o.value]), [[40n, 'out', bytes('t1'), bytes('a')]]);
  assert.deepEqual(host.logs, [['warn', 't1']]);
  guest.process('in', 0, ...encode(['b']));
  assert.equal(host.settingsReads, 1);
});

test('headers are asked for once and need the capability', () => {
  const host = new FakeHost([['tag', 't']]);
  const guest = new Guest(Tagger, host.bindings('output', 'headers'));
  guest.process('in', 0, ...encode(['header', 'header'], [['h', bytes('v')]]));
  guest.process('in', 0, ...encode(['header'], [['h', bytes('v')]]));
  assert.equal(host.headersAsked, 1);
  assert.deepEqual(host.emitted.map(([, o]) => o.value), [bytes('v'), bytes('v'), bytes('v')]);
  assert.throws(() => new Guest(Tagger, new FakeHost([['tag', 't']]).bindings('output')).process('in', 0, ...encode(['header'])), CapabilityError);
  assert.throws(() => new Guest(Tagger, new FakeHost([['tag', 't']]).bindings()).process('in', 0, ...encode(['a'])), {
    message: /add "output" to "capabilities"/,
  });
});

test('bad settings and corrupt batches are faults', () => {
  assert.throws(() => new Guest(Tagger, new FakeHost().bindings('output')).process('in', 0, ...encode(['a'])), {
    name: 'Fault',
    message: /refused its settings: setting `tag` is required/,
  });
  const [count, records] = encode(['a']);
  assert.throws(() => new Guest(Tagger, new FakeHost([['tag', 't']]).bindings()).process('in', 0, count + 1, records), {
    message: /corrupt batch/,
  });
  assert.ok(new CapabilityError('x') instanceof Fault);
});

test('the self-test runs on a fresh configured instance', () => {
  const before = Tagger.created;
  assert.equal(new Guest(Tagger, new FakeHost([['tag', 'ok']]).bindings()).selfTest(), null);
  assert.equal(new Guest(Tagger, new FakeHost([['tag', 'no']]).bindings()).selfTest(), 'tag is no');
  assert.match(new Guest(Tagger, new FakeHost().bindings()).selfTest() ?? '', /refused its settings/);
  assert.equal(Tagger.created, before + 6);
});

test('outcomes past the batch get offset -1', () => {
  class Extra extends Processor {
    processBatch() {
      return [Outcome.processed(), Outcome.reject('extra')];
    }
  }
  assert.deepEqual(new Guest(Extra, new FakeHost().bindings()).process('in', 0, ...encode(['a'])), [
    [40n, Outcome.processed()],
    [-1n, Outcome.reject('extra')],
  ]);
});

test('the handler speaks the WIT shapes', () => {
  class Wit extends Processor {
    /** @type {string[]} */
    told = [];
    /** @type {Processor['process']} */
    process(record, ctx) {
      const command = record.valueText() ?? '';
      if (command.startsWith('emit:')) ctx.emit({ topic: command.slice(5), key: record.key, headers: [['h', 'v']] });
      if (command === 'reject') throw new Reject('asked to reject');
      ctx.info(command);
    }
    /** @type {Processor['assigned']} */
    assigned(p) {
      this.told.push(`+${p}`);
    }
  }
  exportProcessor(Wit);
  /** @type {any[]} */
  const calls = [];
  const handler = makeHandler({
    settings: { entries: () => [['fail', 'x']] },
    output: {
      /** @param {bigint | undefined} source @param {any} record */
      emit(source, record) {
        calls.push(['emit', source, record]);
        if (record.topic === 'denied') {
          const error = /** @type {Error & {payload?: unknown}} */ (new Error('(see error.payload)'));
          error.payload = { tag: 'topic-not-allowed', val: 'denied' };
          throw error;
        }
        if (record.topic === 'big') throw Object.assign(new Error('x'), { payload: { tag: 'too-large', val: 1048576n } });
      },
    },
    log: { log: (/** @type {string} */ level, /** @type {string} */ message) => calls.push(['log', level, message]) },
  });
  handler.assigned({ topic: 'in', partition: 1 });
  const encoder = new BatchEncoder();
  for (const [i, v] of ['ok', 'emit:out', 'reject', 'emit:denied', 'emit:big'].entries()) encoder.push(7 + i, null, bytes('k'), bytes(v));
  const result = handler.process({ topic: 'in', partition: 1, count: encoder.count, records: encoder.bytes() });
  assert.deepEqual(result.statuses, ['processed', 'processed', 'reject', 'reject', 'reject']);
  assert.deepEqual(result.failures, [
    { offset: 9n, reason: 'asked to reject' },
    { offset: 10n, reason: 'topic "denied" is not allowed for this pipeline (the operator lists the topics it may write to in the pipeline\'s `output_topics`)' },
    { offset: 11n, reason: 'record exceeds the size limit of 1048576 bytes' },
  ]);
  assert.deepEqual(calls[0], ['log', 'info', 'ok']);
  assert.deepEqual(calls[1], ['emit', 8n, { topic: 'out', key: bytes('k'), value: undefined, headers: [{ name: 'h', value: bytes('v') }] }]);
  assert.doesNotThrow(() => handler.selfTest());
  assert.throws(() => makeHandler({ settings: { entries: () => [] } }).process({ topic: 'in', partition: 0, count: 1, records: new Uint8Array(3) }), Fault);
});
