import type { Batch, Data, LevelName, Outcome, Processor } from './index.js';

/** A batch built in a test; every method returns the batch, for chaining. */
export declare class TestBatch {
  constructor(topic?: string, partition?: number);
  readonly topic: string;
  readonly partition: number;
  atOffset(offset: number | bigint): this;
  timestamp(timestampMs: number | null): this;
  record(key: Data, value: Data, headers?: Iterable<[string, Data | null]>): this;
  valueOnly(value: Data): this;
  tombstone(key: Data): this;
  raw(key: Data | null, value: Data | null, headers?: Iterable<[string, Data | null]>): this;
  readonly length: number;
  batch(headerGate?: () => void): Batch;
}

/** A record the processor emitted. */
export declare class Emitted {
  /** The offset of the record it belongs to; `null`: the whole batch. */
  readonly source: bigint | null;
  readonly topic: string;
  readonly key: Uint8Array | null;
  readonly value: Uint8Array | null;
  readonly headers: Array<[string, Uint8Array | null]>;
  keyText(): string | null;
  valueText(): string | null;
}

/** A line the processor logged. */
export interface LogLine {
  level: LevelName;
  message: string;
}

/** What one batch did. */
export declare class Run {
  /** One outcome per record, in batch order. */
  readonly outcomes: Outcome[];
  /** Outputs the host would publish: of processed records, and the batch's own if all were. */
  readonly emitted: Emitted[];
  /** Outputs the host would drop, because their record was not processed. */
  readonly dropped: Emitted[];
  readonly logs: LogLine[];
  allProcessed(): boolean;
}

/** A stand-in host with the real one's default limits; configuration methods chain. */
export declare class Harness {
  allowTopic(topic: string): this;
  denyAllTopics(): this;
  maxEmits(count: number): this;
  maxRecordBytes(size: number): this;
  batchOutputBytes(size: number): this;
  setting(key: string, value: string): this;
  /** Refuses state writes past `size` bytes per partition (`PartitionFull`). */
  stateBytes(size: number): this;
  /** Allows at most `count` state writes per batch (then `TooManyWrites`). */
  stateWrites(count: number): this;
  /** Starts `topic`/`partition` with this state, as a restore from its changelog would. */
  withState(topic: string, partition: number, entries: Iterable<readonly [Data, Data]>): this;
  /** The partition's state so far: each key as text (UTF-8, else Latin-1) to its value, in key order. */
  state(topic: string, partition: number): Map<string, Uint8Array>;
  capabilities(...names: Array<'log' | 'output' | 'headers' | 'state' | 'http'>): this;
  /** Allows `fetch` to `rule` (`scheme://host[:port]`, as in `[pipeline.http] allow`); others reject before any connection. */
  allowHttp(rule: string): this;
  /** Answers the processor's allowed `fetch` calls with `service`; without one, the real `fetch` sends them. */
  httpService(service: (request: Request) => Response | Promise<Response>): this;
  declaredBy(projectDir: string): this;
  readonly settings: import('./index.js').Settings;
  processor<P extends Processor>(cls: new () => P): P;
  selfTest(cls: new () => Processor): void;
  revoke(processor: Processor, topic: string, partition: number): void;
  /** The run; a Promise of it when `processBatch` is async (one that awaits `fetch`). */
  run(processor: Processor, batch: TestBatch): Run;
  runAsync(processor: Processor, batch: TestBatch): Promise<Run>;
  runEach(processor: Processor, batch: TestBatch): Run;
}

/** Runs one batch under the host's default limits, with every topic allowed. */
export declare function run(processor: Processor, batch: TestBatch): Run;
