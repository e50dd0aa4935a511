// The `records` payload: a batch of consecutive log records, each exactly as the record codec
// (src/log/record.ts, docs/FORMAT.md §1.2) writes it — the 80-byte header and the payload —
// without the on-disk padding to 512 bytes (padding is placement in a file, not content, and
// would cost up to 511 bytes per record on the wire). Wrap markers are placement too and are
// never sent.
//
//   0 firstLsn u64 │ 8 count u32 │ 12 reserved u32 (0)
//   16 record firstLsn: header (80) · payload │ record firstLsn+1: header · payload │ …
//
// A record keeps every field it has in the primary's log (lsn, generation, logId, timestamp,
// and the chain value `previous`), so the receiver checks each record's own checksum, that
// the LSNs run firstLsn, firstLsn+1, … and that each record's `previous` is the checksum of
// the one before it — across frames too, when it passes what it expects next. The payloads
// and headers are views of the frame payload: decoding copies nothing, and a replica's log
// copy writes the header bytes it checked instead of encoding them again.

import { assert } from "../assert.js";
import { type LogRecord, type LogRecordWithHeader, logCorruptReason, type RecordFields, RecordKind, recordDecodeWithHeader, recordHeaderEncode, recordHeaderSize } from "../log/record.js";
import { FrameError } from "./frame-error.js";
import { replicationBatchRecordsMax, replicationFramePayloadSizeMax } from "./limits.js";
import { PayloadReader, u64Max } from "./payload-codec.js";

export const recordsBatchHeaderSize = 16;
export const recordsSizeMin = recordsBatchHeaderSize + recordHeaderSize;
export const recordsSizeMax = replicationFramePayloadSizeMax;

// A record to send: its fields and payload; `checksum`, when given (a record read back from
// the log), must equal the checksum the encoder computes.
// `header`, when given with `checksum` (a record as the log encoded it), is sent as it is.
export type RecordToSend = RecordFields & { readonly payload: Buffer; readonly checksum?: number; readonly header?: Buffer };

// What the receiver knows about the batch that must come next (each part optional).
export interface RecordsExpectation {
  readonly firstLsn?: bigint; // the LSN after the last one received
  readonly previousChecksum?: number; // the checksum of the last record received
  readonly logId?: bigint; // the log the stream comes from
}

export interface Records {
  readonly kind: "records";
  readonly records: readonly LogRecord[];
  readonly ackNow: boolean; // sync links: make the batch durable and acknowledge at once
  readonly intervalEnd: boolean; // periodic links: the last record closes a consistent interval
  // Protocol version 2: the frame's payload checksum covers the batch header only, the records
  // their own bytes (frame.ts). Decoded: whether the frame said so; to send: false when absent.
  readonly recordChecksums?: boolean;
}

// The bytes a batch of records with these payload sizes takes in a frame payload.
export function recordsPayloadSize(payloadSizes: readonly number[]): number {
  return payloadSizes.reduce((sum, size) => sum + recordHeaderSize + size, recordsBatchHeaderSize);
}

// The payload as parts for writev: [batch header, record header, record payload, …]. Record
// payloads are referenced, never copied. Records must be consecutive and chained.
export function recordsEncode(records: readonly RecordToSend[]): Buffer[] {
  assert(records.length >= 1 && records.length <= replicationBatchRecordsMax, `records per frame: ${records.length}`);
  assert(recordsPayloadSize(records.map((record) => record.payload.length)) <= recordsSizeMax, "records exceed the frame payload limit");
  const first = records[0]!;
  assert(first.lsn + BigInt(records.length - 1) <= u64Max, "records LSNs overflow");
  const batchHeader = Buffer.alloc(recordsBatchHeaderSize);
  batchHeader.writeBigUInt64LE(first.lsn, 0);
  batchHeader.writeUInt32LE(records.length, 8);
  const parts: Buffer[] = [batchHeader];
  let previous: number | undefined;
  for (const [index, record] of records.entries()) {
    assert(record.kind !== RecordKind.wrap, "a wrap marker is never sent");
    assert(record.lsn === first.lsn + BigInt(index) && record.logId === first.logId, "records are consecutive records of one log");
    assert(previous === undefined || record.previousChecksum === previous, "records are chained");
    const { header, checksum } = record.header !== undefined && record.checksum !== undefined ? { header: record.header, checksum: record.checksum } : recordHeaderEncode(record, record.payload);
    assert(record.checksum === undefined || record.checksum === checksum, `record ${record.lsn} changed since it was read`);
    parts.push(header);
    if (record.payload.length > 0) parts.push(record.payload);
    previous = checksum;
  }
  return parts;
}

export function recordsDecode(payload: Buffer, expected: RecordsExpectation = {}): LogRecordWithHeader[] {
  const reader = new PayloadReader(payload);
  const firstLsn = reader.u64();
  const count = reader.u32();
  reader.zero32("reserved");
  if (count < 1 || count > replicationBatchRecordsMax) throw new FrameError("field", { field: "count", value: count });
  if (count * recordHeaderSize > reader.remaining) throw new FrameError("length", { count, bytes: payload.length });
  if (firstLsn < 1n || firstLsn + BigInt(count - 1) > u64Max) throw new FrameError("lsn", { firstLsn, count });
  if (expected.firstLsn !== undefined && firstLsn !== expected.firstLsn) throw new FrameError("lsn", { firstLsn, expected: expected.firstLsn });
  const records: LogRecordWithHeader[] = [];
  let at = recordsBatchHeaderSize;
  let previousChecksum = expected.previousChecksum;
  let logId = expected.logId;
  for (let index = 0; index < count; index++) {
    const lsn = firstLsn + BigInt(index);
    const record = recordAt(payload, at, { lsn, previousChecksum, logId });
    if (record.kind === RecordKind.wrap) throw new FrameError("record", { lsn, recordReason: "kind" });
    records.push(record);
    at += recordHeaderSize + record.payloadSize;
    previousChecksum = record.checksum;
    logId = record.logId;
  }
  if (at !== payload.length) throw new FrameError("length", { trailing: payload.length - at });
  return records;
}

// One record at `at`, its LOG_CORRUPT errors turned into FrameErrors: a record that claims
// more bytes than the frame holds is `length`, one with an unexpected LSN `lsn`, any other
// failure (checksum, chain, log, kind, field) `record` with the record codec's reason.
function recordAt(payload: Buffer, at: number, expected: { lsn: bigint; previousChecksum: number | undefined; logId: bigint | undefined }): LogRecordWithHeader {
  try {
    return recordDecodeWithHeader(payload.subarray(at), expected);
  } catch (error) {
    const reason = logCorruptReason(error);
    if (reason === null) throw error;
    if (reason === "header" || reason === "size") throw new FrameError("length", { lsn: expected.lsn, recordReason: reason }, { cause: error });
    if (reason === "lsn") throw new FrameError("lsn", { lsn: expected.lsn }, { cause: error });
    throw new FrameError("record", { lsn: expected.lsn, recordReason: reason }, { cause: error });
  }
}
