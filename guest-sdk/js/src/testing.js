/**
 * Unit-test a processor natively with `node --test`: no host, no WebAssembly.
 *
 * Build a batch with `TestBatch`, run it with a `Harness` (which enforces the
 * host's default limits, the topics you grant, the settings you give and, if told,
 * the capabilities the project declares) and look at the outcomes, the outputs the
 * host would publish and the log lines:
 *
 *     const batch = new TestBatch('in', 0).record('k', 'v').valueOnly('w');
 *     const run = new Harness().allowTopic('echo').run(new Echo(), batch);
 *     assert.ok(run.allProcessed());
 *     assert.equal(run.emitted[1].valueText(), 'w');
 * @module
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { missing, validate } from './capabilities.js';
import { endpoint, standInFetch } from './http.js';
import { Context, OverBudget, TooLarge, TooMany, TopicNotAllowed, UnknownSource, toBytes, wireSize } from './context.js';
import * as limits from './limits.js';
import { outcomeOf } from './processor.js';
import { Batch, TopicPartition } from './record.js';
import { Settings } from './settings.js';
import { MemoryStore, State, stateKey } from './state.js';
import { BatchEncoder } from './wire.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * What a batch emitted and logged, after the harness's checks.
 * @typedef {import('./context.js').Sink & {emitted: Emitted[], logs: Array<{level: string, message: string}>, store: MemoryStore}} Sink
 */

/** @param {string | Uint8Array | null | undefined} data */
const optionalBytes = (data) => (data == null ? null : toBytes(data));

/**
 * A batch built in a test. Offsets start at 0 and go up by one per record unless
 * `atOffset` says otherwise; records have no timestamp unless `timestamp` sets
 * one. Every method returns the batch, for chaining.
 */
export class TestBatch {
  #nextOffset = 0n;
  /** @type {number | null} */
  #timestampMs = null;
  #encoder = new BatchEncoder();

  /**
   * @param {string} [topic]
   * @param {number} [partition]
   */
  constructor(topic = 'in', partition = 0) {
    this.topic = topic;
    this.partition = partition;
  }

  /**
   * Gives the next record this offset (later ones follow from it).
   * @param {number | bigint} offset
   */
  atOffset(offset) {
    this.#nextOffset = BigInt(offset);
    return this;
  }

  /**
   * Gives the following records this timestamp (`null` for none).
   * @param {number | null} timestampMs
   */
  timestamp(timestampMs) {
    this.#timestampMs = timestampMs;
    return this;
  }

  /**
   * Adds a record with a key, a value and optionally headers.
   * @param {string | Uint8Array} key
   * @param {string | Uint8Array} value
   * @param {Iterable<[string, string | Uint8Array | null]>} [headers]
   */
  record(key, value, headers = []) {
    return this.raw(key, value, headers);
  }

  /**
   * Adds a record with a value and no key.
   * @param {string | Uint8Array} value
   */
  valueOnly(value) {
    return this.raw(null, value);
  }

  /**
   * Adds a record with a key and no value.
   * @param {string | Uint8Array} key
   */
  tombstone(key) {
    return this.raw(key, null);
  }

  /**
   * Adds a record where anything may be absent.
   * @param {string | Uint8Array | null} key
   * @param {string | Uint8Array | null} value
   * @param {Iterable<[string, string | Uint8Array | null]>} [headers]
   */
  raw(key, value, headers = []) {
    const encoded = [...headers].map(([name, v]) => /** @type {[string, Uint8Array | null]} */ ([name, optionalBytes(v)]));
    this.#encoder.push(this.#nextOffset, this.#timestampMs, optionalBytes(key), optionalBytes(value), encoded);
    this.#nextOffset += 1n;
    return this;
  }

  /** How many records the batch holds. */
  get length() {
    return this.#encoder.count;
  }

  /**
   * The batch as the processor sees it.
   * @param {() => void} [headerGate]
   */
  batch(headerGate) {
    return new Batch(this.topic, this.partition, this.#encoder.count, this.#encoder.bytes(), headerGate);
  }
}

/** @param {Uint8Array | null} data */
function text(data) {
  try {
    return data === null ? null : utf8.decode(data);
  } catch {
    return null;
  }
}

/** A record the processor emitted. */
export class Emitted {
  /**
   * @param {bigint | null} source the offset of the record it belongs to; null: the whole batch
   * @param {import('./context.js').WireOutput} output
   */
  constructor(source, output) {
    this.source = source;
    this.topic = output.topic;
    // Copies, as the host does: the processor may reuse its buffers.
    this.key = output.key && output.key.slice();
    this.value = output.value && output.value.slice();
    this.headers = output.headers.map(([name, value]) => [name, value && value.slice()]);
  }

  /** The key as UTF-8, if present and valid. */
  keyText() {
    return text(this.key);
  }

  /** The value as UTF-8, if present and valid. */
  valueText() {
    return text(this.value);
  }
}

/** What one batch did. */
export class Run {
  /**
   * @param {import('./processor.js').Outcome[]} outcomes one per record, in batch order
   * @param {Emitted[]} emitted outputs the host would publish, in emit order
   * @param {Emitted[]} dropped outputs the host would drop: their record was not processed
   * @param {Array<{level: string, message: string}>} logs log lines, in order
   */
  constructor(outcomes, emitted, dropped, logs) {
    this.outcomes = outcomes;
    this.emitted = emitted;
    this.dropped = dropped;
    this.logs = logs;
  }

  /** True when every record was processed. */
  allProcessed() {
    return this.outcomes.every((outcome) => outcome.isProcessed);
  }
}

/**
 * A stand-in host: the limits the real one enforces per batch (its defaults
 * unless changed), the topics the pipeline grants, its settings, the capabilities
 * the project declares, and the partition lifecycle calls. Configuration methods
 * return the harness, for chaining.
 */
export class Harness {
  /** @type {Set<string> | null} null: every topic is allowed */
  #allowedTopics = null;
  /** @type {Set<string> | null} null: every capability is available */
  #capabilities = null;
  #maxEmits = limits.MAX_OUTPUTS_PER_BATCH;
  #maxRecordBytes = limits.MAX_OUTPUT_BYTES;
  #batchBytes = limits.OUTPUT_BYTES_PER_BATCH;
  /** @type {Map<string, string>} */
  #settings = new Map();
  /** @type {Set<string>} partitions the processor was told about, as "topic/partition" */
  #told = new Set();
  /** @type {Map<string, Map<string, [Uint8Array, Uint8Array]>>} each partition's keyed state, by "topic/partition" */
  #state = new Map();
  #stateBytes = limits.STATE_BYTES_PER_PARTITION;
  #stateWrites = limits.STATE_WRITES_PER_BATCH;
  /** @type {Array<{scheme: string, host: string, port: number}> | null} null: every URL */
  #httpAllow = null;
  /** @type {import('./http.js').Service | null} null: the real fetch answers */
  #httpService = null;

  /**
   * Allows \`fetch\` to \`rule\` (\`scheme://host[:port]\`, \`*.\` before a name for its
   * subdomains, as in \`[pipeline.http] allow\`). Once any rule is given, a fetch
   * of another URL rejects with a \`TypeError\` before any connection, as on the
   * host.
   * @param {string} rule
   */
  allowHttp(rule) {
    (this.#httpAllow ??= []).push(endpoint(rule));
    return this;
  }

  /**
   * Answers the processor's \`fetch\` calls that pass the rules with \`service\`
   * (which gets the \`Request\` and returns a \`Response\`, or throws to play a
   * failed request). Without one, the real \`fetch\` sends them: to a test's own
   * server on loopback, say.
   * @param {import('./http.js').Service} service
   */
  httpService(service) {
    this.#httpService = service;
    return this;
  }

  /**
   * Runs \`call\` with \`fetch\` checked and answered as this harness says; if it
   * returns a Promise, until that settles.
   * @template T
   * @param {() => T} call
   * @returns {T}
   */
  #withFetch(call) {
    const realFetch = globalThis.fetch;
    globalThis.fetch = standInFetch({
      allow: this.#httpAllow,
      service: this.#httpService,
      require: () => this.#require('http'),
      fetch: realFetch,
    });
    let result;
    try {
      result = call();
    } catch (error) {
      globalThis.fetch = realFetch;
      throw error;
    }
    if (result !== null && typeof result === 'object' && typeof (/** @type {any} */ (result).then) === 'function') {
      return /** @type {any} */ (/** @type {Promise<unknown>} */ (/** @type {unknown} */ (result)).finally(() => (globalThis.fetch = realFetch)));
    }
    globalThis.fetch = realFetch;
    return result;
  }

  /**
   * Allows emitting to `topic`. Once any topic is allowed, emits to others throw
   * `TopicNotAllowed`, as on a host whose pipeline lists only these `output_topics`.
   * @param {string} topic
   */
  allowTopic(topic) {
    (this.#allowedTopics ??= new Set()).add(topic);
    return this;
  }

  /** Refuses every emit: as if the pipeline had no output topic. */
  denyAllTopics() {
    this.#allowedTopics = new Set();
    return this;
  }

  /**
   * Allows at most `count` outputs per batch (then `TooMany`).
   * @param {number} count
   */
  maxEmits(count) {
    this.#maxEmits = count;
    return this;
  }

  /**
   * Refuses outputs larger than `size` bytes (`TooLarge`).
   * @param {number} size
   */
  maxRecordBytes(size) {
    this.#maxRecordBytes = size;
    return this;
  }

  /**
   * Refuses emits once a batch's outputs exceed `size` bytes (`OverBudget`).
   * @param {number} size
   */
  batchOutputBytes(size) {
    this.#batchBytes = size;
    return this;
  }

  /**
   * Refuses state writes once a partition's state would exceed `size` bytes
   * (`PartitionFull`), as `[pipeline.state] partition_bytes` does; each entry
   * counts its key, its value and 128 bytes.
   * @param {number} size
   */
  stateBytes(size) {
    this.#stateBytes = size;
    return this;
  }

  /**
   * Allows at most `count` state writes per batch (then `TooManyWrites`).
   * @param {number} count
   */
  stateWrites(count) {
    this.#stateWrites = count;
    return this;
  }

  /**
   * Starts `topic`/`partition` with this state, as a restore from its changelog
   * would.
   * @param {string} topic
   * @param {number} partition
   * @param {Iterable<readonly [string | Uint8Array, string | Uint8Array]>} entries
   */
  withState(topic, partition, entries) {
    /** @type {Map<string, [Uint8Array, Uint8Array]>} */
    const map = new Map();
    for (const [k, v] of entries) {
      const key = toBytes(k).slice();
      map.set(stateKey(key), [key, toBytes(v).slice()]);
    }
    this.#state.set(String(new TopicPartition(topic, partition)), map);
    return this;
  }

  /**
   * The keyed state of `topic`/`partition` as the batches run so far left it: a
   * `Map` from each key as text (its bytes as UTF-8, where they are not the key is
   * its bytes as Latin-1) to the value's bytes, in key order.
   * @param {string} topic
   * @param {number} partition
   * @returns {Map<string, Uint8Array>}
   */
  state(topic, partition) {
    const map = this.#state.get(String(new TopicPartition(topic, partition))) ?? new Map();
    return new Map(
      [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([name, [key, value]]) => [text(key) ?? name, value.slice()]),
    );
  }

  /**
   * Sets one of the pipeline's settings.
   * @param {string} key
   * @param {string} value
   */
  setting(key, value) {
    this.#settings.set(key, value);
    return this;
  }

  /**
   * Makes only these capabilities available, as in a component whose project
   * declares exactly these: using another throws `CapabilityError`.
   * @param {...string} names
   */
  capabilities(...names) {
    this.#capabilities = validate(names);
    return this;
  }

  /**
   * `capabilities` as the project's package.json declares them.
   * @param {string} projectDir
   */
  declaredBy(projectDir) {
    const manifest = JSON.parse(readFileSync(join(projectDir, 'package.json'), 'utf8'));
    const declared = manifest?.ferry?.capabilities;
    if (!Array.isArray(declared)) throw new TypeError(`${projectDir}/package.json has no "ferry": {"capabilities": [...]}`);
    this.#capabilities = validate(declared);
    return this;
  }

  /** The settings processors get from this harness. */
  get settings() {
    return new Settings(this.#settings);
  }

  /** @param {'log' | 'output' | 'headers' | 'state' | 'http'} capability */
  #require(capability) {
    if (this.#capabilities !== null && !this.#capabilities.has(capability)) throw missing(capability);
  }

  /**
   * A fresh processor, configured with this harness's settings, as the host makes
   * one for a new instance (throws what `configure` throws).
   * @template {import('./processor.js').Processor} P
   * @param {new () => P} cls
   * @returns {P}
   */
  processor(cls) {
    const processor = new cls();
    processor.configure(this.settings);
    return processor;
  }

  /**
   * Runs `selfTest` on a fresh, configured processor, as the host does before a
   * deploy (throws what it throws).
   * @param {new () => import('./processor.js').Processor} cls
   */
  selfTest(cls) {
    this.processor(cls).selfTest();
  }

  /**
   * Tells `processor` that `topic`/`partition` was revoked (if it was told about
   * it), as the host does when the partition moves to another member.
   * @param {import('./processor.js').Processor} processor
   * @param {string} topic
   * @param {number} partition
   */
  revoke(processor, topic, partition) {
    const tp = new TopicPartition(topic, partition);
    if (this.#told.delete(String(tp))) processor.revoked(tp);
  }

  /**
   * Runs one batch through `processor`, which keeps its state for the next run.
   * The first batch of a partition is preceded by `assigned`. Throws if
   * `processBatch` returns the wrong number of outcomes (the host refuses that).
   * @param {import('./processor.js').Processor} processor
   * @param {TestBatch} batch
   */
  run(processor, batch) {
    const { view, sink, ctx } = this.#start(processor, batch);
    const outcomes = this.#withFetch(() => processor.processBatch(view, ctx));
    /** @param {import('./processor.js').Outcome[]} list */
    const finished = (list) => {
      if (list.length !== view.length) {
        throw new Error(
          `processBatch returned ${list.length} outcomes for a batch of ${view.length} records; the host refuses such an answer`,
        );
      }
      return this.#finish(view, list, sink);
    };
    // An async processBatch (one that awaits fetch) gets a Promise of the run.
    if (!Array.isArray(outcomes) && typeof (/** @type {any} */ (outcomes)?.then) === 'function') {
      return /** @type {any} */ (/** @type {Promise<import('./processor.js').Outcome[]>} */ (/** @type {unknown} */ (outcomes)).then(finished));
    }
    return finished(outcomes);
  }

  /**
   * \`run\`, as a Promise whether \`processBatch\` is async or not.
   * @param {import('./processor.js').Processor} processor
   * @param {TestBatch} batch
   * @returns {Promise<Run>}
   */
  async runAsync(processor, batch) {
    return this.run(processor, batch);
  }

  /**
   * Runs each record through `process` directly, bypassing an overridden
   * `processBatch`; useful to check that the two agree.
   * @param {import('./processor.js').Processor} processor
   * @param {TestBatch} batch
   */
  runEach(processor, batch) {
    const { view, sink, ctx } = this.#start(processor, batch);
    const outcomes = view.records().map((record) => ctx.forRecord(record, (c) => outcomeOf(() => processor.process(record, c))));
    return this.#finish(view, outcomes, sink);
  }

  /**
   * Keeps the batch's state writes only if every record finished (processed or
   * rejected), as the host does: after a retry the whole batch comes again.
   * @param {Batch} view
   * @param {import('./processor.js').Outcome[]} outcomes
   * @param {Sink} sink
   */
  #finish(view, outcomes, sink) {
    if (sink.store.touched && !outcomes.some((outcome) => outcome.status === 'retry')) {
      this.#state.set(String(new TopicPartition(view.topic, view.partition)), sink.store.entries);
    }
    return finish(view, outcomes, sink);
  }

  /**
   * @param {import('./processor.js').Processor} processor
   * @param {TestBatch} batch
   */
  #start(processor, batch) {
    const tp = new TopicPartition(batch.topic, batch.partition);
    if (!this.#told.has(String(tp))) {
      this.#told.add(String(tp));
      processor.assigned(tp);
    }
    const view = batch.batch(() => this.#require('headers'));
    const offsets = new Set(view.records().map((r) => r.offset));
    const used = { count: 0, bytes: 0 };
    const store = new MemoryStore(this.#state.get(String(tp)) ?? new Map(), () => this.#require('state'), this.#stateBytes, this.#stateWrites);
    const state = new State(store);
    /** @type {Sink} */
    const sink = {
      emitted: [],
      logs: [],
      store,
      state: () => {
        this.#require('state');
        return state;
      },
      emit: (source, output) => {
        this.#check(source, output, used, offsets);
        sink.emitted.push(new Emitted(source, output));
      },
      log: (level, message) => {
        this.#require('log');
        sink.logs.push({ level, message });
      },
    };
    return { view, sink, ctx: new Context(sink) };
  }

  /**
   * The host's per-batch checks, in the host's order.
   * @param {bigint | null} source
   * @param {import('./context.js').WireOutput} output
   * @param {{count: number, bytes: number}} used
   * @param {Set<bigint>} offsets
   */
  #check(source, output, used, offsets) {
    this.#require('output');
    if (this.#allowedTopics !== null && !this.#allowedTopics.has(output.topic)) throw new TopicNotAllowed(output.topic);
    if (source !== null && !offsets.has(source)) throw new UnknownSource(source);
    if (used.count >= this.#maxEmits) throw new TooMany();
    const size = wireSize(output);
    if (size > this.#maxRecordBytes) throw new TooLarge(this.#maxRecordBytes);
    if (used.bytes + size > this.#batchBytes) throw new OverBudget(this.#batchBytes);
    used.count += 1;
    used.bytes += size;
  }
}

/**
 * Splits what was emitted into published and dropped, as the host does.
 * @param {Batch} view
 * @param {import('./processor.js').Outcome[]} outcomes
 * @param {Sink} sink
 */
function finish(view, outcomes, sink) {
  const records = view.records();
  const processed = new Set(records.filter((_, i) => outcomes[i]?.isProcessed).map((r) => r.offset));
  const everything = processed.size === records.length;
  /** @type {Emitted[]} */
  const emitted = [];
  /** @type {Emitted[]} */
  const dropped = [];
  for (const out of sink.emitted) {
    const published = out.source === null ? everything : processed.has(out.source);
    (published ? emitted : dropped).push(out);
  }
  return new Run([...outcomes], emitted, dropped, sink.logs);
}

/**
 * Runs one batch under the host's default limits, with every topic allowed.
 * @param {import('./processor.js').Processor} processor
 * @param {TestBatch} batch
 */
export function run(processor, batch) {
  return new Harness().run(processor, batch);
}
