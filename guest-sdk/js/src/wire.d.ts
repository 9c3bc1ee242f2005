/** One decoded record: keys, values and header values are views into the buffer. */
export interface RawRecord {
  offset: bigint;
  timestampMs: number | null;
  key: Uint8Array | null;
  value: Uint8Array | null;
  headers: Array<[string, Uint8Array | null]>;
}

export declare const ABSENT_TIMESTAMP: bigint;
export declare const ABSENT_LEN: number;
export declare const RECORD_FIXED_LEN: number;
export declare const HEADER_FIXED_LEN: number;

/** The buffer is not a valid batch (same messages as the Rust SDK). */
export declare class WireError extends Error {}

/** Checks `count` records (throws `WireError` unless the buffer holds exactly that); where each starts. */
export declare function index(buf: Uint8Array, count: number): number[];

/** The headers of a record from `pos` of a buffer `index` checked. */
export declare function headersAt(buf: Uint8Array, view: DataView, pos: number, headerCount: number): Array<[string, Uint8Array | null]>;

/** The record that starts at `start` of a buffer `index` checked. */
export declare function fieldsAt(buf: Uint8Array, view: DataView, start: number): RawRecord;

/** Decodes and checks `count` records; throws `WireError` unless the buffer holds exactly that. */
export declare function decode(buf: Uint8Array, count: number): RawRecord[];

/** Writes records into the flat batch encoding (for tests and tools). */
export declare class BatchEncoder {
  push(
    offset: number | bigint,
    timestampMs: number | bigint | null | undefined,
    key: Uint8Array | null | undefined,
    value: Uint8Array | null | undefined,
    headers?: Iterable<[string, Uint8Array | null | undefined]>,
  ): void;
  readonly count: number;
  bytes(): Uint8Array;
}
