/**
 * The flat batch encoding that carries records across the host/guest boundary.
 *
 * A batch travels as one `list<u8>` so the boundary costs one copy per batch
 * instead of several lists and strings per record. The buffer holds `count`
 * records back to back, all integers little-endian:
 *
 *     offset: i64, timestamp_ms: i64 (i64::MIN when absent),
 *     key_len: u32 (u32::MAX when absent), value_len: u32 (u32::MAX when absent),
 *     header_count: u32,
 *     key bytes, value bytes,
 *     header_count times:
 *         name_len: u32, value_len: u32 (u32::MAX when absent), name bytes (UTF-8), value bytes
 *
 * `index` (and `decode`, built on it) checks every length against the buffer and
 * throws `WireError` (with the Rust SDK's messages) for a corrupt one. Keys and values come out as views into
 * the buffer: nothing is copied. Tenants never need this module.
 * @module
 */

/** Timestamp value that marks "no timestamp". */
export const ABSENT_TIMESTAMP = -(1n << 63n);
/** Length value that marks an absent key, value or header value. */
export const ABSENT_LEN = 0xffff_ffff;
/** Bytes of the fixed part of a record. */
export const RECORD_FIXED_LEN = 8 + 8 + 4 + 4 + 4;
/** Bytes of the fixed part of a header. */
export const HEADER_FIXED_LEN = 4 + 4;

// The fixed fields as [end position, name], to name the one a short buffer cuts.
const RECORD_FIELDS = [[8, 'offset'], [16, 'timestamp'], [20, 'key length'], [24, 'value length'], [28, 'header count']];
const HEADER_FIELDS = [[4, 'header name length'], [8, 'header value length']];

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

/** The buffer is not a valid batch. */
export class WireError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'WireError';
  }
}

/**
 * @param {number} record
 * @param {string} field
 */
function truncated(record, field) {
  return new WireError(`corrupt batch: buffer ends inside the ${field} of record ${record}`);
}

/**
 * @param {number} available
 * @param {Array<[number, string]>} fields
 */
function fixedField(available, fields) {
  return /** @type {[number, string]} */ (fields.find(([end]) => available < end))[1];
}

/**
 * Checks that the buffer holds exactly `count` well-formed records (throws
 * `WireError` otherwise) and returns where each record starts. This is the only
 * pass over the whole batch: a record's fields are read from its start when asked
 * for (`fieldsAt`, `headersAt`).
 * @param {Uint8Array} buf
 * @param {number} count
 * @returns {number[]}
 */
export function index(buf, count) {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const end = buf.byteLength;
  const starts = new Array(count);
  let pos = 0;
  for (let index = 0; index < count; index++) {
    if (end - pos < RECORD_FIXED_LEN) throw truncated(index, fixedField(end - pos, RECORD_FIELDS));
    const keyLen = view.getUint32(pos + 16, true);
    const valueLen = view.getUint32(pos + 20, true);
    const headerCount = view.getUint32(pos + 24, true);
    starts[index] = pos;
    // The common record in as few steps as possible; anything else (headers, or a
    // length past the end) takes the careful path, which names the fault.
    const after = pos + RECORD_FIXED_LEN + (keyLen === ABSENT_LEN ? 0 : keyLen) + (valueLen === ABSENT_LEN ? 0 : valueLen);
    pos = after > end || headerCount !== 0 ? checkRecord(buf, view, pos + RECORD_FIXED_LEN, end, index, keyLen, valueLen, headerCount) : after;
  }
  if (pos !== end) throw new WireError(`corrupt batch: ${end - pos} bytes left after the ${count} records announced`);
  return starts;
}

/**
 * Checks the key, value and headers of record `index` (from `pos`, past its fixed
 * part); returns where the record ends.
 * @param {Uint8Array} buf
 * @param {DataView} view
 * @param {number} pos
 * @param {number} end
 * @param {number} index
 * @param {number} keyLen
 * @param {number} valueLen
 * @param {number} headerCount
 */
function checkRecord(buf, view, pos, end, index, keyLen, valueLen, headerCount) {
  if (keyLen !== ABSENT_LEN) {
    if (end - pos < keyLen) throw truncated(index, 'key');
    pos += keyLen;
  }
  if (valueLen !== ABSENT_LEN) {
    if (end - pos < valueLen) throw truncated(index, 'value');
    pos += valueLen;
  }
  return headerCount === 0 ? pos : checkHeaders(buf, view, pos, end, index, headerCount);
}

/**
 * Checks the headers of record `index` from `pos`; returns where they end.
 * @param {Uint8Array} buf
 * @param {DataView} view
 * @param {number} pos
 * @param {number} end
 * @param {number} index
 * @param {number} headerCount
 */
function checkHeaders(buf, view, pos, end, index, headerCount) {
  for (let h = 0; h < headerCount; h++) {
    if (end - pos < HEADER_FIXED_LEN) throw truncated(index, fixedField(end - pos, HEADER_FIELDS));
    const nameLen = view.getUint32(pos, true);
    const hvalueLen = view.getUint32(pos + 4, true);
    pos += HEADER_FIXED_LEN;
    if (end - pos < nameLen) throw truncated(index, 'header name');
    try {
      utf8.decode(buf.subarray(pos, pos + nameLen));
    } catch {
      throw new WireError(`corrupt batch: name of header ${h} of record ${index} is not UTF-8`);
    }
    pos += nameLen;
    if (hvalueLen !== ABSENT_LEN) {
      if (end - pos < hvalueLen) throw truncated(index, 'header value');
      pos += hvalueLen;
    }
  }
  return pos;
}

/**
 * The headers of a record from `pos` of a buffer `index` checked.
 * @param {Uint8Array} buf
 * @param {DataView} view
 * @param {number} pos
 * @param {number} headerCount
 * @returns {Array<[string, Uint8Array | null]>}
 */
export function headersAt(buf, view, pos, headerCount) {
  /** @type {Array<[string, Uint8Array | null]>} */
  const headers = [];
  for (let h = 0; h < headerCount; h++) {
    const nameLen = view.getUint32(pos, true);
    const hvalueLen = view.getUint32(pos + 4, true);
    pos += HEADER_FIXED_LEN;
    const name = utf8.decode(buf.subarray(pos, pos + nameLen));
    pos += nameLen;
    let hvalue = null;
    if (hvalueLen !== ABSENT_LEN) {
      hvalue = buf.subarray(pos, pos + hvalueLen);
      pos += hvalueLen;
    }
    headers.push([name, hvalue]);
  }
  return headers;
}

/**
 * The record that starts at `start` of a buffer `index` checked.
 * @param {Uint8Array} buf
 * @param {DataView} view
 * @param {number} start
 * @returns {import('./wire.d.ts').RawRecord}
 */
export function fieldsAt(buf, view, start) {
  const timestamp = view.getBigInt64(start + 8, true);
  const keyLen = view.getUint32(start + 16, true);
  const valueLen = view.getUint32(start + 20, true);
  let pos = start + RECORD_FIXED_LEN;
  let key = null;
  if (keyLen !== ABSENT_LEN) {
    key = buf.subarray(pos, pos + keyLen);
    pos += keyLen;
  }
  let value = null;
  if (valueLen !== ABSENT_LEN) {
    value = buf.subarray(pos, pos + valueLen);
    pos += valueLen;
  }
  return {
    offset: view.getBigInt64(start, true),
    timestampMs: timestamp === ABSENT_TIMESTAMP ? null : Number(timestamp),
    key,
    value,
    headers: headersAt(buf, view, pos, view.getUint32(start + 24, true)),
  };
}

/**
 * Decodes and checks `count` records; throws `WireError` unless the buffer holds
 * exactly that.
 * @param {Uint8Array} buf
 * @param {number} count
 * @returns {import('./wire.d.ts').RawRecord[]}
 */
export function decode(buf, count) {
  const starts = index(buf, count);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return starts.map((start) => fieldsAt(buf, view, start));
}

/**
 * @param {Uint8Array | null | undefined} data
 * @param {string} what
 */
function wireLength(data, what) {
  if (data == null) return ABSENT_LEN;
  if (data.byteLength >= ABSENT_LEN) throw new RangeError(`ferry wire: ${what} of ${data.byteLength} bytes does not fit the batch encoding`);
  return data.byteLength;
}

/** Writes records into the flat batch encoding (for tests and tools). */
export class BatchEncoder {
  /** @type {Uint8Array[]} */
  #parts = [];
  #length = 0;
  #count = 0;

  /**
   * Appends one record. Offsets may be numbers or bigints; a timestamp of
   * `null` (or i64::MIN) reads back as `null`.
   * @param {number | bigint} offset
   * @param {number | bigint | null | undefined} timestampMs
   * @param {Uint8Array | null | undefined} key
   * @param {Uint8Array | null | undefined} value
   * @param {Iterable<[string, Uint8Array | null | undefined]>} [headers]
   */
  push(offset, timestampMs, key, value, headers = []) {
    const headerList = [...headers];
    const fixed = new Uint8Array(RECORD_FIXED_LEN);
    const view = new DataView(fixed.buffer);
    view.setBigInt64(0, BigInt(offset), true);
    view.setBigInt64(8, timestampMs == null ? ABSENT_TIMESTAMP : BigInt(timestampMs), true);
    view.setUint32(16, wireLength(key, 'key'), true);
    view.setUint32(20, wireLength(value, 'value'), true);
    view.setUint32(24, headerList.length, true);
    this.#add(fixed);
    if (key != null) this.#add(key);
    if (value != null) this.#add(value);
    for (const [name, hvalue] of headerList) {
      const rawName = encoder.encode(name);
      const header = new Uint8Array(HEADER_FIXED_LEN);
      const hview = new DataView(header.buffer);
      hview.setUint32(0, wireLength(rawName, 'header name'), true);
      hview.setUint32(4, wireLength(hvalue, 'header value'), true);
      this.#add(header);
      this.#add(rawName);
      if (hvalue != null) this.#add(hvalue);
    }
    this.#count += 1;
  }

  /** @param {Uint8Array} part */
  #add(part) {
    this.#parts.push(part.slice());
    this.#length += part.byteLength;
  }

  /** How many records were pushed. */
  get count() {
    return this.#count;
  }

  /** The encoded records, in one new buffer. */
  bytes() {
    const out = new Uint8Array(this.#length);
    let at = 0;
    for (const part of this.#parts) {
      out.set(part, at);
      at += part.byteLength;
    }
    return out;
  }
}
