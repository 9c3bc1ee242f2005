// Processor semantics: outcomes from exceptions, attribution, limits, harness.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  CapabilityError,
  Fault,
  Level,
  Outcome,
  OverBudget,
  Processor,
  Reject,
  Retry,
  TooLarge,
  TooMany,
  TopicNotAllowed,
  TopicPartition,
  UnknownSource,
  rejecting,
  transient,
} from '../src/index.js';
import { Harness, TestBatch, run } from '../src/testing.js';

const text = (/** @type {Uint8Array | null} */ bytes) => (bytes ? new TextDecoder().decode(bytes) : null);

/** Forwards each record (to the topic in its `to` header, else `out`). */
class Forward extends Processor {
  seen = 0;

  /** @type {Processor['process']} */
  process(record, ctx) {
    this.seen += 1;
    ctx.debug(`offset ${record.offset}`);
    const to = record.header('to');
    try {
      ctx.emit({ topic: text(to) ?? 'out', key: record.key, value: record.value, headers: record.headers });
    } catch (error) {
      throw new Retry(/** @type {Error} */ (error).message);
    }
    if (record.valueText() === 'fail') throw new Reject('asked to fail');
  }
}

test('records, emits and logs', () => {
  const batch = new TestBatch('in', 2)
    .atOffset(100)
    .timestamp(5)
    .record('k', 'v')
    .record('k2', 'v2', [['to', 'elsewhere']])
    .tombstone('gone')
    .raw(null, null, [['n', null]]);
  assert.equal(batch.length, 4);
  assert.deepEqual(batch.batch().records().map((r) => r.offset), [100n, 101n, 102n, 103n]);
  assert.ok(batch.batch().records().every((r) => r.timestampMs === 5));
  const p = new Forward();
  const result = run(p, batch);
  assert.ok(result.allProcessed());
  assert.equal(p.seen, 4);
  assert.deepEqual(result.emitted.map((e) => e.source), [100n, 101n, 102n, 103n]);
  assert.equal(result.emitted[0].topic, 'out');
  assert.equal(result.emitted[0].keyText(), 'k');
  assert.equal(result.emitted[1].topic, 'elsewhere');
  assert.deepEqual(result.emitted[1].headers, [['to', new TextEncoder().encode('elsewhere')]]);
  assert.equal(result.emitted[2].value, null);
  assert.deepEqual(result.emitted[3].headers, [['n', null]]);
  assert.deepEqual(result.logs[0], { level: Level.DEBUG, message: 'offset 100' });
  assert.equal(result.logs.length, 4);
});

test('record views', () => {
  const record = new TestBatch('t', 3).timestamp(99).record('k1', 'v1', [['a', '1'], ['b', null], ['a', '2']]).batch().at(0);
  assert.ok(record);
  assert.deepEqual([record.topic, record.partition, record.offset, record.timestampMs], ['t', 3, 0n, 99]);
  assert.deepEqual([record.keyText(), record.valueText()], ['k1', 'v1']);
  assert.equal(text(record.header('a')), '1');
  assert.equal(record.header('b'), null);
  assert.equal(record.header('zz'), null);
  assert.equal(String(TopicPartition.of(record)), 't/3');
  assert.ok(TopicPartition.of(record).equals(new TopicPartition('t', 3)));
  assert.throws(() => new TestBatch().valueOnly(new Uint8Array([0xff])).batch().at(0)?.valueText(), TypeError);
});

test('outputs of unprocessed records are dropped', () => {
  const result = run(new Forward(), new TestBatch().valueOnly('a').valueOnly('fail').valueOnly('b'));
  assert.deepEqual(result.outcomes[1], Outcome.reject('asked to fail'));
  assert.equal(String(result.outcomes[1]), 'reject: asked to fail');
  assert.deepEqual(result.emitted.map((e) => e.source), [0n, 2n]);
  assert.deepEqual(result.dropped.map((e) => e.source), [1n]);
});

test("harness limits, in the host's order, with the Rust messages", () => {
  const batch = new TestBatch().record('k', 'v').record('k', 'a much longer value').record('k', 'v');
  const p = new Forward();

  let result = new Harness().allowTopic('out').maxEmits(1).run(p, batch);
  assert.deepEqual(result.outcomes[0], Outcome.processed());
  assert.deepEqual(result.outcomes[2], Outcome.retry(new TooMany().message));
  assert.equal(new TooMany().message, 'batch emitted more records than allowed');

  result = new Harness().maxRecordBytes(4).run(p, batch);
  assert.deepEqual(result.outcomes[1], Outcome.retry('record exceeds the size limit of 4 bytes'));
  assert.equal(new TooLarge(4).message, 'record exceeds the size limit of 4 bytes');

  result = new Harness().batchOutputBytes(5).run(p, batch);
  assert.ok(result.outcomes[0].isProcessed);
  assert.deepEqual(result.outcomes[1], Outcome.retry('batch outputs exceed the budget of 5 bytes'));
  assert.equal(new OverBudget(5).message, 'batch outputs exceed the budget of 5 bytes');

  result = new Harness().denyAllTopics().run(p, batch);
  assert.deepEqual(result.emitted, []);
  const denied =
    'topic "out" is not allowed for this pipeline (the operator lists the topics it may write to ' +
    "in the pipeline's `output_topics`)";
  assert.deepEqual(result.outcomes[0], Outcome.retry(denied));
  assert.equal(new TopicNotAllowed('out').message, denied);
  assert.equal(new UnknownSource(7n).message, 'offset 7 is not a record of this batch');
});

/** Ends each record as its value says. */
class Raising extends Processor {
  /** @type {Processor['process']} */
  process(record, ctx) {
    ctx.emitValue('out', 'x');
    switch (record.valueText()) {
      case 'retry':
        transient(() => {
          throw new Error('downstream down');
        });
        break;
      case 'reject':
        rejecting('parsing', () => JSON.parse('{x'));
        break;
      case 'type':
        /** @type {any} */ (null).field;
        break;
      case 'string':
        throw 'a bare string';
      case 'emit':
        ctx.emitValue('nope', 'x');
        break;
      case 'fault':
        throw new Fault('broken');
      case 'recursion': {
        const deeper = () => deeper();
        deeper();
        break;
      }
      case 'async':
        return /** @type {any} */ (Promise.resolve());
    }
  }
}

test('thrown errors become outcomes', () => {
  const batch = new TestBatch().valueOnly('ok').valueOnly('retry').valueOnly('reject').valueOnly('type').valueOnly('string').valueOnly('emit');
  const result = new Harness().allowTopic('out').run(new Raising(), batch);
  assert.deepEqual(result.outcomes.slice(0, 2), [Outcome.processed(), Outcome.retry('Error: downstream down')]);
  assert.match(result.outcomes[2].reason, /^parsing: /);
  assert.equal(result.outcomes[2].status, 'reject');
  assert.match(result.outcomes[3].reason, /^TypeError: /);
  assert.deepEqual(result.outcomes[4], Outcome.reject('a bare string'));
  assert.deepEqual(result.outcomes[5], Outcome.reject(new TopicNotAllowed('nope').message));
  assert.deepEqual(result.emitted.map((e) => e.source), [0n]);
  assert.equal(result.dropped.length, 5);
});

test('faults escape like a panic', () => {
  assert.throws(() => run(new Raising(), new TestBatch().valueOnly('fault')), Fault);
  assert.throws(() => run(new Raising(), new TestBatch().valueOnly('recursion')), RangeError);
  assert.throws(() => run(new Raising(), new TestBatch().valueOnly('async')), /synchronous/);
});

/** Works on the whole batch: a summary for the batch, a line per good record. */
class WholeBatch extends Processor {
  /** @type {Processor['processBatch']} */
  processBatch(batch, ctx) {
    ctx.emitValue('summary', `${batch.length} records`);
    return batch.records().map((record) => {
      ctx.forRecord(record, (c) => c.emitValue('lines', record.value ?? ''));
      return record.valueText() === 'bad' ? Outcome.reject('bad') : Outcome.processed();
    });
  }
}

test('batch outputs need every record processed', () => {
  let result = run(new WholeBatch(), new TestBatch().valueOnly('a').valueOnly('b'));
  assert.deepEqual(result.emitted.map((e) => [e.topic, e.source]), [['summary', null], ['lines', 0n], ['lines', 1n]]);
  result = run(new WholeBatch(), new TestBatch().valueOnly('a').valueOnly('bad'));
  assert.deepEqual(result.emitted.map((e) => [e.topic, e.source]), [['lines', 0n]]);
  assert.deepEqual(result.dropped.map((e) => [e.topic, e.source]), [['summary', null], ['lines', 1n]]);
});

test('forRecord returns, and an unknown source is refused', () => {
  class Odd extends Processor {
    /** @type {Processor['processBatch']} */
    processBatch(batch, ctx) {
      const first = /** @type {import('../src/index.js').Record} */ (batch.at(0));
      assert.equal(ctx.forRecord(first, () => 'returned'), 'returned');
      const other = /** @type {import('../src/index.js').Record} */ (new TestBatch().atOffset(99).valueOnly('x').batch().at(0));
      assert.throws(() => ctx.forRecord(other, (c) => c.emitValue('out', 'x')), UnknownSource);
      return batch.records().map(() => Outcome.processed());
    }
  }
  assert.ok(run(new Odd(), new TestBatch().valueOnly('a')).allProcessed());
});

test('a wrong count is caught', () => {
  class Short extends Processor {
    processBatch() {
      return [];
    }
  }
  assert.throws(() => run(new Short(), new TestBatch().record('k', 'v')), /returned 0 outcomes for a batch of 1 records/);
});

test('runEach bypasses processBatch', () => {
  class Both extends Processor {
    process() {
      throw new Reject('per record');
    }
    /** @type {Processor['processBatch']} */
    processBatch(batch) {
      return batch.records().map(() => Outcome.processed());
    }
  }
  assert.ok(run(new Both(), new TestBatch().valueOnly('a')).allProcessed());
  assert.deepEqual(new Harness().runEach(new Both(), new TestBatch().valueOnly('a')).outcomes, [Outcome.reject('per record')]);
});

class Configured extends Processor {
  topic = '';
  /** @type {string[]} */
  told = [];

  /** @type {Processor['configure']} */
  configure(settings) {
    this.topic = settings.require('topic');
  }

  process() {}

  /** @type {Processor['assigned']} */
  assigned(partition) {
    this.told.push(`+${partition}`);
  }

  /** @type {Processor['revoked']} */
  revoked(partition) {
    this.told.push(`-${partition}`);
  }

  selfTest() {
    if (!this.topic) throw new Error('not configured');
  }
}

test('settings and lifecycle', () => {
  assert.throws(() => new Harness().processor(Configured), { message: 'setting `topic` is required but the pipeline does not set it' });
  const harness = new Harness().setting('topic', 'out');
  harness.selfTest(Configured);
  const p = harness.processor(Configured);
  assert.equal(p.topic, 'out');
  harness.run(p, new TestBatch('t', 0).valueOnly('a'));
  harness.run(p, new TestBatch('t', 0).valueOnly('b'));
  harness.run(p, new TestBatch('t', 1).valueOnly('c'));
  harness.revoke(p, 't', 0);
  harness.revoke(p, 't', 7);
  assert.deepEqual(p.told, ['+t/0', '+t/1', '-t/0']);
});

test('capabilities are enforced when declared', () => {
  class Uses extends Processor {
    /** @type {Processor['process']} */
    process(record, ctx) {
      const command = record.valueText();
      if (command === 'log') ctx.info('hello');
      else if (command === 'headers') record.header('x');
      else ctx.emitValue('out', 'x');
    }
  }
  for (const [command, capability] of [['log', 'log'], ['headers', 'headers'], ['emit', 'output']]) {
    assert.throws(() => new Harness().capabilities().run(new Uses(), new TestBatch().valueOnly(command)), {
      name: 'CapabilityError',
      message: new RegExp(`does not declare the \`${capability}\` capability`),
    });
  }
  const everything = new Harness().capabilities('log', 'output', 'headers');
  assert.ok(everything.run(new Uses(), new TestBatch().valueOnly('log').valueOnly('headers').valueOnly('x')).allProcessed());
  assert.throws(() => new Harness().capabilities(/** @type {any} */ ('network')), /unknown capabilities/);
  assert.ok(new CapabilityError('x') instanceof Fault);
});

test('a processor without process rejects clearly', () => {
  const result = run(new Processor(), new TestBatch().valueOnly('a'));
  assert.match(result.outcomes[0].reason, /^Error: Processor implements neither process nor processBatch/);
});

test('buffers from another realm are bytes too (component bindings make them)', async () => {
  const { runInNewContext } = await import('node:vm');
  const foreign = runInNewContext('new Uint8Array([104, 105])');
  assert.equal(foreign instanceof Uint8Array, false);
  const result = run(new Forward(), new TestBatch().valueOnly('x'));
  assert.ok(result.allProcessed());
  class Foreign extends Processor {
    /** @type {Processor['process']} */
    process(_, ctx) {
      ctx.emit({ topic: 'out', key: foreign, value: runInNewContext('new Uint16Array([1])') });
    }
  }
  const emitted = run(new Foreign(), new TestBatch().valueOnly('x')).emitted[0];
  assert.equal(emitted.keyText(), 'hi');
  assert.equal(emitted.value?.length, 2);
});
