#!/usr/bin/env node
/**
 * A stand-in ferry host in Node, for smoke-testing built components without the
 * Rust host: transpiles the component with jco, links WASI through
 * @bytecodealliance/preview2-shim and the ferry:processor imports to an in-memory
 * host with the real host's default emit checks, and runs a scenario.
 *
 *     node tools/run-component.mjs <component.wasm> < scenario.json
 *
 * The scenario (JSON on stdin):
 *
 *     { "settings": [["output_topic", "payouts"]],   // optional
 *       "allowTopics": ["commissions"],               // optional; default: none
 *       "steps": [ {"selfTest": true},
 *                  {"assigned": ["orders", 0]},
 *                  {"process": {"topic": "orders", "partition": 0, "firstOffset": 40,
 *                               "records": [{"key": "k", "value": "v", "headers": [["h", "x"]]}]}},
 *                  {"revoked": ["orders", 0]} ] }
 *
 * It prints one JSON result per step. A step that traps reports `{"trap": ...}`
 * and, as on the real host, later steps run on a fresh instance. Timing and
 * resource limits are not enforced: do not send it `loop`, `oom` or `sleep`.
 * Node 20 needs --experimental-wasm-extended-const for these components; the
 * script re-runs itself with the flag when needed.
 */

import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

import { transpile } from '@bytecodealliance/jco';
import * as shim from '@bytecodealliance/preview2-shim';

import { MAX_OUTPUTS_PER_BATCH, MAX_OUTPUT_BYTES, OUTPUT_BYTES_PER_BATCH } from '../src/limits.js';
import { BatchEncoder } from '../src/wire.js';

const FLAG = '--experimental-wasm-extended-const';
const utf8 = new TextEncoder();
const text = new TextDecoder();

/** @param {string | null | undefined} value */
const bytes = (value) => (value == null ? null : utf8.encode(value));

/**
 * WASI imports by name (`wasi:cli/stderr`, ...), from the Node shim.
 * @returns {Record<string, unknown>}
 */
function wasiImports() {
  /** @type {Record<string, unknown>} */
  const imports = {};
  for (const [pkg, interfaces] of Object.entries(shim)) {
    for (const [name, iface] of Object.entries(interfaces)) {
      imports[`wasi:${pkg}/${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`] = iface;
    }
  }
  return imports;
}

/** The in-memory host: what the current batch emitted and logged. */
class Host {
  /** @type {Set<bigint>} */
  offsets = new Set();
  /** @type {any[]} */
  emitted = [];
  /** @type {Array<[string, string]>} */
  logs = [];
  used = { count: 0, bytes: 0 };
  headersAsked = 0;

  /** @param {{settings?: Array<[string, string]>, allowTopics?: string[]}} scenario */
  constructor(scenario) {
    this.settings = scenario.settings ?? [];
    this.allowTopics = new Set(scenario.allowTopics ?? []);
  }

  /** @param {bigint[]} offsets */
  startBatch(offsets) {
    this.offsets = new Set(offsets);
    this.emitted = [];
    this.logs = [];
    this.used = { count: 0, bytes: 0 };
  }

  /** @param {{tag: string, val?: unknown}} payload */
  static refuse(payload) {
    return Object.assign(new Error(payload.tag), { payload });
  }

  imports() {
    return {
      'ferry:processor/log': { log: (/** @type {string} */ level, /** @type {string} */ message) => void this.logs.push([level, message]) },
      'ferry:processor/settings': {
        get: (/** @type {string} */ key) => this.settings.find(([k]) => k === key)?.[1],
        entries: () => [...this.settings].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      },
      'ferry:processor/headers': { enabled: () => ++this.headersAsked > 0 },
      'ferry:processor/output': {
        emit: (/** @type {bigint | undefined} */ source, /** @type {any} */ record) => this.emit(source, record),
        // The stand-in charges a record its size only: no fixed costs.
        limits: () => ({
          topics: [...this.allowTopics],
          maxRecords: BigInt(MAX_OUTPUTS_PER_BATCH),
          recordsUsed: BigInt(this.used.count),
          maxRecordBytes: BigInt(MAX_OUTPUT_BYTES),
          batchBytes: BigInt(OUTPUT_BYTES_PER_BATCH),
          bytesUsed: BigInt(this.used.bytes),
          recordCost: 0n,
          headerCost: 0n,
        }),
        emitMany: (/** @type {Uint8Array} */ outputs) => {
          const records = decodeOutputs(outputs);
          for (const [index, [source, record]] of records.entries()) {
            try {
              this.emit(source, record);
            } catch (error) {
              throw Host.refuse(/** @type {any} */ ([index, /** @type {any} */ (error).payload]));
            }
          }
        },
      },
    };
  }

  /**
   * `emit`: the host's checks, in the host's order.
   * @param {bigint | undefined} source
   * @param {any} record
   */
  emit(source, record) {
    if (!this.allowTopics.has(record.topic)) throw Host.refuse({ tag: 'topic-not-allowed', val: record.topic });
    if (source !== undefined && !this.offsets.has(source)) throw Host.refuse({ tag: 'unknown-source', val: source });
    if (this.used.count >= MAX_OUTPUTS_PER_BATCH) throw Host.refuse({ tag: 'too-many' });
    let size = (record.key?.length ?? 0) + (record.value?.length ?? 0);
    for (const h of record.headers) size += utf8.encode(h.name).length + (h.value?.length ?? 0);
    if (size > MAX_OUTPUT_BYTES) throw Host.refuse({ tag: 'too-large', val: BigInt(MAX_OUTPUT_BYTES) });
    if (this.used.bytes + size > OUTPUT_BYTES_PER_BATCH) throw Host.refuse({ tag: 'over-budget', val: BigInt(OUTPUT_BYTES_PER_BATCH) });
    this.used.count += 1;
    this.used.bytes += size;
    this.emitted.push({
      source: source === undefined ? null : Number(source),
      topic: record.topic,
      key: record.key == null ? null : text.decode(record.key),
      value: record.value == null ? null : text.decode(record.value),
      headers: record.headers.map((/** @type {any} */ h) => [h.name, h.value == null ? null : text.decode(h.value)]),
    });
  }
}

/**
 * `emit-many`'s buffer as `[source, output-record]` pairs, shaped as `emit`'s arguments.
 * @param {Uint8Array} buf
 * @returns {Array<[bigint | undefined, any]>}
 */
function decodeOutputs(buf) {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  /** @type {Array<[bigint | undefined, any]>} */
  const out = [];
  let at = 0;
  const take = (/** @type {number} */ n) => buf.slice(at, (at += n));
  const optional = (/** @type {number} */ n) => (n === 0xffffffff ? undefined : take(n));
  while (at < buf.byteLength) {
    const source = view.getBigInt64(at, true);
    const [topicLen, keyLen, valueLen, count] = [8, 12, 16, 20].map((o) => view.getUint32(at + o, true));
    at += 24;
    const topic = text.decode(take(topicLen));
    const key = optional(keyLen);
    const value = optional(valueLen);
    const headers = [];
    for (let i = 0; i < count; i++) {
      const [nameLen, hvalueLen] = [view.getUint32(at, true), view.getUint32(at + 4, true)];
      at += 8;
      headers.push({ name: text.decode(take(nameLen)), value: optional(hvalueLen) });
    }
    out.push([source === -(1n << 63n) ? undefined : source, { topic, key, value, headers }]);
  }
  return out;
}

/**
 * Runs `scenario` against the component at `wasmPath`; one result per step.
 * @param {string} wasmPath
 * @param {any} scenario
 */
export async function runScenario(wasmPath, scenario) {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-run-'));
  try {
    const { files, imports } = await transpile(await readFile(wasmPath), { name: 'component', instantiation: 'async', noTypescript: true, quiet: true });
    for (const [name, data] of Object.entries(files)) {
      if (name.endsWith('.d.ts')) continue;
      await mkdir(dirname(join(dir, name)), { recursive: true });
      await writeFile(join(dir, name), data);
    }
    const { instantiate } = await import(pathToFileURL(join(dir, 'component.js')).href);
    const host = new Host(scenario);
    const linked = { ...wasiImports(), ...host.imports() };
    const fresh = async () => {
      const instance = await instantiate((/** @type {string} */ path) => readFile(join(dir, path)).then((b) => WebAssembly.compile(b)), linked);
      return instance['ferry:processor/handler@0.2.0'] ?? instance.handler;
    };
    let handler = await fresh();
    const results = [];
    for (const step of scenario.steps) {
      try {
        results.push(runStep(handler, host, step));
      } catch (error) {
        results.push({ trap: String(/** @type {Error} */ (error)?.message ?? error) });
        handler = await fresh();
      }
    }
    return { imports, results };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * @param {any} handler
 * @param {Host} host
 * @param {any} step
 */
function runStep(handler, host, step) {
  if (step.selfTest) {
    try {
      handler.selfTest();
      return { selfTest: 'ok' };
    } catch (error) {
      if (/** @type {any} */ (error)?.payload !== undefined) return { selfTest: /** @type {any} */ (error).payload };
      throw error;
    }
  }
  if (step.assigned) return handler.assigned({ topic: step.assigned[0], partition: step.assigned[1] }), { assigned: 'ok' };
  if (step.revoked) return handler.revoked({ topic: step.revoked[0], partition: step.revoked[1] }), { revoked: 'ok' };
  const { topic, partition = 0, firstOffset = 0, records } = step.process;
  const encoder = new BatchEncoder();
  records.forEach((/** @type {any} */ r, /** @type {number} */ i) =>
    encoder.push(firstOffset + i, r.timestampMs ?? null, bytes(r.key), bytes(r.value), (r.headers ?? []).map(([n, v]) => [n, bytes(v)])),
  );
  host.startBatch(records.map((/** @type {any} */ _, /** @type {number} */ i) => BigInt(firstOffset + i)));
  const result = handler.process({ topic, partition, count: encoder.count, records: encoder.bytes() });
  return {
    statuses: result.statuses,
    failures: result.failures.map((/** @type {any} */ f) => ({ offset: Number(f.offset), reason: f.reason })),
    emitted: host.emitted,
    logs: host.logs,
  };
}

/** Whether this Node validates a module using extended constant expressions. */
function hasExtendedConst() {
  // (module (global i32 (i32.add (i32.const 1) (i32.const 2))))
  const module = Uint8Array.from([0, 97, 115, 109, 1, 0, 0, 0, 6, 10, 1, 127, 0, 65, 1, 65, 2, 106, 11]);
  return WebAssembly.validate(module);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  if (!hasExtendedConst() && !process.execArgv.includes(FLAG)) {
    const again = spawnSync(process.execPath, [FLAG, ...process.argv.slice(1)], { stdio: 'inherit' });
    process.exit(again.status ?? 1);
  }
  const [wasmPath] = process.argv.slice(2);
  if (!wasmPath) {
    console.error('usage: node tools/run-component.mjs <component.wasm> < scenario.json');
    process.exit(2);
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const out = await runScenario(wasmPath, JSON.parse(Buffer.concat(chunks).toString('utf8')));
  process.stdout.write(`${JSON.stringify(out, (_, v) => (typeof v === 'bigint' ? Number(v) : v), 2)}\n`);
}
