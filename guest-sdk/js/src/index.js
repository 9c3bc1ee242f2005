/**
 * Write ferry stream processors in JavaScript (types in index.d.ts).
 *
 * A processor receives batches of Kafka records from one topic-partition and
 * answers one outcome per record; the host commits an input offset only once that
 * record and every record before it is finished. Extend `Processor`, export it
 * with `exportProcessor`, and build the project into a component with
 * `node guest-sdk/js/build.mjs <project> <out.wasm>`:
 *
 *     import { Processor, Reject, exportProcessor } from 'ferry-sdk';
 *
 *     class Shout extends Processor {
 *       process(record, ctx) {
 *         const text = record.valueText();
 *         if (text === null) throw new Reject('tombstones are not supported');
 *         ctx.emitValue('shouted', text.toUpperCase());
 *       }
 *     }
 *     exportProcessor(Shout);
 *
 * Natively the same code runs under `node --test` with `ferry-sdk/testing`.
 * @module
 */

export { Context, EmitError, Level, OverBudget, TooLarge, TooMany, TopicNotAllowed, UnknownSource } from './context.js';
export { PerPartition } from './partition.js';
export {
  CapabilityError,
  Fault,
  Outcome,
  ProcessingError,
  Processor,
  Reject,
  Retry,
  exportProcessor,
  rejecting,
  transient,
} from './processor.js';
export { Batch, Record, TopicPartition } from './record.js';
export { SettingError, Settings, parsers } from './settings.js';
export { KeyTooLarge, PartitionFull, State, StateError, TooManyWrites, ValueTooLarge } from './state.js';
export * as limits from './limits.js';
