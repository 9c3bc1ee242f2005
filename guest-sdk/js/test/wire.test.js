// The flat batch encoding: layout, absent vs empty, and corrupt buffers.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ABSENT_LEN, BatchEncoder, RECORD_FIXED_LEN, WireError, decode } from '../src/wire.js';

const bytes = (/** @type {string} */ text) => new TextEncoder().encode(text);

/** @param {Array<[number, bigint | number]>} fields [size in bytes, value] */
function pack(fields) {
  const out = new Uint8Array(fields.reduce((n, [size]) => n + size, 0));
  const view = new DataView(out.buffer);
  let at = 0;
  for (const [size, value] of fields) {
    if (size === 8) view.setBigInt64(at, BigInt(value), true);
    else view.setUint32(at, Number(value), true);
    at += size;
  }
  return out;
}

const concat = (/** @type {Uint8Array[]} */ ...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
};

test('layout is as documented', () => {
  const encoder = new BatchEncoder();
  encoder.push(5, null, bytes('ab'), null, [['h', bytes('xyz')], ['n', null]]);
  const expected = concat(
    pack([[8, 5], [8, -(1n << 63n)], [4, 2], [4, ABSENT_LEN], [4, 2]]),
    bytes('ab'),
    pack([[4, 1], [4, 3]]),
    bytes('hxyz'),
    pack([[4, 1], [4, ABSENT_LEN]]),
    bytes('n'),
  );
  assert.deepEqual(encoder.bytes(), expected);
  assert.equal(encoder.count, 1);
});

test('empty and absent are distinct', () => {
  const encoder = new BatchEncoder();
  encoder.push(0, 0, bytes(''), bytes(''), [['', bytes('')]]);
  encoder.push(1n, null, null, null, [['', null]]);
  const [first, second] = decode(encoder.bytes(), 2);
  assert.equal(first.offset, 0n);
  assert.equal(first.timestampMs, 0);
  assert.deepEqual([first.key?.length, first.value?.length, first.headers[0][1]?.length], [0, 0, 0]);
  assert.deepEqual([second.timestampMs, second.key, second.value, second.headers], [null, null, null, [['', null]]]);
});

test('values are views into the buffer, not copies', () => {
  const encoder = new BatchEncoder();
  encoder.push(1, null, bytes('k'), bytes('value'), []);
  const buf = encoder.bytes();
  const [record] = decode(buf, 1);
  assert.equal(record.value?.buffer, buf.buffer);
});

test('empty batch and trailing bytes', () => {
  assert.deepEqual(decode(new Uint8Array(0), 0), []);
  assert.throws(() => decode(new Uint8Array(0), 1), { message: 'corrupt batch: buffer ends inside the offset of record 0' });
  const encoder = new BatchEncoder();
  encoder.push(1, null, null, null);
  encoder.push(2, null, null, null);
  assert.throws(() => decode(encoder.bytes(), 1), {
    name: 'WireError',
    message: `corrupt batch: ${RECORD_FIXED_LEN} bytes left after the 1 records announced`,
  });
});

test('huge lengths are truncation', () => {
  assert.throws(() => decode(pack([[8, 1], [8, 1], [4, ABSENT_LEN - 1], [4, 0], [4, 0]]), 1), /inside the key of record 0/);
  const encoder = new BatchEncoder();
  encoder.push(1, null, null, null);
  const buf = encoder.bytes();
  new DataView(buf.buffer).setUint32(24, ABSENT_LEN, true);
  assert.throws(() => decode(buf, 1), /inside the header name length of record 0/);
});

test('bad header names are reported', () => {
  const encoder = new BatchEncoder();
  encoder.push(1, null, null, null);
  encoder.push(2, null, null, null, [['ok', null], ['é', null]]);
  const buf = encoder.bytes();
  buf[buf.length - 1] = 0xff;
  assert.throws(() => decode(buf, 2), { message: 'corrupt batch: name of header 1 of record 1 is not UTF-8' });
});

/** A small deterministic PRNG, so failures reproduce. */
function rng(seed) {
  let state = seed >>> 0;
  return (/** @type {number} */ n) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % n;
  };
}

test('roundtrip, and every truncation fails', () => {
  const next = rng(7);
  const data = () => (next(5) === 0 ? null : Uint8Array.from({ length: next(40) }, () => next(256)));
  for (let round = 0; round < 200; round++) {
    const records = Array.from({ length: next(6) }, () => ({
      offset: BigInt(next(1 << 30)) * (next(2) ? 1n : -1n),
      timestampMs: next(3) === 0 ? null : next(1 << 30),
      key: data(),
      value: data(),
      headers: Array.from({ length: next(4) }, () => [['a', 'bc', 'é✓', ''][next(4)], data()]),
    }));
    const encoder = new BatchEncoder();
    for (const r of records) encoder.push(r.offset, r.timestampMs, r.key, r.value, /** @type {any} */ (r.headers));
    const buf = encoder.bytes();
    assert.deepEqual(decode(buf, records.length), records);
    if (buf.length > 0) assert.throws(() => decode(buf.subarray(0, next(buf.length)), records.length), WireError);
  }
});

test('garbage only ever throws WireError', () => {
  const next = rng(11);
  for (let i = 0; i < 500; i++) {
    const buf = Uint8Array.from({ length: next(120) }, () => next(256));
    try {
      decode(buf, next(5));
    } catch (error) {
      assert.ok(error instanceof WireError, String(error));
    }
  }
});
