/**
 * A call's outputs, handed to the host many at a time.
 *
 * Each call into the host costs far more inside the generated bindings than an
 * output's own bytes do, so the SDK does not call `emit` per output. It asks the
 * host once per call what `emit` would allow (`output.limits`), checks each output
 * the moment the tenant emits it, exactly as the host checks one, and throws the
 * same `EmitError` the host would have returned. Accepted outputs are encoded into
 * one buffer and handed over with `output.emit-many` when the call ends (or when the
 * buffer reaches `FLUSH_BYTES`), in the order they were emitted, each still tied to
 * its record. The host checks every one again; a refusal there means the SDK and
 * the host disagree, and the call faults (its outputs are all dropped and the batch
 * is delivered again), never a silent loss.
 * @module
 */

import { OverBudget, TooLarge, TooMany, TopicNotAllowed, UnknownSource } from './context.js';
import { Fault } from './processor.js';
import { ABSENT_LEN } from './wire.js';

/** A buffer is handed over once it holds this many bytes, which bounds the memory buffering adds to a guest. */
export const FLUSH_BYTES = 1 << 20;

/** `source` of an output of the whole batch. */
export const WHOLE_BATCH = -(1n << 63n);

const utf8 = new TextEncoder();

/**
 * The host's `output-limits`: its bounds and what the batch used of them.
 * @typedef {{topics: Set<string>, maxRecords: number, recordsUsed: number, maxRecordBytes: number, batchBytes: number, bytesUsed: number, recordCost: number, headerCost: number}} OutputLimits
 */

/**
 * The topic as the host reports it: at most 200 characters, control characters
 * (but tabs) replaced.
 * @param {string} topic
 */
function sanitized(topic) {
  const chars = Array.from(topic);
  // eslint-disable-next-line no-control-regex
  const out = chars.slice(0, 200).join('').replace(/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g, '\ufffd');
  return chars.length > 200 ? `${out}…[truncated]` : out;
}

/** The outputs of one call: checked on emit, buffered, handed over in one go. */
export class Outbox {
  #limitsOf;
  #send;
  /** @type {import('./record.js').Batch | null} */
  #batch = null;
  /** @type {Set<bigint> | null} */
  #offsets = null;
  /** @type {OutputLimits | null} */
  #limits = null;
  /** @type {Map<string, Uint8Array>} the granted topics, each with its UTF-8 (encoded once, not per output) */
  #topics = new Map();
  #records = 0;
  #bytes = 0;
  #buf = new Uint8Array(4096);
  #view = new DataView(this.#buf.buffer);
  #len = 0;

  /**
   * @param {() => OutputLimits} limitsOf
   * @param {(outputs: Uint8Array) => [number, Error] | null} send the index of the first output refused, and why
   */
  constructor(limitsOf, send) {
    this.#limitsOf = limitsOf;
    this.#send = send;
  }

  /**
   * Starts a call over `batch`: the host's limits are asked again on its first
   * emit (the batch may have used some of them in an earlier call).
   * @param {import('./record.js').Batch} batch
   */
  begin(batch) {
    this.#batch = batch;
    this.#offsets = null;
    this.#limits = null;
    this.#len = 0;
  }

  /** @param {number} more */
  #reserve(more) {
    const needed = this.#len + more;
    if (needed <= this.#buf.byteLength) return;
    let size = this.#buf.byteLength * 2;
    while (size < needed) size *= 2;
    const buf = new Uint8Array(size);
    buf.set(this.#buf.subarray(0, this.#len));
    this.#buf = buf;
    this.#view = new DataView(buf.buffer);
  }

  /** @param {Uint8Array} bytes */
  #put(bytes) {
    this.#buf.set(bytes, this.#len);
    this.#len += bytes.byteLength;
  }

  /**
   * Checks `output` as the host would and buffers it; throws the host's
   * `EmitError` if it would refuse it.
   * @param {bigint | null} source
   * @param {import('./context.js').WireOutput} output
   */
  emit(source, output) {
    let limits = this.#limits;
    if (limits === null) {
      limits = this.#limits = this.#limitsOf();
      this.#records = limits.recordsUsed;
      this.#bytes = limits.bytesUsed;
      if (this.#topics.size !== limits.topics.size || ![...limits.topics].every((t) => this.#topics.has(t))) {
        this.#topics = new Map([...limits.topics].map((t) => [t, utf8.encode(t)]));
      }
    }
    const topic = output.topic;
    const topicBytes = this.#topics.get(topic);
    if (topicBytes === undefined) throw new TopicNotAllowed(sanitized(topic));
    if (source !== null) {
      let offsets = this.#offsets;
      if (offsets === null) {
        const batch = /** @type {import('./record.js').Batch} */ (this.#batch);
        offsets = new Set();
        for (const record of batch) offsets.add(record.offset);
        this.#offsets = offsets;
      }
      if (!offsets.has(source)) throw new UnknownSource(source);
    }
    if (this.#records >= limits.maxRecords) throw new TooMany();
    const { key, value, headers } = output;
    const keyLen = key === null ? 0 : key.byteLength;
    const valueLen = value === null ? 0 : value.byteLength;
    // The host's order: the key and value, and the fixed costs, before headers.
    let charged = limits.recordCost + topicBytes.byteLength + keyLen + valueLen + limits.headerCost * headers.length;
    let size = keyLen + valueLen;
    if (size > limits.maxRecordBytes) throw new TooLarge(limits.maxRecordBytes);
    if (this.#bytes + charged > limits.batchBytes) throw new OverBudget(limits.batchBytes);
    /** @type {Array<[Uint8Array, Uint8Array | null]>} */
    const encoded = [];
    if (headers.length > 0) {
      for (const [name, headerValue] of headers) {
        const nameBytes = utf8.encode(name);
        encoded.push([nameBytes, headerValue]);
        size += nameBytes.byteLength + (headerValue === null ? 0 : headerValue.byteLength);
      }
      charged += size - keyLen - valueLen;
      if (size > limits.maxRecordBytes) throw new TooLarge(limits.maxRecordBytes);
      if (this.#bytes + charged > limits.batchBytes) throw new OverBudget(limits.batchBytes);
    }
    this.#reserve(24 + topicBytes.byteLength + size + 8 * encoded.length);
    const view = this.#view;
    let at = this.#len;
    view.setBigInt64(at, source === null ? WHOLE_BATCH : source, true);
    view.setUint32(at + 8, topicBytes.byteLength, true);
    view.setUint32(at + 12, key === null ? ABSENT_LEN : keyLen, true);
    view.setUint32(at + 16, value === null ? ABSENT_LEN : valueLen, true);
    view.setUint32(at + 20, headers.length, true);
    this.#len = at + 24;
    this.#put(topicBytes);
    if (key !== null) this.#put(key);
    if (value !== null) this.#put(value);
    for (const [nameBytes, headerValue] of encoded) {
      at = this.#len;
      view.setUint32(at, nameBytes.byteLength, true);
      view.setUint32(at + 4, headerValue === null ? ABSENT_LEN : headerValue.byteLength, true);
      this.#len = at + 8;
      this.#put(nameBytes);
      if (headerValue !== null) this.#put(headerValue);
    }
    this.#records += 1;
    this.#bytes += charged;
    if (this.#len >= FLUSH_BYTES) this.flush();
  }

  /** Hands the buffered outputs to the host. */
  flush() {
    if (this.#len === 0) return;
    const refused = this.#send(this.#buf.subarray(0, this.#len));
    this.#len = 0;
    if (refused !== null) {
      const [index, error] = refused;
      throw new Fault(`ferry-sdk: the host refused an output the SDK had accepted (output ${index}): ${error.message}`);
    }
  }
}
