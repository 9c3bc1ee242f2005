// Types of the ferry JavaScript SDK (ferry:processor@0.2.0).

/** Bytes, or text (sent as UTF-8). */
export type Data = string | Uint8Array;

/** What happened to one record (the WIT `status`). */
export type Status = 'processed' | 'retry' | 'reject';

/** Severity of a log line. */
export type LevelName = 'trace' | 'debug' | 'info' | 'warn' | 'error';
export declare const Level: {
  readonly TRACE: 'trace';
  readonly DEBUG: 'debug';
  readonly INFO: 'info';
  readonly WARN: 'warn';
  readonly ERROR: 'error';
};

/** One partition of an input topic. */
export declare class TopicPartition {
  constructor(topic: string, partition: number);
  readonly topic: string;
  readonly partition: number;
  static of(record: Record): TopicPartition;
  equals(other: TopicPartition): boolean;
  /** `topic/partition` */
  toString(): string;
}

/** A batch of records from one topic-partition, in offset order. */
export declare class Batch implements Iterable<Record> {
  constructor(topic: string, partition: number, count: number, records: Uint8Array, headerGate?: () => void);
  readonly topic: string;
  readonly partition: number;
  readonly length: number;
  at(index: number): Record | undefined;
  records(): Record[];
  [Symbol.iterator](): Iterator<Record>;
}

/** One input record: a view into its batch's buffer. */
export declare class Record {
  private constructor();
  readonly topic: string;
  readonly partition: number;
  /** The offset in its partition (64-bit, so a bigint). */
  readonly offset: bigint;
  /** Milliseconds since the Unix epoch, or `null` when the record has none. */
  readonly timestampMs: number | null;
  /** A view into the batch (valid while the batch is), or `null` for no key (distinct from empty). */
  readonly key: Uint8Array | null;
  /** A view into the batch (valid while the batch is), or `null` for a tombstone. */
  readonly value: Uint8Array | null;
  /** The key as UTF-8 (throws `TypeError` if it is not), or `null`. */
  keyText(): string | null;
  /** The value as UTF-8 (throws `TypeError` if it is not), or `null`. */
  valueText(): string | null;
  /**
   * `[name, value]` pairs in produced order. Needs the `headers` capability
   * (declared in package.json), else throws `CapabilityError`.
   */
  readonly headers: ReadonlyArray<readonly [string, Uint8Array | null]>;
  /** The first header called `name`, or `null` if none or its value is absent. */
  header(name: string): Uint8Array | null;
}

/** What happened to one record, with the reason for a retry or reject. */
export declare class Outcome {
  constructor(status: Status, reason?: string);
  readonly status: Status;
  readonly reason: string;
  static processed(): Outcome;
  static retry(reason: string): Outcome;
  static reject(reason: string): Outcome;
  readonly isProcessed: boolean;
  toString(): string;
}

/** Why a record was not processed: throw `Retry` or `Reject` from `process`. */
export declare class ProcessingError extends Error {
  constructor(reason: string);
  readonly reason: string;
  readonly transient: boolean;
}
/** Try the record again later. */
export declare class Retry extends ProcessingError {}
/** Give up on the record: dead-letter or halt by policy. */
export declare class Reject extends ProcessingError {}
/** Abort the whole batch: the component traps, like a panic in a Rust guest. */
export declare class Fault extends Error {
  constructor(message: string);
}
/** The processor used a capability its package.json does not declare. */
export declare class CapabilityError extends Fault {}

/** Runs `call`; what it throws becomes a `Retry`. */
export declare function transient<T>(call: () => T): T;
/** Runs `call`; what it throws becomes a `Reject` with reason `"context: error"`. */
export declare function rejecting<T>(context: string, call: () => T): T;

/** The host refused an emitted record (messages as in the Rust SDK). */
export declare class EmitError extends Error {}
export declare class TopicNotAllowed extends EmitError {
  constructor(topic: string);
  readonly topic: string;
}
export declare class TooLarge extends EmitError {
  constructor(limit: number);
  readonly limit: number;
}
export declare class TooMany extends EmitError {
  constructor();
}
export declare class OverBudget extends EmitError {
  constructor(budget: number);
  readonly budget: number;
}
export declare class UnknownSource extends EmitError {
  constructor(offset: bigint);
  readonly offset: bigint;
}

/** The host refused a state write (messages as in the Rust SDK); `limit` is the host's. */
export declare class StateError extends Error {}
export declare class KeyTooLarge extends StateError {
  constructor(limit: number);
  readonly limit: number;
}
export declare class ValueTooLarge extends StateError {
  constructor(limit: number);
  readonly limit: number;
}
export declare class PartitionFull extends StateError {
  constructor(limit: number);
  readonly limit: number;
}
export declare class TooManyWrites extends StateError {
  constructor(limit: number);
  readonly limit: number;
}

/**
 * The keyed state of the batch's input partition, from `ctx.state()` (needs the
 * `state` capability). Writes throw `StateError` over a limit; a batch's writes
 * take effect only if every record of it finishes (processed or rejected).
 */
export declare class State {
  private constructor();
  /** The value of `key`, as this batch left it so far, or `null`. */
  get(key: Data): Uint8Array | null;
  put(key: Data, value: Data): void;
  /** Removes `key` (absent is fine). */
  delete(key: Data): void;
  /** Up to `limit` `[key, value]` pairs whose key starts with `prefix`, in key order (at most 10,000 and 4 MiB). */
  scan(prefix?: Data, limit?: number): Array<[Uint8Array, Uint8Array]>;
  /** The value as UTF-8, or `null` if absent or not UTF-8. */
  getText(key: Data): string | null;
  /** The value as a little-endian u64 (the Rust SDK's `put_u64`), or `null` if absent or not 8 bytes. */
  getU64(key: Data): bigint | null;
  putU64(key: Data, value: bigint | number): void;
  /** The value parsed as JSON, or `fallback` (default `null`) if absent. */
  getJson<T = any>(key: Data, fallback?: T): T;
  putJson(key: Data, value: unknown): void;
}

/** An output record for `ctx.emit`; a missing value is a tombstone. */
export interface Output {
  topic: string;
  key?: Data | null;
  value?: Data | null;
  headers?: Iterable<readonly [string, Data | null]>;
}

/** The processor's handle on the host for the duration of one batch. */
export declare class Context {
  private constructor();
  /** Runs `fn` with outputs attributed to `record` (published only if it ends processed). */
  forRecord<T>(record: Record, fn: (ctx: Context) => T): T;
  /** Emits `value` with no key; throws `EmitError` if the host refuses. */
  emitValue(topic: string, value: Data): void;
  /** Emits `key` and `value`; throws `EmitError` if the host refuses. */
  emitKv(topic: string, key: Data, value: Data): void;
  /** Queues an output record; throws `EmitError` if the host refuses. */
  emit(output: Output): void;
  /** The keyed state of the batch's input partition (needs the `state` capability). */
  state(): State;
  log(level: LevelName, message: string): void;
  trace(message: string): void;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** A setting that is missing or does not parse. */
export declare class SettingError extends Error {
  readonly key: string;
  static missing(key: string): SettingError;
  static invalid(key: string, value: string, reason: string): SettingError;
}

/** The built-in setting parsers. */
export interface Parsers {
  int(text: string): number;
  number(text: string): number;
  bool(text: string): boolean;
  string(text: string): string;
}
export declare const parsers: Readonly<Parsers>;
type ParserName = keyof Parsers;
type Parsed<A> = A extends ParserName ? ReturnType<Parsers[A]> : A extends (text: string) => infer T ? T : never;

/** The pipeline's settings, with typed accessors. */
export declare class Settings {
  constructor(values?: Iterable<readonly [string, string]> | { [key: string]: string });
  get(key: string): string | undefined;
  /** Throws `SettingError` ("setting `x` is required but the pipeline does not set it"). */
  require(key: string): string;
  parse<A extends ParserName | ((text: string) => unknown)>(key: string, as: A): Parsed<A> | undefined;
  parseOr<A extends ParserName | ((text: string) => unknown)>(key: string, fallback: Parsed<A>, as: A): Parsed<A>;
  parseRequired<A extends ParserName | ((text: string) => unknown)>(key: string, as: A): Parsed<A>;
  entries(): IterableIterator<[string, string]>;
  readonly size: number;
  has(key: string): boolean;
}

/** One state per input partition, created on first use. */
export declare class PerPartition<T> {
  constructor(factory: () => T);
  entry(topic: string, partition: number): T;
  of(record: { topic: string; partition: number }): T;
  get(topic: string, partition: number): T | undefined;
  set(topic: string, partition: number, state: T): void;
  revoke(partition: { topic: string; partition: number }): T | undefined;
  entries(): Generator<[TopicPartition, T]>;
  readonly size: number;
}

/** A stream processor: extend it and export the class with `exportProcessor`. */
export declare class Processor {
  /** Handles one record; return to mark it processed, throw `Retry`/`Reject` otherwise. */
  process(record: Record, ctx: Context): void;
  /** Handles a batch: one outcome per record, in order; async (a Promise of them) to await `fetch`. */
  processBatch(batch: Batch, ctx: Context): Outcome[] | Promise<Outcome[]>;
  /** Reads the pipeline's settings once per instance; throwing refuses the deploy. */
  configure(settings: Settings): void;
  /** A partition's first batch in this instance is coming. */
  assigned(partition: TopicPartition): void;
  /** A partition moved to another member: forget its state. */
  revoked(partition: TopicPartition): void;
  /** Run before a deploy on a fresh, configured instance; throwing refuses it. */
  selfTest(): void;
}

/** Makes `cls` the component's processor (once, at module level). */
export declare function exportProcessor<C extends new () => Processor>(cls: C): C;

/** The host's default per-batch and state limits. */
export declare const limits: {
  readonly MAX_OUTPUTS_PER_BATCH: number;
  readonly MAX_OUTPUT_BYTES: number;
  readonly OUTPUT_BYTES_PER_BATCH: number;
  readonly STATE_BYTES_PER_PARTITION: number;
  readonly STATE_ENTRY_COST: number;
  readonly MAX_STATE_KEY_BYTES: number;
  readonly MAX_STATE_VALUE_BYTES: number;
  readonly STATE_WRITES_PER_BATCH: number;
  readonly MAX_SCAN_ENTRIES: number;
  readonly MAX_SCAN_BYTES: number;
};
