/**
 * The seed scenario: turn orders into sales-agent commissions.
 *
 * Input values are JSON orders:
 *
 *     {"id":"o-1","agent":"alice","amount_cents":12345}
 *
 * For each order the processor emits a commission of 5 % (rounded half up, in
 * cents) to the topic `commissions` (the pipeline setting `output_topic` changes
 * it), keyed by agent:
 *
 *     {"order_id":"o-1","agent":"alice","amount_cents":12345,"commission_cents":617}
 *
 * A record that can never become a commission (no value, malformed JSON, a missing
 * field, a negative amount) is rejected, and so is one whose commission the host
 * refused to take. The same behaviour as the Rust example in examples/orders.
 */

import { Processor, Reject, exportProcessor } from 'ferry-sdk';

/** Where commissions go unless the pipeline sets `output_topic`. */
export const OUTPUT_TOPIC = 'commissions';
/** Commission rate in percent. */
export const COMMISSION_PERCENT = 5n;

/**
 * `amountCents` × 5 %, rounded half up, for a non-negative amount. In BigInt, so
 * no float rounding creeps in near 2^53.
 * @param {number} amountCents
 */
export function commissionCents(amountCents) {
  return Number((BigInt(amountCents) * COMMISSION_PERCENT + 50n) / 100n);
}

/**
 * @param {Record<string, unknown>} order
 * @param {string} field
 */
function text(order, field) {
  const value = order[field];
  if (typeof value !== 'string') throw new Error(`\`${field}\` must be a string, not ${JSON.stringify(value)}`);
  // With the `u` flag a pair matches as one code point: this finds lone halves.
  if (/[\uD800-\uDFFF]/u.test(value)) throw new Error(`\`${field}\` holds a lone surrogate`);
  return value;
}

/**
 * Parses and checks an order; throws `Reject` with the reason.
 * @param {import('ferry-sdk').Record} record
 * @returns {{id: string, agent: string, amountCents: number}}
 */
export function parseOrder(record) {
  if (record.value === null) throw new Reject('record has no value');
  let order;
  try {
    const fields = JSON.parse(/** @type {string} */ (record.valueText()));
    if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) throw new Error('expected a JSON object');
    for (const field of ['id', 'agent', 'amount_cents']) {
      if (!(field in fields)) throw new Error(`missing field \`${field}\``);
    }
    const amount = fields.amount_cents;
    // JSON numbers are doubles here: integers past 2^53 are refused, not rounded.
    if (!Number.isSafeInteger(amount)) throw new Error(`\`amount_cents\` must be an integer below 2^53, not ${JSON.stringify(amount)}`);
    order = { id: text(fields, 'id'), agent: text(fields, 'agent'), amountCents: amount };
  } catch (error) {
    throw new Reject(`malformed order: ${/** @type {Error} */ (error).message}`);
  }
  if (order.amountCents < 0) throw new Reject(`order ${order.id} has a negative amount_cents (${order.amountCents})`);
  return order;
}

/**
 * The commission record, with the Rust example's field order and spacing.
 * @param {{id: string, agent: string, amountCents: number}} order
 */
export function commissionJson(order) {
  return JSON.stringify({
    order_id: order.id,
    agent: order.agent,
    amount_cents: order.amountCents,
    commission_cents: commissionCents(order.amountCents),
  });
}

/** Turns orders into commissions. */
export class Orders extends Processor {
  outputTopic = OUTPUT_TOPIC;

  /** @param {import('ferry-sdk').Settings} settings */
  configure(settings) {
    this.outputTopic = settings.get('output_topic') ?? OUTPUT_TOPIC;
  }

  /**
   * @param {import('ferry-sdk').Record} record
   * @param {import('ferry-sdk').Context} ctx
   */
  process(record, ctx) {
    const order = parseOrder(record);
    // A refused emit throws EmitError, which rejects the record.
    ctx.emitKv(this.outputTopic, order.agent, commissionJson(order));
  }
}

exportProcessor(Orders);
