/**
 * A ferry processor: forwards each record's value, upper-cased, to the topic the
 * pipeline sets as `output_topic`, keyed like the input. Replace it with yours.
 */

import { Processor, Reject, exportProcessor } from 'ferry-sdk';

/** Upper-cases values. */
export class Upper extends Processor {
  outputTopic = '';

  /** @param {import('ferry-sdk').Settings} settings */
  configure(settings) {
    // Missing: "setting `output_topic` is required but the pipeline does not set it".
    this.outputTopic = settings.require('output_topic');
  }

  /**
   * @param {import('ferry-sdk').Record} record
   * @param {import('ferry-sdk').Context} ctx
   */
  process(record, ctx) {
    const text = record.valueText();
    if (text === null) throw new Reject('tombstones are not supported');
    ctx.debug(`offset ${record.offset}`);
    if (record.key === null) ctx.emitValue(this.outputTopic, text.toUpperCase());
    else ctx.emitKv(this.outputTopic, record.key, text.toUpperCase());
  }
}

exportProcessor(Upper);
