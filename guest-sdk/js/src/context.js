/**
 * What a processor can do besides returning outcomes: emit records, log, and
 * reach the keyed state of the batch's partition.
 * @module
 */

const utf8 = new TextEncoder();

/** Severity of a log line (the WIT `level` names). */
export const Level = Object.freeze({
  TRACE: /** @type {const} */ ('trace'),
  DEBUG: /** @type {const} */ ('debug'),
  INFO: /** @type {const} */ ('info'),
  WARN: /** @type {const} */ ('warn'),
  ERROR: /** @type {const} */ ('error'),
});

/**
 * `data` as bytes: strings are encoded as UTF-8.
 * @param {string | Uint8Array} data
 * @returns {Uint8Array}
 */
export function toBytes(data) {
  if (typeof data === 'string') return utf8.encode(data);
  // Not `instanceof`: in a component the host's buffers come from another realm.
  if (ArrayBuffer.isView(data)) {
    return Object.prototype.toString.call(data) === '[object Uint8Array]' ? data : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  throw new TypeError(`expected a string or a Uint8Array, got ${Object.prototype.toString.call(data)}`);
}

/**
 * @param {string | Uint8Array | null | undefined} data
 * @returns {Uint8Array | null}
 */
function optionalBytes(data) {
  return data == null ? null : toBytes(data);
}

/** Quotes like Rust's `{:?}`, so messages match the Rust SDK's. */
const quoted = (/** @type {string} */ text) => JSON.stringify(text);

/**
 * The host refused an emitted record. The subclasses say why; their messages are
 * the Rust SDK's `EmitError` messages. Left uncaught in `process` it rejects the
 * record (a refused output will be refused next time too).
 */
export class EmitError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** The pipeline's configuration does not allow producing to this topic. */
export class TopicNotAllowed extends EmitError {
  /** @param {string} topic */
  constructor(topic) {
    super(
      `topic ${quoted(topic)} is not allowed for this pipeline (the operator lists the topics it may write to in ` +
        "the pipeline's `output_topics`)",
    );
    this.topic = topic;
  }
}

/** The record exceeds the host's size limit (`limit`, in bytes). */
export class TooLarge extends EmitError {
  /** @param {number} limit */
  constructor(limit) {
    super(`record exceeds the size limit of ${limit} bytes`);
    this.limit = limit;
  }
}

/** The batch already emitted as many records as the host allows. */
export class TooMany extends EmitError {
  constructor() {
    super('batch emitted more records than allowed');
  }
}

/** The batch's outputs reached the host's byte budget (`budget`, in bytes). */
export class OverBudget extends EmitError {
  /** @param {number} budget */
  constructor(budget) {
    super(`batch outputs exceed the budget of ${budget} bytes`);
    this.budget = budget;
  }
}

/** The output was attributed to an offset that is not in the current batch. */
export class UnknownSource extends EmitError {
  /** @param {bigint} offset */
  constructor(offset) {
    super(`offset ${offset} is not a record of this batch`);
    this.offset = offset;
  }
}

/**
 * An output reduced to bytes, as the host receives it.
 * @typedef {{topic: string, key: Uint8Array | null, value: Uint8Array | null, headers: Array<[string, Uint8Array | null]>}} WireOutput
 */

/**
 * An output record for `ctx.emit`: `{ topic, key?, value?, headers? }`. Keys,
 * values and header values are strings (sent as UTF-8) or `Uint8Array`s; a
 * missing value is a tombstone.
 * @typedef {import('./index.d.ts').Output} Output
 */

/**
 * @param {Output} output
 * @returns {WireOutput}
 */
export function toWire(output) {
  if (typeof output?.topic !== 'string') throw new TypeError('an output needs a topic (a string)');
  return {
    topic: output.topic,
    key: optionalBytes(output.key),
    value: optionalBytes(output.value),
    headers: [...(output.headers ?? [])].map(([name, value]) => [name, optionalBytes(value)]),
  };
}

/**
 * Key, value and headers in bytes, as the host counts a record's size.
 * @param {WireOutput} output
 */
export function wireSize(output) {
  let size = (output.key?.byteLength ?? 0) + (output.value?.byteLength ?? 0);
  for (const [name, value] of output.headers) size += utf8.encode(name).byteLength + (value?.byteLength ?? 0);
  return size;
}

/**
 * Where a context's emits, logs and state calls go: the host in a component,
 * memory in tests. `emit` throws `EmitError` when the host refuses.
 * @typedef {{emit(source: bigint | null, output: WireOutput): void, log(level: string, message: string): void, state(): import('./state.js').State}} Sink
 */

/**
 * The SDK's own way to attribute outputs to a record without a closure per record
 * (the default `processBatch`): sets the source record and returns the previous one.
 */
export const attribute = Symbol('ferry.attribute');

/**
 * The processor's handle on the host for the duration of one batch.
 *
 * Every output belongs to an input record: in `process` to the record being
 * processed, in an overridden `processBatch` to the whole batch unless emitted
 * inside `forRecord`. The host publishes an output only if its record ends
 * processed (for the whole batch: if every record does).
 */
export class Context {
  #sink;
  /**
   * The record outputs are attributed to; null: the whole batch. Its offset is
   * only read when it emits (a 64-bit offset is a BigInt to make).
   * @type {{readonly offset: bigint} | null}
   */
  #source = null;

  /** @param {Sink} sink */
  constructor(sink) {
    this.#sink = sink;
  }

  /**
   * Runs `fn` with outputs attributed to `record`: they are published only if it
   * ends processed. Returns what `fn` returns.
   * @template T
   * @param {import('./record.js').Record} record
   * @param {(ctx: Context) => T} fn
   * @returns {T}
   */
  forRecord(record, fn) {
    const outer = this.#source;
    this.#source = record;
    try {
      return fn(this);
    } finally {
      this.#source = outer;
    }
  }

  /**
   * @param {{readonly offset: bigint} | null} record
   * @returns {{readonly offset: bigint} | null}
   */
  [attribute](record) {
    const outer = this.#source;
    this.#source = record;
    return outer;
  }

  /** The offset outputs are attributed to; null: the whole batch. */
  #offset() {
    return this.#source === null ? null : this.#source.offset;
  }

  /**
   * Emits `value` with no key to `topic`.
   * @param {string} topic
   * @param {string | Uint8Array} value
   */
  emitValue(topic, value) {
    if (typeof topic !== 'string') throw new TypeError('an output needs a topic (a string)');
    // Straight to the wire form: no output object to build and convert.
    this.#sink.emit(this.#offset(), { topic, key: null, value: optionalBytes(value), headers: [] });
  }

  /**
   * Emits `key` and `value` to `topic`.
   * @param {string} topic
   * @param {string | Uint8Array} key
   * @param {string | Uint8Array} value
   */
  emitKv(topic, key, value) {
    if (typeof topic !== 'string') throw new TypeError('an output needs a topic (a string)');
    this.#sink.emit(this.#offset(), { topic, key: optionalBytes(key), value: optionalBytes(value), headers: [] });
  }

  /**
   * Queues an output record; throws `EmitError` if the host refuses it. The host
   * produces it after the batch returns, if its record ends processed, and commits
   * the record's offset only once the broker has it.
   * @param {Output} output
   */
  emit(output) {
    this.#sink.emit(this.#offset(), toWire(output));
  }

  /**
   * The keyed state of the batch's input partition (see `State`). The project
   * must declare the `state` capability.
   * @returns {import('./state.js').State}
   */
  state() {
    return this.#sink.state();
  }

  /**
   * Writes a line to the host's logs under the tenant's own target. The host
   * truncates long lines, strips control characters and rate-limits them.
   * @param {'trace' | 'debug' | 'info' | 'warn' | 'error'} level
   * @param {string} message
   */
  log(level, message) {
    if (!Object.values(Level).includes(level)) throw new TypeError(`unknown log level ${quoted(String(level))}`);
    this.#sink.log(level, String(message));
  }

  /** @param {string} message */
  trace(message) {
    this.log('trace', message);
  }

  /** @param {string} message */
  debug(message) {
    this.log('debug', message);
  }

  /** @param {string} message */
  info(message) {
    this.log('info', message);
  }

  /** @param {string} message */
  warn(message) {
    this.log('warn', message);
  }

  /** @param {string} message */
  error(message) {
    this.log('error', message);
  }
}
