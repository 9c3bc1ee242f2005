/**
 * Adapts the bindings componentize-js generates to `Guest`. Only the entry module
 * the build script writes imports this: it passes the `ferry:processor/*`
 * interfaces the project declares (the others are absent from its world, so
 * their capabilities are refused) and exports what this returns as `handler`.
 * @module
 */

import { EmitError, OverBudget, TooLarge, TooMany, TopicNotAllowed, UnknownSource } from './context.js';
import { Guest } from './guest.js';
import { exportedProcessor } from './processor.js';
import { KeyTooLarge, PartitionFull, StateError, TooManyWrites, ValueTooLarge } from './state.js';

/**
 * The host's refusal, from the error a failed import call throws (`payload` is
 * the WIT `emit-error` variant).
 * @param {unknown} error
 */
function emitError(error) {
  const payload = /** @type {{tag?: string, val?: any} | undefined} */ (/** @type {any} */ (error)?.payload);
  switch (payload?.tag) {
    case 'topic-not-allowed':
      return new TopicNotAllowed(payload.val);
    case 'too-large':
      return new TooLarge(Number(payload.val));
    case 'too-many':
      return new TooMany();
    case 'over-budget':
      return new OverBudget(Number(payload.val));
    case 'unknown-source':
      return new UnknownSource(BigInt(payload.val));
    default:
      return new EmitError(`the host refused the output: ${String(error)}`);
  }
}

/**
 * The host's refusal of a state write (`payload` is the WIT `state-error` variant).
 * @param {unknown} error
 */
function stateError(error) {
  const payload = /** @type {{tag?: string, val?: any} | undefined} */ (/** @type {any} */ (error)?.payload);
  switch (payload?.tag) {
    case 'key-too-large':
      return new KeyTooLarge(Number(payload.val));
    case 'value-too-large':
      return new ValueTooLarge(Number(payload.val));
    case 'partition-full':
      return new PartitionFull(Number(payload.val));
    case 'too-many-writes':
      return new TooManyWrites(Number(payload.val));
    default:
      return new StateError(`the host refused the state write: ${String(error)}`);
  }
}

/**
 * The `state` import as a `Store`, its refusals thrown as `StateError`.
 * @param {any} state
 * @returns {import('./state.js').Store}
 */
function hostStore(state) {
  return {
    get: (key) => state.get(key) ?? null,
    put(key, value) {
      try {
        state.put(key, value);
      } catch (error) {
        throw stateError(error);
      }
    },
    delete(key) {
      try {
        state.delete(key);
      } catch (error) {
        throw stateError(error);
      }
    },
    scan: (prefix, limit) => state.scan(prefix, limit),
  };
}

/**
 * The `handler` export for the processor given to `exportProcessor`.
 * @param {{settings: any, output?: any, log?: any, headers?: any, state?: any}} bindings
 */
export function makeHandler({ settings, output, log, headers, state }) {
  const guest = new Guest(exportedProcessor(), {
    entries: () => settings.entries(),
    emit: output
      ? (source, out) => {
          const record = {
            topic: out.topic,
            key: out.key ?? undefined,
            value: out.value ?? undefined,
            headers: out.headers.length === 0 ? [] : out.headers.map(([name, value]) => ({ name, value: value ?? undefined })),
          };
          try {
            output.emit(source ?? undefined, record);
          } catch (error) {
            throw emitError(error);
          }
        }
      : null,
    outputLimits:
      output && typeof output.limits === 'function'
        ? () => {
            const limits = output.limits();
            return {
              topics: new Set(limits.topics),
              maxRecords: Number(limits.maxRecords),
              recordsUsed: Number(limits.recordsUsed),
              maxRecordBytes: Number(limits.maxRecordBytes),
              batchBytes: Number(limits.batchBytes),
              bytesUsed: Number(limits.bytesUsed),
              recordCost: Number(limits.recordCost),
              headerCost: Number(limits.headerCost),
            };
          }
        : null,
    emitMany:
      output && typeof output.emitMany === 'function'
        ? (outputs) => {
            try {
              output.emitMany(outputs);
              return null;
            } catch (error) {
              // The `err` is a tuple: the index of the refused output and why.
              const payload = /** @type {any} */ (error)?.payload;
              if (!Array.isArray(payload)) throw error;
              return [Number(payload[0]), emitError({ payload: payload[1] })];
            }
          }
        : null,
    log: log ? (level, message) => log.log(level, message) : null,
    headersEnabled: headers ? () => headers.enabled() : null,
    state: state ? hostStore(state) : null,
  });

  return {
    /** @param {{topic: string, partition: number, count: number, records: Uint8Array}} batch */
    process(batch) {
      return guest.reply(batch.topic, batch.partition, batch.count, batch.records);
    },
    /** @param {{topic: string, partition: number}} partition */
    assigned(partition) {
      guest.assigned(partition.topic, partition.partition);
    },
    /** @param {{topic: string, partition: number}} partition */
    revoked(partition) {
      guest.revoked(partition.topic, partition.partition);
    },
    selfTest() {
      const error = guest.selfTest();
      // componentize-js turns a thrown value into the `err` of result<_, string>.
      if (error !== null) throw error;
    },
  };
}
