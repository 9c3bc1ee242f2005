/**
 * Test guest: misbehaves on request, like the Rust guest in tests/guests/chaos.
 * Each record's value (UTF-8) picks what happens:
 *
 * | value | behaviour |
 * | --- | --- |
 * | `loop` | spins forever (epoch deadline) |
 * | `oom` | allocates 1 MiB buffers forever, touching every page (memory cap; SpiderMonkey's out-of-memory is a fault: trap) |
 * | `recurse` | unbounded recursion: SpiderMonkey's "too much recursion", a fault (trap) |
 * | `panic`, `throw` | throws `Fault` (trap, like a Rust panic) |
 * | `error` | an ordinary uncaught exception (a `TypeError`): the SDK rejects the record with `"TypeError: ..."` |
 * | `sleep` | waits 120 s synchronously: `Atomics.wait` if the engine has shared memory, else a busy wait |
 * | `block:<ms>` | logs `blocking for <ms> ms`, then waits that long as `sleep` does, then processed |
 * | `sleep:<ms>` | busy-waits that many milliseconds, then processed |
 * | `retry` | `Retry("asked to retry")` |
 * | `reject` | `Reject("asked to reject")` |
 * | `emit:<topic>` | emits the record's key and value to `<topic>`; `Retry` if refused |
 * | `emit-reject:<topic>` | emits as `emit:<topic>`, then `Reject` |
 * | `emit-retry-once:<topic>` | emits as `emit:<topic>`, then `Retry` the first time this instance sees the record; processed after that |
 * | `log:<message>` | logs `<message>` at info level |
 * | anything else | processed |
 */

import { EmitError, Fault, Processor, Reject, Retry, exportProcessor } from 'ferry-sdk';

/** A sink the optimizer cannot see through. */
export const sink = { value: 0 };

function spin() {
  for (;;) sink.value = (sink.value + 1) | 0;
}

function hog() {
  const chunks = [];
  for (;;) {
    const chunk = new Uint8Array(1 << 20);
    for (let page = 0; page < chunk.length; page += 4096) chunk[page] = 0xa5;
    chunks.push(chunk);
  }
}

/** @param {number} depth @returns {number} */
function recurse(depth) {
  return recurse(depth + 1) * 3 + depth;
}

/** @param {number} ms */
function busyWait(ms) {
  const now = typeof performance === 'object' ? () => performance.now() : () => Date.now();
  const deadline = now() + ms;
  while (now() < deadline) sink.value += 1;
}

/** @param {number} ms */
function blockingSleep(ms) {
  if (typeof SharedArrayBuffer === 'function' && typeof Atomics === 'object' && typeof Atomics.wait === 'function') {
    try {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
      return;
    } catch {
      // Not allowed on this thread: fall through to the busy wait.
    }
  }
  busyWait(ms);
}

/** The chaos processor. */
export class Chaos extends Processor {
  /** `partition/offset` of the records `emit-retry-once` asked to retry. */
  retried = new Set();

  /**
   * @param {import('ferry-sdk').Record} record
   * @param {import('ferry-sdk').Context} ctx
   */
  process(record, ctx) {
    const command = record.value === null ? '' : new TextDecoder().decode(record.value);
    const colon = command.indexOf(':');
    const verb = colon < 0 ? command : command.slice(0, colon);
    if (verb === 'emit' || verb === 'emit-reject' || verb === 'emit-retry-once') {
      try {
        ctx.emit({ topic: command.slice(colon + 1), key: record.key, value: record.value });
      } catch (error) {
        if (error instanceof EmitError) throw new Retry(`emit refused: ${error.message}`);
        throw error;
      }
      if (verb === 'emit-reject') throw new Reject('asked to reject after emitting');
      const seen = `${record.partition}/${record.offset}`;
      if (verb === 'emit-retry-once' && !this.retried.has(seen)) {
        this.retried.add(seen);
        throw new Retry('asked to retry after emitting');
      }
      return;
    }
    if (command.startsWith('log:')) {
      ctx.info(command.slice(4));
      return;
    }
    if (command.startsWith('block:')) {
      const ms = command.slice(6).trim();
      if (!/^\d+$/.test(ms)) throw new Reject(`bad block duration ${JSON.stringify(ms)}`);
      ctx.info(`blocking for ${ms} ms`);
      blockingSleep(Number(ms));
      return;
    }
    if (command.startsWith('sleep:')) {
      const ms = command.slice(6).trim();
      if (!/^\d+$/.test(ms)) throw new Reject(`bad sleep duration ${JSON.stringify(ms)}`);
      busyWait(Number(ms));
      return;
    }
    switch (command) {
      case 'loop':
        spin();
        break;
      case 'oom':
        hog();
        break;
      case 'recurse':
        recurse(0);
        break;
      case 'panic':
      case 'throw':
        throw new Fault(`chaos: asked to ${command} at offset ${record.offset}`);
      case 'error':
        /** @type {any} */ (sink).missing.field = 1;
        break;
      case 'sleep':
        blockingSleep(120_000);
        break;
      case 'retry':
        throw new Retry('asked to retry');
      case 'reject':
        throw new Reject('asked to reject');
    }
  }
}

exportProcessor(Chaos);
