/**
 * The class a tenant extends, and what a record's handling can end in.
 * @module
 */

import { EmitError, attribute } from './context.js';
import { SettingError } from './settings.js';
import { StateError } from './state.js';

/** @typedef {'processed' | 'retry' | 'reject'} Status */

/** What happened to one record, with the reason for a retry or reject. */
export class Outcome {
  /**
   * @param {Status} status
   * @param {string} [reason]
   */
  constructor(status, reason = '') {
    /** @readonly */
    this.status = status;
    /** @readonly */
    this.reason = reason;
    Object.freeze(this);
  }

  /** Done: the host may commit past this record and publishes its outputs. */
  static processed() {
    return PROCESSED;
  }

  /**
   * Not done, try again later; the record's outputs are dropped.
   * @param {string} reason
   */
  static retry(reason) {
    return new Outcome('retry', reason);
  }

  /**
   * Never going to work: dead-letter or halt by policy; outputs are dropped.
   * @param {string} reason
   */
  static reject(reason) {
    return new Outcome('reject', reason);
  }

  /** True for a processed record. */
  get isProcessed() {
    return this.status === 'processed';
  }

  toString() {
    return this.isProcessed ? 'processed' : `${this.status}: ${this.reason}`;
  }
}

const PROCESSED = new Outcome('processed');

/**
 * Why a record was not processed: throw it from `process`. Throw `Retry` for
 * errors that may pass and `Reject` for records that will never work. Anything
 * else thrown from `process` rejects the record too, with `"Name: message"` as the
 * reason, like the Rust SDK's `?` on any error.
 */
export class ProcessingError extends Error {
  /** Whether the record will be tried again. */
  get transient() {
    return false;
  }

  /** @param {string} reason */
  constructor(reason) {
    super(reason);
    this.name = new.target.name;
    /** The reason, as logged and kept in dead-letter headers. */
    this.reason = reason;
  }
}

/** Try the record again later (the host backs off, then redelivers it). */
export class Retry extends ProcessingError {
  get transient() {
    return true;
  }
}

/** Give up on the record: the host dead-letters it or halts, by policy. */
export class Reject extends ProcessingError {}

/**
 * Abort the whole batch: the component traps, like a panic in a Rust guest. The
 * host throws the instance away and delivers the batch's records again to a fresh
 * one. Running out of stack ("too much recursion") and out of memory are treated
 * the same way: the host contains them as traps in every guest language.
 */
export class Fault extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * The processor used a host interface its project does not declare (`"ferry":
 * {"capabilities": [...]}` in package.json). A bug, so it aborts the batch rather
 * than dead-lettering records.
 */
export class CapabilityError extends Fault {}

/**
 * Whether `error` must abort the batch rather than end one record.
 * @param {unknown} error
 */
export function isFault(error) {
  if (error instanceof Fault) return true;
  // SpiderMonkey (in components): InternalError "too much recursion"; out of
  // memory is thrown as a bare string. V8 (native tests): RangeError for the stack.
  if (typeof error === 'string') return /out of memory/i.test(error);
  if (!(error instanceof Error)) return false;
  return error.name === 'InternalError' || (error instanceof RangeError && /call stack/i.test(error.message)) || /out of memory/i.test(error.message);
}

/**
 * The reason recorded for something thrown that ended a record.
 * @param {unknown} error
 */
export function describe(error) {
  if (error instanceof ProcessingError) return error.reason;
  if (error instanceof Error) {
    if (error instanceof EmitError || error instanceof SettingError || error instanceof StateError) return error.message;
    return error.message ? `${error.name}: ${error.message}` : error.name;
  }
  return String(error);
}

/**
 * Runs `call` and turns what it threw into an outcome (faults propagate).
 * @param {() => unknown} call
 * @returns {Outcome}
 */
export function outcomeOf(call) {
  let result;
  try {
    result = call();
  } catch (error) {
    return outcomeOfError(error);
  }
  checkNotPromise(result);
  return PROCESSED;
}

/**
 * The outcome of a record whose `process` threw `error` (faults propagate).
 * @param {unknown} error
 * @returns {Outcome}
 */
function outcomeOfError(error) {
  if (isFault(error)) throw error;
  if (error instanceof ProcessingError) return new Outcome(error.transient ? 'retry' : 'reject', error.reason);
  return Outcome.reject(describe(error));
}

/**
 * Faults on what an async `process` returns.
 * @param {unknown} result
 */
function checkNotPromise(result) {
  if (result !== null && typeof result === 'object' && typeof (/** @type {any} */ (result).then) === 'function') {
    throw new Fault('process returned a Promise: ferry processors are synchronous (no async process)');
  }
}

/**
 * Runs `call`; anything it throws becomes a `Retry` (faults propagate).
 * @template T
 * @param {() => T} call
 * @returns {T}
 */
export function transient(call) {
  try {
    return call();
  } catch (error) {
    if (isFault(error) || error instanceof ProcessingError) throw error;
    throw new Retry(describe(error));
  }
}

/**
 * Runs `call`; anything it throws becomes a `Reject` with `"context: error"` as
 * the reason (faults propagate).
 * @template T
 * @param {string} context
 * @param {() => T} call
 * @returns {T}
 */
export function rejecting(context, call) {
  try {
    return call();
  } catch (error) {
    if (isFault(error) || error instanceof ProcessingError) throw error;
    throw new Reject(`${context}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/**
 * A stream processor. Extend it, override `process` (or `processBatch`), and
 * export the class with `exportProcessor`.
 *
 * Lifetime and state: a component keeps one instance, constructed with no
 * arguments (at build time: it is part of the pre-initialised snapshot) and
 * `configure`d with the pipeline's settings when the instance first needs it.
 * Fields carry state from batch to batch, but only for the life of one
 * WebAssembly instance: the host replaces it after any trap, when its memory grew
 * too large, on redeploy and on restart, and records not yet committed are
 * delivered again. One instance serves every partition its pipeline owns: keep
 * per-partition state in a `PerPartition` and drop it in `revoked`.
 */
export class Processor {
  /**
   * Handles one record; returning marks it processed. Throw `Retry` or `Reject`
   * (or anything else: reject) otherwise. Outputs emitted through `ctx` belong to
   * this record and are published only if it ends processed.
   * @param {import('./record.js').Record} record
   * @param {import('./context.js').Context} ctx
   * @returns {void}
   */
  process(record, ctx) {
    void record;
    void ctx;
    throw new Error(`${this.constructor.name} implements neither process nor processBatch`);
  }

  /**
   * Handles a batch and returns exactly one outcome per record, in order. The
   * default calls `process` for each record. Override it to work on the whole
   * batch; here outputs belong to the whole batch (published only if every record
   * ends processed) unless emitted inside `ctx.forRecord`. What it throws aborts
   * the batch (the component traps).
   * @param {import('./record.js').Batch} batch
   * @param {import('./context.js').Context} ctx
   * @returns {Outcome[]}
   */
  processBatch(batch, ctx) {
    // `ctx.forRecord` and `outcomeOf` inlined: two closures per record cost more
    // than a passthrough's whole record in an interpreter.
    const records = batch.records();
    const outcomes = new Array(records.length);
    const outer = ctx[attribute](null);
    try {
      for (let i = 0; i < records.length; i++) {
        const record = records[i];
        ctx[attribute](record);
        let result;
        try {
          result = this.process(record, ctx);
        } catch (error) {
          outcomes[i] = outcomeOfError(error);
          continue;
        }
        if (result !== undefined) checkNotPromise(result);
        outcomes[i] = PROCESSED;
      }
    } finally {
      ctx[attribute](outer);
    }
    return outcomes;
  }

  /**
   * Reads the pipeline's settings, once per instance, before anything else runs.
   * Throwing is a configuration problem: the host refuses the deploy (the
   * self-test configures too) and faults batches until it is fixed.
   * @param {import('./settings.js').Settings} settings
   * @returns {void}
   */
  configure(settings) {
    void settings;
  }

  /**
   * A partition's first batch in this instance is coming.
   * @param {import('./record.js').TopicPartition} partition
   * @returns {void}
   */
  assigned(partition) {
    void partition;
  }

  /**
   * A partition moved to another member: forget what was kept for it.
   * @param {import('./record.js').TopicPartition} partition
   * @returns {void}
   */
  revoked(partition) {
    void partition;
  }

  /**
   * A check the host runs on a fresh, configured instance before it switches to a
   * new version; throwing refuses the deploy (the message is the reason).
   * @returns {void}
   */
  selfTest() {}
}

/** @type {(new () => Processor) | null} */
let exported = null;

/**
 * Makes `cls` the component's processor. Call it once, at module level.
 * Natively it only records the class.
 * @template {new () => Processor} C
 * @param {C} cls
 * @returns {C}
 */
export function exportProcessor(cls) {
  if (typeof cls !== 'function' || !(cls.prototype instanceof Processor)) {
    throw new TypeError(`exportProcessor expects a class extending Processor, got ${String(cls)}`);
  }
  if (exported !== null && exported !== cls) {
    throw new Error(`exportProcessor called twice: ${exported.name} and ${cls.name}`);
  }
  exported = cls;
  return cls;
}

/** The class given to `exportProcessor` (throws if there is none). */
export function exportedProcessor() {
  if (exported === null) throw new Error('no processor is exported: call exportProcessor(YourProcessor) in your module');
  return exported;
}
