/**
 * Orders enriched with their customer, looked up with `fetch`: the JavaScript
 * form of examples/enrich, with the same outcomes.
 *
 * Input values are JSON orders naming a customer:
 *
 *     {"id":"o-1","customer":"c-7","amount_cents":12345}
 *
 * For each order the processor fetches `<customers_url>/customers/<customer>` (the
 * setting `customers_url`; the pipeline's `[pipeline.http]` must allow it) and
 * emits the order with the customer's JSON attached to `enriched-orders` (the
 * setting `output_topic`), keyed by customer:
 *
 *     {"order":{"id":"o-1","customer":"c-7","amount_cents":12345},"customer":{"id":"c-7","tier":"gold"}}
 *
 * `processBatch` is async: it starts the batch's lookups at once, awaits them all
 * (the host runs them within the pipeline's `concurrent_requests`), then ends each
 * record on its own answer:
 *
 * | answer | outcome |
 * | --- | --- |
 * | 200 with a JSON body | processed, one record emitted |
 * | 404 | reject: there is no such customer |
 * | 429 or 5xx, a failed fetch (refused, timeout, over budget, connection) | retry, with the pipeline's backoff |
 * | any other status, a body that is not JSON | reject |
 * | an order that is not JSON or names no customer | reject, no request |
 *
 * `fetch` reports every failure as a `TypeError`, so a refused URL is retried
 * here (unlike the Rust and Python forms, which can tell it from a timeout): the
 * pipeline's `max_attempts` ends it in the dead-letter topic.
 */

import { Fault, Outcome, ProcessingError, Processor, Reject, Retry, exportProcessor } from 'ferry-sdk';

/** Where enriched orders go unless the setting `output_topic` says otherwise. */
export const OUTPUT_TOPIC = 'enriched-orders';
/** The customers service unless the setting `customers_url` says otherwise. */
export const CUSTOMERS_URL = 'http://127.0.0.1:8089';

const CUSTOMER_ID = /^[A-Za-z0-9_-]+$/;

/**
 * The order as JSON, its customer, and the URL of its lookup (throws `Reject` for
 * an order no lookup can help).
 * @param {string} customersUrl
 * @param {Uint8Array | null} value
 */
export function lookup(customersUrl, value) {
  if (value === null) throw new Reject('the record has no value');
  let order;
  try {
    order = JSON.parse(new TextDecoder().decode(value));
  } catch (error) {
    throw new Reject(`malformed order: ${/** @type {Error} */ (error).message}`);
  }
  const customer = order !== null && typeof order === 'object' ? order.customer : undefined;
  if (typeof customer !== 'string') throw new Reject('the order names no customer');
  if (!CUSTOMER_ID.test(customer)) throw new Reject(`\`${customer}\` is not a customer id`);
  return { order, customer, url: `${customersUrl}/customers/${customer}` };
}

/**
 * Fetches `url` and reads the whole answer; a failed request is the answer (a
 * fault, such as using a capability the project does not declare, is thrown).
 * @param {string} url
 * @returns {Promise<{status: number, body: string} | {error: unknown}>}
 */
async function fetchWhole(url) {
  try {
    const response = await fetch(url, { headers: { accept: 'application/json' } });
    return { status: response.status, body: await response.text() };
  } catch (error) {
    if (error instanceof Fault) throw error;
    return { error };
  }
}

/**
 * What the answer to a lookup means for its record: the customer, or why not.
 * @param {string} customer
 * @param {{status: number, body: string} | {error: unknown}} answer
 */
export function customerOf(customer, answer) {
  if ('error' in answer) {
    const error = /** @type {any} */ (answer.error);
    throw new Retry(`customer ${customer}: the lookup failed: ${error?.message ?? String(error)}`);
  }
  const { status, body } = answer;
  if (status === 200) {
    try {
      return JSON.parse(body);
    } catch (error) {
      throw new Reject(`customer ${customer}: the service's answer is not JSON: ${/** @type {Error} */ (error).message}`);
    }
  }
  if (status === 404) throw new Reject(`no customer ${customer}`);
  if (status === 429 || (status >= 500 && status <= 599)) throw new Retry(`customer ${customer}: the service answered ${status}`);
  throw new Reject(`customer ${customer}: the service answered ${status}`);
}

/**
 * The outcome of `call`: processed, or what it threw (a refused emit rejects: it
 * will be refused again; faults abort the batch).
 * @param {() => void} call
 */
function settle(call) {
  try {
    call();
    return Outcome.processed();
  } catch (error) {
    if (error instanceof Fault) throw error;
    if (error instanceof ProcessingError) return error.transient ? Outcome.retry(error.reason) : Outcome.reject(error.reason);
    return Outcome.reject(error instanceof Error ? error.message : String(error));
  }
}

/** Attaches each order's customer. */
export class Enrich extends Processor {
  customersUrl = CUSTOMERS_URL;
  outputTopic = OUTPUT_TOPIC;

  /** @param {import('ferry-sdk').Settings} settings */
  configure(settings) {
    const url = settings.get('customers_url');
    if (url !== undefined) {
      if (!url.startsWith('http://') && !url.startsWith('https://')) {
        throw new Error(`customers_url \`${url}\` is not an http:// or https:// URL`);
      }
      this.customersUrl = url.replace(/\/+$/, '');
    }
    this.outputTopic = settings.get('output_topic') ?? this.outputTopic;
  }

  /**
   * The batch's lookups at once; each record ends on its own answer.
   * @param {import('ferry-sdk').Batch} batch
   * @param {import('ferry-sdk').Context} ctx
   */
  async processBatch(batch, ctx) {
    const records = batch.records();
    const prepared = records.map((record) => {
      try {
        return lookup(this.customersUrl, record.value);
      } catch (error) {
        return /** @type {Reject} */ (error);
      }
    });
    const answers = await Promise.all(prepared.map((p) => (p instanceof Reject ? null : fetchWhole(p.url))));
    return records.map((record, i) => {
      const p = prepared[i];
      const answer = answers[i];
      if (p instanceof Reject || answer === null) return Outcome.reject(/** @type {Reject} */ (p).reason);
      return ctx.forRecord(record, (c) =>
        settle(() => c.emitKv(this.outputTopic, p.customer, JSON.stringify({ order: p.order, customer: customerOf(p.customer, answer) }))),
      );
    });
  }
}

exportProcessor(Enrich);
