// The log record codec: one fixed 80-byte little-endian header, the payload, and zero padding
// to the next 512-byte boundary (docs/FORMAT.md §3 is the reference).
//
//   0        4      8    10   12    14   16           20         24       28        32
//   ┌────────┬──────┬────┬────┬─────┬────┬────────────┬──────────┬────────┬─────────┐
//   │checksum│magic │ver │kind│flags│ 0  │payloadSize │ volumeId │ length │previous │
//   ├────────┴──────┴────┴────┴─────┴────┴────┬───────┴──────────┴────────┴─────────┤
//   │ lsn u64 │ generation u64 │ logId u64 │ timestampMs u64 │ offset u64 │ 0 u64     │ 32..80
//   └─────────┴────────────────┴───────────┴─────────────────┴────────────┴───────────┘
//   payload (payloadSize bytes) · zero padding to a multiple of 512
//
// checksum = CRC32C of header bytes 4..80 followed by the payload (the padding is not covered).
// `previous` is the checksum of the record before this one in the same log: the records form
// a chain, so a stale record left from an earlier lap or an earlier crash is never taken as
// the successor of a newer one, even when its LSN matches.
//
// The encoder asserts (its input comes from inside the process); the decoder trusts nothing:
// it checks sizes against the format limit and against the bytes it was given before it looks
// further, and every failure is OperatingError LOG_CORRUPT with a `reason`. Decoding never
// allocates: the payload is a view of the source.

import { assert } from "../assert.js";
import { logRecordPayloadSizeMax, sectorSize } from "../constants.js";
import { OperatingError } from "../errors.js";
import { crc32c } from "../io/crc32c.js";

export const recordHeaderSize = 80;
export const recordMagic = 0x524c_534c; // "LSLR" as little-endian bytes
export const recordVersion = 1;
export const recordAlignment = sectorSize;
// The largest record on disk: header, the largest payload, padding.
export const recordDiskSizeMax = recordDiskSize(logRecordPayloadSizeMax);

export const RecordKind = {
  write: 1, // payload = the bytes written at [offset, offset+length)
  zero: 2, // [offset, offset+length) reads as zero afterwards; no payload
  trim: 3, // [offset, offset+length) may be discarded; no payload
  snapshotWrite: 4, // a write to a writable snapshot: payload = u8 name length, the name, the bytes
  snapshotZero: 5, // a zero or trim of a writable snapshot's range: payload = u8 name length, the name
  wrap: 0xff, // the rest of the data area is unused; the next record is at the data start
  operationFirst: 0x100, // 0x100..0xffff: storage-management operations, payload opaque here
} as const;

export const RecordFlag = {
  fua: 0x1, // the client asked for forced unit access on this write
  keepAllocated: 0x2, // a zero record: keep the range allocated (NBD_CMD_FLAG_NO_HOLE)
  // A write record without its data (payloadSize 0; length says how much was written): an
  // activity-map primary with no link to ship it to logs only where the write went, since
  // nothing would read the data back (docs/DESIGN-NOTES.md §1). Never sent to a secondary.
  dataOmitted: 0x4,
} as const;
const recordFlagsKnown = RecordFlag.fua | RecordFlag.keepAllocated | RecordFlag.dataOmitted;

// Whether a record was logged without its data (RecordFlag.dataOmitted).
export function recordDataOmitted(record: { readonly flags: number }): boolean {
  return (record.flags & RecordFlag.dataOmitted) !== 0;
}

export type LogCorruptReason =
  | "header" // fewer bytes than a header
  | "empty" // the header sector is all zero: nothing was ever written here
  | "magic"
  | "version"
  | "kind"
  | "field" // a reserved field is not zero or fields contradict each other
  | "size" // payloadSize exceeds the limit or the bytes available
  | "checksum"
  | "log" // the record belongs to another log (logId)
  | "lsn" // not the LSN expected here (a stale record)
  | "chain" // `previous` is not the checksum of the record before
  | "lost"; // recovery found fewer records than the superblock says were durable

export interface RecordFields {
  readonly kind: number;
  readonly flags: number;
  readonly volumeId: number;
  readonly offset: number;
  readonly length: number;
  readonly lsn: bigint;
  readonly generation: bigint;
  readonly logId: bigint;
  readonly timestampMs: number;
  readonly previousChecksum: number;
}

export interface RecordHeader extends RecordFields {
  readonly checksum: number;
  readonly payloadSize: number;
}

export interface LogRecord extends RecordHeader {
  readonly payload: Buffer; // empty for records without payload
}

export interface RecordExpectation {
  readonly lsn?: bigint;
  readonly logId?: bigint;
  readonly previousChecksum?: number;
}

export function logCorrupt(reason: LogCorruptReason, detail: Record<string, string | number | bigint | undefined> = {}): OperatingError<"LOG_CORRUPT"> {
  return new OperatingError("LOG_CORRUPT", { reason, ...detail });
}

// The reason of a LOG_CORRUPT error, or null for any other error.
export function logCorruptReason(error: unknown): LogCorruptReason | null {
  if (!(error instanceof OperatingError) || error.code !== "LOG_CORRUPT") return null;
  const detail = error.detail;
  return typeof detail === "string" ? null : ((detail.reason as LogCorruptReason | undefined) ?? null);
}

export function recordDiskSize(payloadSize: number): number {
  return Math.ceil((recordHeaderSize + payloadSize) / recordAlignment) * recordAlignment;
}

export function isOperationKind(kind: number): boolean {
  return kind >= RecordKind.operationFirst && kind <= 0xffff;
}

export function isSnapshotChangeKind(kind: number): boolean {
  return kind === RecordKind.snapshotWrite || kind === RecordKind.snapshotZero;
}

function isKnownKind(kind: number): boolean {
  return kind === RecordKind.write || kind === RecordKind.zero || kind === RecordKind.trim || kind === RecordKind.wrap || isSnapshotChangeKind(kind) || isOperationKind(kind);
}

// The snapshot name that prefixes a snapshot change's payload: 1 byte of length, 1..64 bytes.
const snapshotNameBytesMax = 64;

// Whether the fields of a record agree with each other; null when they do.
function fieldsProblem(fields: RecordFields, payloadSize: number): LogCorruptReason | null {
  if (!isKnownKind(fields.kind)) return "kind";
  if ((fields.flags & ~recordFlagsKnown) !== 0) return "field";
  if (fields.offset > Number.MAX_SAFE_INTEGER || fields.timestampMs > Number.MAX_SAFE_INTEGER) return "field";
  const omitted = recordDataOmitted(fields);
  if (omitted && fields.kind !== RecordKind.write) return "field";
  switch (fields.kind) {
    case RecordKind.write:
      return payloadSize === (omitted ? 0 : fields.length) ? null : "field";
    case RecordKind.zero:
    case RecordKind.trim:
      return payloadSize === 0 ? null : "field";
    case RecordKind.snapshotWrite:
      return payloadSize > fields.length + 1 && payloadSize <= fields.length + 1 + snapshotNameBytesMax ? null : "field";
    case RecordKind.snapshotZero:
      return payloadSize > 1 && payloadSize <= 1 + snapshotNameBytesMax ? null : "field";
    case RecordKind.wrap:
      return payloadSize === 0 && fields.length === 0 && fields.offset === 0 && fields.volumeId === 0 && fields.flags === 0 ? null : "field";
    default:
      return null; // operations: the payload is opaque, the other fields are the operation's
  }
}

function isU32(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff;
}

function isU64(value: bigint): boolean {
  return value >= 0n && value <= 0xffff_ffff_ffff_ffffn;
}

// Writes the header of a record into `target` (recordHeaderSize bytes, allocated when not
// given) and returns it with the record's checksum. The payload is only read (for the
// checksum), never copied: write [header, payload, padding] with one writev.
// knownChecksum: the record's checksum as already verified over these very fields and payload
// (a record received and decoded): not computed again.
export function recordHeaderEncode(fields: RecordFields, payload: Buffer | undefined, target?: Buffer, knownChecksum?: number): { header: Buffer; checksum: number } {
  const payloadSize = payload?.length ?? 0;
  assert(payloadSize <= logRecordPayloadSizeMax, "record payload exceeds the limit");
  assert(isU32(fields.volumeId) && isU32(fields.length) && isU32(fields.previousChecksum), "record u32 field out of range");
  assert(Number.isInteger(fields.offset) && fields.offset >= 0 && Number.isInteger(fields.timestampMs) && fields.timestampMs >= 0, "record number field out of range");
  assert(isU64(fields.lsn) && fields.lsn > 0n && isU64(fields.generation) && isU64(fields.logId), "record u64 field out of range");
  assert(fieldsProblem(fields, payloadSize) === null, () => `record fields contradict each other (kind ${fields.kind})`);
  const header = target ?? Buffer.allocUnsafe(recordHeaderSize);
  assert(header.length >= recordHeaderSize, "header target too small");
  header.writeUInt32LE(recordMagic, 4);
  header.writeUInt16LE(recordVersion, 8);
  header.writeUInt16LE(fields.kind, 10);
  header.writeUInt16LE(fields.flags, 12);
  header.writeUInt16LE(0, 14);
  header.writeUInt32LE(payloadSize, 16);
  header.writeUInt32LE(fields.volumeId, 20);
  header.writeUInt32LE(fields.length, 24);
  header.writeUInt32LE(fields.previousChecksum, 28);
  writeU64(header, fields.lsn, 32);
  writeU64(header, fields.generation, 40);
  writeU64(header, fields.logId, 48);
  writeU64(header, fields.timestampMs, 56);
  writeU64(header, fields.offset, 64);
  header.writeUInt32LE(0, 72);
  header.writeUInt32LE(0, 76);
  const checksum = knownChecksum ?? recordChecksum(header, payload);
  header.writeUInt32LE(checksum, 0);
  return { header, checksum };
}

// writeU64 splits a value past 2^53 (a log's random id, the same in every record of the log)
// once and keeps its halves: BigInt shifts allocate.
const safeIntegerMax = BigInt(Number.MAX_SAFE_INTEGER);
let largeValue = -1n;
let largeLow = 0;
let largeHigh = 0;

// A u64 as two u32 halves: the hot path avoids BigInt arithmetic and allocation whenever the
// value fits a JS number exactly (LSNs, offsets and times always do in practice).
function writeU64(target: Buffer, value: bigint | number, at: number): void {
  if (typeof value === "bigint") {
    if (value > safeIntegerMax) {
      if (value !== largeValue) {
        largeLow = Number(value & 0xffff_ffffn);
        largeHigh = Number(value >> 32n);
        largeValue = value;
      }
      target.writeUInt32LE(largeLow, at);
      target.writeUInt32LE(largeHigh, at + 4);
      return;
    }
    value = Number(value);
  }
  target.writeUInt32LE(value % 0x1_0000_0000, at);
  target.writeUInt32LE(Math.floor(value / 0x1_0000_0000), at + 4);
}

function recordChecksum(header: Buffer, payload: Buffer | undefined): number {
  const headerState = crc32c(header.subarray(4, recordHeaderSize));
  return payload !== undefined && payload.length > 0 ? crc32c(payload, headerState) : headerState;
}

// The whole record as one padded buffer (a copy): for tests and small records.
export function recordEncode(fields: RecordFields, payload?: Buffer): { record: Buffer; checksum: number } {
  const record = Buffer.alloc(recordDiskSize(payload?.length ?? 0));
  const { checksum } = recordHeaderEncode(fields, payload, record);
  payload?.copy(record, recordHeaderSize);
  return { record, checksum };
}

// Decodes and checks a header alone: size, magic, version, payload size against the format
// limit, kind and field consistency. The checksum cannot be checked without the payload.
export function recordHeaderDecode(source: Buffer): RecordHeader {
  if (source.length < recordHeaderSize) throw logCorrupt("header", { bytes: source.length });
  if (source.readUInt32LE(4) !== recordMagic) {
    throw logCorrupt(isZero(source.subarray(0, recordHeaderSize)) ? "empty" : "magic");
  }
  const version = source.readUInt16LE(8);
  if (version !== recordVersion) throw logCorrupt("version", { version });
  const payloadSize = source.readUInt32LE(16);
  if (payloadSize > logRecordPayloadSizeMax) throw logCorrupt("size", { payloadSize });
  const header: RecordHeader = recordWithFields(source, payloadSize, noPayload); // (its payload: unknown yet)
  recordHeaderCheck(source, header);
  return header;
}

// The reserved bytes are zero and the fields agree with each other and the payload size.
function recordHeaderCheck(source: Buffer, header: RecordHeader): void {
  if (source.readUInt16LE(14) !== 0 || source.readUInt32LE(72) !== 0 || source.readUInt32LE(76) !== 0) throw logCorrupt("field", { lsn: header.lsn });
  const problem = fieldsProblem(header, header.payloadSize);
  if (problem !== null) throw logCorrupt(problem, { lsn: header.lsn, kind: header.kind });
}

const noPayload = Buffer.alloc(0);

function isZero(bytes: Buffer): boolean {
  for (let index = 0; index < bytes.length; index++) if (bytes[index] !== 0) return false;
  return true;
}

// A record with its encoded header as it was checked (a view of the bytes decoded): the
// same bytes recordHeaderEncode makes of its fields, for a log copy to write as they are.
export type LogRecordWithHeader = LogRecord & { readonly header: Buffer };

// Decodes one record from the start of `source` (which may hold more: padding, later
// records). Structure first, then the payload size against what `source` holds, then the
// checksum, then what the caller expects at this point of the log.
export function recordDecode(source: Buffer, expected: RecordExpectation = {}): LogRecord {
  return recordDecodeChecked(source, expected, false);
}

// recordDecode, the record keeping a view of its header bytes.
export function recordDecodeWithHeader(source: Buffer, expected: RecordExpectation = {}): LogRecordWithHeader {
  return recordDecodeChecked(source, expected, true) as LogRecordWithHeader;
}

function recordDecodeChecked(source: Buffer, expected: RecordExpectation, keepHeader: boolean): LogRecord | LogRecordWithHeader {
  if (source.length < recordHeaderSize) throw logCorrupt("header", { bytes: source.length, lsn: expected.lsn });
  if (source.readUInt32LE(4) !== recordMagic) {
    throw logCorrupt(isZero(source.subarray(0, recordHeaderSize)) ? "empty" : "magic", { lsn: expected.lsn });
  }
  const payloadSize = source.readUInt32LE(16);
  if (payloadSize > logRecordPayloadSizeMax || payloadSize > source.length - recordHeaderSize) {
    throw logCorrupt("size", { payloadSize, available: source.length - recordHeaderSize, lsn: expected.lsn });
  }
  const payload = source.subarray(recordHeaderSize, recordHeaderSize + payloadSize);
  const checksum = source.readUInt32LE(0);
  const version = source.readUInt16LE(8);
  if (version !== recordVersion) throw logCorrupt("version", { version, lsn: expected.lsn });
  if (recordChecksum(source, payload) !== checksum) throw logCorrupt("checksum", { lsn: expected.lsn });
  const record = recordWithFields(source, payloadSize, payload, keepHeader ? source.subarray(0, recordHeaderSize) : undefined);
  recordHeaderCheck(source, record);
  recordCheckExpected(record, expected);
  return record;
}

// The decoded record built as one object literal of one shape: spreading a decoded header
// into a new object cost more than the rest of decoding a 4 KiB record, checksum included (a
// replica decodes every record it receives).
function recordWithFields(source: Buffer, payloadSize: number, payload: Buffer, header?: Buffer): LogRecord & { readonly header: Buffer | undefined } {
  const offset = source.readBigUInt64LE(64);
  const timestampMs = source.readBigUInt64LE(56);
  return {
    checksum: source.readUInt32LE(0),
    kind: source.readUInt16LE(10),
    flags: source.readUInt16LE(12),
    payloadSize,
    volumeId: source.readUInt32LE(20),
    length: source.readUInt32LE(24),
    previousChecksum: source.readUInt32LE(28),
    lsn: source.readBigUInt64LE(32),
    generation: source.readBigUInt64LE(40),
    logId: source.readBigUInt64LE(48),
    // Out-of-range values become non-safe numbers here and are refused by fieldsProblem().
    timestampMs: timestampMs > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_VALUE : Number(timestampMs),
    offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_VALUE : Number(offset),
    payload,
    header, // undefined unless asked for: readers test record.header !== undefined
  };
}

// Checks the identity of a record (its log, LSN and chain link) against what is expected.
export function recordCheckExpected(header: RecordHeader, expected: RecordExpectation): void {
  if (expected.logId !== undefined && header.logId !== expected.logId) throw logCorrupt("log", { lsn: header.lsn });
  if (expected.lsn !== undefined && header.lsn !== expected.lsn) throw logCorrupt("lsn", { lsn: header.lsn, expected: expected.lsn });
  if (expected.previousChecksum !== undefined && header.previousChecksum !== expected.previousChecksum) {
    throw logCorrupt("chain", { lsn: header.lsn });
  }
}
