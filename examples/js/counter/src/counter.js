/**
 * A stateful processor: counts records per key in the host's keyed state and
 * emits each record's running count, as the Rust example in examples/counter does.
 *
 * The counts live in `ctx.state()`, the state of the record's input partition,
 * which the host keeps in a changelog topic and restores when the partition is
 * assigned: they survive traps, recycles, redeploys, restarts and rebalances. Each
 * count is stored as the Rust SDK's `put_u64` stores it, so this processor and the
 * Rust one can take over each other's state.
 */

import { Processor, exportProcessor, transient } from 'ferry-sdk';

/** Where counts go unless the pipeline's `output_topic` setting says otherwise. */
export const OUTPUT_TOPIC = 'counts';

/**
 * For each keyed record, emits (key, running count as decimal text); records
 * without a key are passed over. A write refused by a state limit rejects the
 * record (it would not fit on a retry either); a refused emit retries it.
 */
export class Counter extends Processor {
  outputTopic = OUTPUT_TOPIC;

  /** @param {import('ferry-sdk').Settings} settings */
  configure(settings) {
    this.outputTopic = settings.get('output_topic') || OUTPUT_TOPIC;
  }

  /**
   * @param {import('ferry-sdk').Record} record
   * @param {import('ferry-sdk').Context} ctx
   */
  process(record, ctx) {
    const key = record.key;
    if (key === null) return;
    const state = ctx.state();
    const count = (state.getU64(key) ?? 0n) + 1n;
    state.putU64(key, count);
    transient(() => ctx.emitKv(this.outputTopic, key, String(count)));
  }
}

exportProcessor(Counter);
