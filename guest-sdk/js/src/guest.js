/**
 * Runs a processor behind the component's exports. Free of generated bindings
 * (`component.js` adapts them), so it is unit-tested natively with a fake host.
 * @module
 */

import { missing } from './capabilities.js';
import { Context } from './context.js';
import { Outbox } from './outbox.js';
import { Fault, Outcome } from './processor.js';
import { Batch, TopicPartition } from './record.js';
import { Settings } from './settings.js';
import { State } from './state.js';

const PROCESSED = Outcome.processed();

/** @typedef {{statuses: Array<import('./processor.js').Status>, failures: Array<{offset: bigint, reason: string}>}} Reply */

/**
 * The host's functions as the component imports them; `null` for a capability the
 * project does not declare (its interface is not imported).
 * @typedef {object} Host
 * @property {() => Array<[string, string]>} entries
 * @property {((source: bigint | null, output: import('./context.js').WireOutput) => void) | null} emit
 * @property {((level: string, message: string) => void) | null} log
 * @property {(() => boolean) | null} headersEnabled
 * @property {import('./state.js').Store | null} [state]
 * @property {(() => import('./outbox.js').OutputLimits) | null} [outputLimits] `output.limits`
 * @property {((outputs: Uint8Array) => [number, Error] | null) | null} [emitMany] `output.emit-many`, which
 *   returns the index of the first output refused, and why: with it and `outputLimits`, outputs are buffered per call
 */

/**
 * One component instance's processor: constructed when the entry module is
 * evaluated (so at build time, into the snapshot) and configured on first use.
 */
export class Guest {
  #cls;
  #host;
  #processor;
  #configured = false;
  #headersAsked = false;
  #sink;
  /** @type {Outbox | null} */
  #outbox;

  /**
   * @param {new () => import('./processor.js').Processor} cls
   * @param {Host} host
   */
  constructor(cls, host) {
    this.#cls = cls;
    this.#host = host;
    this.#processor = new cls();
    const state = host.state ? new State(host.state) : null;
    const outbox = host.emit && host.outputLimits && host.emitMany ? new Outbox(host.outputLimits, host.emitMany) : null;
    this.#outbox = outbox;
    this.#sink = {
      /** @type {(source: bigint | null, output: import('./context.js').WireOutput) => void} */
      emit: outbox
        ? (source, output) => outbox.emit(source, output)
        : (source, output) => {
            if (host.emit === null) throw missing('output');
            host.emit(source, output);
          },
      /** @type {(level: string, message: string) => void} */
      log(level, message) {
        if (host.log === null) throw missing('log');
        host.log(level, message);
      },
      state() {
        if (state === null) throw missing('state');
        return state;
      },
    };
  }

  /** The instance's processor, configured with the pipeline's settings. */
  processor() {
    if (!this.#configured) {
      try {
        this.#processor.configure(new Settings(this.#host.entries()));
      } catch (error) {
        throw new Fault(`ferry-sdk: the processor refused its settings: ${messageOf(error)}`);
      }
      this.#configured = true;
    }
    return this.#processor;
  }

  /** Asks the host for headers once; the import is what makes it send them. */
  #headerGate = () => {
    if (this.#headersAsked) return;
    if (this.#host.headersEnabled === null) throw missing('headers');
    this.#host.headersEnabled();
    this.#headersAsked = true;
  };

  /**
   * Runs one batch; returns `[offset, outcome]` pairs. The outcome count is not
   * checked here: the host validates it (offset -1 past the batch's end).
   * @param {string} topic
   * @param {number} partition
   * @param {number} count
   * @param {Uint8Array} records
   * @returns {Array<[bigint, import('./processor.js').Outcome]>}
   */
  process(topic, partition, count, records) {
    const [batch, outcomes] = this.#run(topic, partition, count, records);
    /** @param {import('./processor.js').Outcome[]} list */
    const pair = (list) => list.map((outcome, i) => /** @type {[bigint, import('./processor.js').Outcome]} */ ([offsetAt(batch, i), outcome]));
    return Array.isArray(outcomes) ? pair(outcomes) : /** @type {any} */ (outcomes.then((settled) => pair(arrayOf(settled))));
  }

  /**
   * Runs one batch; returns the WIT reply: one status per outcome, and the offset
   * and reason of each one that is not processed. Offsets are only read for
   * those: a batch that all went well costs no pass for them.
   * @param {string} topic
   * @param {number} partition
   * @param {number} count
   * @param {Uint8Array} records
   * An async `processBatch` (one that awaits `fetch`) makes this a Promise of
   * the reply, which componentize-js runs the event loop to settle.
   * @returns {Reply | Promise<Reply>}
   */
  reply(topic, partition, count, records) {
    const [batch, outcomes] = this.#run(topic, partition, count, records);
    if (!Array.isArray(outcomes)) {
      // An async processor's outputs are handed over once it settled.
      return outcomes.then((settled) => {
        const list = arrayOf(settled);
        this.#outbox?.flush();
        return this.#answer(batch, list);
      });
    }
    return this.#answer(batch, outcomes);
  }

  /**
   * @param {Batch} batch
   * @param {import('./processor.js').Outcome[]} outcomes
   */
  #answer(batch, outcomes) {
    const n = outcomes.length;
    let i = 0;
    while (i < n && outcomes[i] === PROCESSED) i++;
    if (i === n) return { statuses: new Array(n).fill('processed'), failures: [] };
    const statuses = new Array(n);
    const failures = [];
    for (i = 0; i < n; i++) {
      const outcome = outcomes[i];
      statuses[i] = outcome.status;
      if (!outcome.isProcessed) failures.push({ offset: offsetAt(batch, i), reason: outcome.reason });
    }
    return { statuses, failures };
  }

  /**
   * @param {string} topic
   * @param {number} partition
   * @param {number} count
   * @param {Uint8Array} records
   * @returns {[Batch, import('./processor.js').Outcome[] | Promise<import('./processor.js').Outcome[]>]}
   */
  #run(topic, partition, count, records) {
    let batch;
    try {
      batch = new Batch(topic, partition, count, records, this.#headerGate);
    } catch (error) {
      throw new Fault(`ferry-sdk: the host sent a corrupt batch: ${messageOf(error)}`);
    }
    this.#outbox?.begin(batch);
    const outcomes = this.processor().processBatch(batch, new Context(this.#sink));
    if (isThenable(outcomes)) return [batch, outcomes];
    const settled = arrayOf(outcomes);
    this.#outbox?.flush();
    return [batch, settled];
  }

  /**
   * @param {string} topic
   * @param {number} partition
   */
  assigned(topic, partition) {
    this.processor().assigned(new TopicPartition(topic, partition));
  }

  /**
   * @param {string} topic
   * @param {number} partition
   */
  revoked(topic, partition) {
    this.processor().revoked(new TopicPartition(topic, partition));
  }

  /**
   * Runs the self-test on a fresh, configured processor; the error, if any.
   * @returns {string | null}
   */
  selfTest() {
    let processor;
    try {
      processor = new this.#cls();
      processor.configure(new Settings(this.#host.entries()));
    } catch (error) {
      return `ferry-sdk: the processor refused its settings: ${messageOf(error)}`;
    }
    try {
      processor.selfTest();
    } catch (error) {
      return messageOf(error);
    }
    return null;
  }
}

/**
 * The offset of record `i`; -1 past the batch's end.
 * @param {Batch} batch
 * @param {number} i
 */
function offsetAt(batch, i) {
  return i < batch.length ? /** @type {import('./record.js').Record} */ (batch.at(i)).offset : -1n;
}

/**
 * Whether `processBatch` returned a Promise (it is async).
 * @param {unknown} value
 * @returns {value is Promise<unknown>}
 */
function isThenable(value) {
  return value !== null && typeof value === 'object' && typeof (/** @type {any} */ (value).then) === 'function';
}

/**
 * `outcomes`, if `processBatch` returned (or resolved to) an array.
 * @param {unknown} outcomes
 * @returns {import('./processor.js').Outcome[]}
 */
function arrayOf(outcomes) {
  if (!Array.isArray(outcomes)) throw new Fault('processBatch must return an array of outcomes (or a Promise of one)');
  return outcomes;
}

/** @param {unknown} error */
function messageOf(error) {
  return error instanceof Error ? error.message || error.name : String(error);
}
