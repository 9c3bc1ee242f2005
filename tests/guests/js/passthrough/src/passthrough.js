/**
 * Test guest: the JavaScript counterpart of examples/passthrough, the benchmark
 * guest. Every record is processed; nothing is emitted or logged, and it imports
 * no ferry capability, so its cost is the boundary and the SDK itself (the SDK
 * still decodes and checks the whole batch before `processBatch` sees it).
 */

import { Outcome, Processor, exportProcessor } from 'ferry-sdk';

/** Marks every record processed. */
export class Passthrough extends Processor {
  /**
   * @param {import('ferry-sdk').Record} _record
   * @param {import('ferry-sdk').Context} _ctx
   */
  process(_record, _ctx) {}

  /**
   * Answers the whole batch at once without looking at the records.
   * @param {import('ferry-sdk').Batch} batch
   * @param {import('ferry-sdk').Context} _ctx
   */
  processBatch(batch, _ctx) {
    return new Array(batch.length).fill(Outcome.processed());
  }
}

exportProcessor(Passthrough);
