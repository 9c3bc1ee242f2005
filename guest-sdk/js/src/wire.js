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
 * `decode` checks every length against the buffer and throws `WireError` (with the
 * Rust SDK's messages) for a corrupt one. Keys and values come out as views into
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
 * Decodes and checks `count` records; throws `WireError` unless the buffer holds
 * exactly that.
 * @param {Uint8Array} buf
 * @param {number} count
 * @returns {import('./wire.d.ts').RawRecord[]}
 */
export function decode(buf, count) {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const end = buf.byteLength;
  let pos = 0;
  const records = [];
  for (let index = 0; index < count; index++) {
    if (end - pos < RECORD_FIXED_LEN) throw truncated(index, fixedField(end - pos, RECORD_FIELDS));
    const offset = view.getBigInt64(pos, true);
    const timestamp = view.getBigInt64(pos + 8, true);
    const keyLen = view.getUint32(pos + 16, true);
    const valueLen = view.getUint32(pos + 20, true);
    const headerCount = view.getUint32(pos + 24, true);
    pos += RECORD_FIXED_LEN;
    let key = null;
    if (keyLen !== ABSENT_LEN) {
      if (end - pos < keyLen) throw truncated(index, 'key');
      key = buf.subarray(pos, pos + keyLen);
      pos += keyLen;
    }
    let value = null;
    if (valueLen !== ABSENT_LEN) {
      if (end - pos < valueLen) throw truncated(index, 'value');
      value = buf.subarray(pos, pos + valueLen);
      pos += valueLen;
    }
    /** @type {Array<[string, Uint8Array | null]>} */
    const headers = [];
    for (let h = 0; h < headerCount; h++) {
      if (end - pos < HEADER_FIXED_LEN) throw truncated(index, fixedField(end - pos, HEADER_FIELDS));
      const nameLen = view.getUint32(pos, true);
      const hvalueLen = view.getUint32(pos + 4, true);
      pos += HEADER_FIXED_LEN;
      if (end - pos < nameLen) throw truncated(index, 'header name');
      let name;
      try {
        name = utf8.decode(buf.subarray(pos, pos + nameLen));
      } catch {
        throw new WireError(`corrupt batch: name of header ${h} of record ${index} is not UTF-8`);
      }
      pos += nameLen;
      let hvalue = null;
      if (hvalueLen !== ABSENT_LEN) {
        if (end - pos < hvalueLen) throw truncated(index, 'header value');
        hvalue = buf.subarray(pos, pos + hvalueLen);
        pos += hvalueLen;
      }
      headers.push([name, hvalue]);
    }
    records.push({
      offset,
      timestampMs: timestamp === ABSENT_TIMESTAMP ? null : Number(timestamp),
      key,
      value,
      headers,
    });
  }
  if (pos !== end) throw new WireError(`corrupt batch: ${end - pos} bytes left after the ${count} records announced`);
  return records;
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
