// The replication frame: one fixed 32-byte little-endian header, then the payload
// (docs/PROTOCOL.md §2–§3 is the reference).
//
//   0       4     6     8      10     12           16                24            28           32
//   ┌───────┬─────┬─────┬──────┬──────┬────────────┬─────────────────┬─────────────┬────────────┐
//   │ magic │ ver │type │flags │  0   │payloadSize │ sequence u64    │ payloadCrc  │ headerCrc  │
//   └───────┴─────┴─────┴──────┴──────┴────────────┴─────────────────┴─────────────┴────────────┘
//   payload (payloadSize bytes)
//
// Two checksums, not one: headerCrc (CRC32C of bytes 0..27, payloadCrc included) lets a
// receiver trust payloadSize from the header's 32 bytes alone. With one checksum over both, a
// corrupted or forged size could only be caught after reading that many bytes: a flipped bit
// in the size would stall the link waiting for up to 33 MiB that never comes, or swallow the
// frames behind it. payloadCrc is CRC32C of the payload (0 for an empty one), except in a
// records frame flagged recordChecksums (protocol version 2): there it covers the 16-byte batch
// header only, since every record after it carries its own checksum over its header and payload,
// and the decoder checks each record's LSN against the batch header's (records-batch.ts). A
// second pass over every record byte bought nothing and cost about 1 µs per 4 KiB record on
// each side, the primary's event loop included.
//
// `sequence` numbers the frames of one direction of one connection from 0: a lost, repeated
// or reordered frame, or a frame spliced in from another connection, is refused.
//
// Encoding references payload buffers and returns [header, ...payload] for one writev; the
// checksum runs over the parts without concatenating them. Decoding (here for one whole frame,
// frame-decoder.ts for a stream) checks the header fully — magic, version, headerCrc, reserved,
// type, flags, payloadSize against the type's range and the receiver's limit — before it
// allocates or reads a byte of payload. Every failure is a FrameError with a stable reason.

import { assert } from "../assert.js";
import { crc32c } from "../io/crc32c.js";
import { FrameError } from "./frame-error.js";
import { acceptSize, helloSizeMax, helloSizeMin, rejectSizeMax, rejectSizeMin } from "./handshake.js";
import { replicationFramePayloadSizeMax } from "./limits.js";
import { ackSize, heartbeatSize } from "./progress.js";
import { recordsBatchHeaderSize, recordsSizeMax, recordsSizeMin } from "./records-batch.js";
import { bitmapRegionsSizeMax, bitmapRegionsSizeMin, regionDataHeaderSize, regionDataSizeMax, resyncEndSize } from "./resync.js";
import { volumeTableSizeMax, volumeTableSizeMin } from "./volume-table.js";
import { hashReplySizeMax, hashReplySizeMin, hashRequestSizeMax, hashRequestSizeMin } from "./verify-hashes.js";
import { twinListRequestSize, twinListSizeMax, twinListSizeMin, twinRegionSizeMax, twinRegionSizeMin } from "./twins.js";

export const frameHeaderSize = 32;
export const frameMagic = 0x5052_534c; // bytes "L S R P" (Lockstep Replication Protocol)
export const frameVersion = 1; // the header's layout; bytes 0..5 keep their meaning forever

export const FrameType = {
  hello: 1,
  accept: 2,
  reject: 3,
  records: 4,
  ack: 5,
  heartbeat: 6,
  bitmapRegions: 7,
  regionData: 8,
  resyncEnd: 9,
  volumeTable: 10,
  hashRequest: 11,
  hashReply: 12,
  twinListRequest: 13,
  twinList: 14,
  twinCatalog: 15,
  twinRegion: 16,
} as const;
export type FrameTypeName = keyof typeof FrameType;

// Flags are defined per frame type; any other bit is refused.
export const RecordsFlag = { ackNow: 0x1, intervalEnd: 0x2, recordChecksums: 0x4 } as const;
export const RegionDataFlag = { zero: 0x1 } as const; // regionData and twinRegion

interface FrameTypeRule {
  readonly name: FrameTypeName;
  readonly flagsKnown: number;
  readonly payloadSizeMin: number;
  readonly payloadSizeMax: number;
}

const rules: readonly FrameTypeRule[] = [
  { name: "hello", flagsKnown: 0, payloadSizeMin: helloSizeMin, payloadSizeMax: helloSizeMax },
  { name: "accept", flagsKnown: 0, payloadSizeMin: acceptSize, payloadSizeMax: acceptSize },
  { name: "reject", flagsKnown: 0, payloadSizeMin: rejectSizeMin, payloadSizeMax: rejectSizeMax },
  { name: "records", flagsKnown: RecordsFlag.ackNow | RecordsFlag.intervalEnd | RecordsFlag.recordChecksums, payloadSizeMin: recordsSizeMin, payloadSizeMax: recordsSizeMax },
  { name: "ack", flagsKnown: 0, payloadSizeMin: ackSize, payloadSizeMax: ackSize },
  { name: "heartbeat", flagsKnown: 0, payloadSizeMin: heartbeatSize, payloadSizeMax: heartbeatSize },
  { name: "bitmapRegions", flagsKnown: 0, payloadSizeMin: bitmapRegionsSizeMin, payloadSizeMax: bitmapRegionsSizeMax },
  { name: "regionData", flagsKnown: RegionDataFlag.zero, payloadSizeMin: regionDataHeaderSize, payloadSizeMax: regionDataSizeMax },
  { name: "resyncEnd", flagsKnown: 0, payloadSizeMin: resyncEndSize, payloadSizeMax: resyncEndSize },
  { name: "volumeTable", flagsKnown: 0, payloadSizeMin: volumeTableSizeMin, payloadSizeMax: volumeTableSizeMax },
  { name: "hashRequest", flagsKnown: 0, payloadSizeMin: hashRequestSizeMin, payloadSizeMax: hashRequestSizeMax },
  { name: "hashReply", flagsKnown: 0, payloadSizeMin: hashReplySizeMin, payloadSizeMax: hashReplySizeMax },
  { name: "twinListRequest", flagsKnown: 0, payloadSizeMin: twinListRequestSize, payloadSizeMax: twinListRequestSize },
  { name: "twinList", flagsKnown: 0, payloadSizeMin: twinListSizeMin, payloadSizeMax: twinListSizeMax },
  { name: "twinCatalog", flagsKnown: 0, payloadSizeMin: twinListSizeMin, payloadSizeMax: twinListSizeMax },
  { name: "twinRegion", flagsKnown: RegionDataFlag.zero, payloadSizeMin: twinRegionSizeMin, payloadSizeMax: twinRegionSizeMax },
];
const ruleByType = new Map(rules.map((rule) => [FrameType[rule.name] as number, rule]));

for (const rule of rules) assert(rule.payloadSizeMin <= rule.payloadSizeMax && rule.payloadSizeMax <= replicationFramePayloadSizeMax, `frame type ${rule.name} limits`);

// The rule of a frame type, or undefined for an unknown type.
export function frameTypeRule(type: number): FrameTypeRule | undefined {
  return ruleByType.get(type);
}

export interface FrameFields {
  readonly type: number;
  readonly flags: number;
  readonly sequence: bigint;
}

export interface FrameHeader extends FrameFields {
  readonly payloadSize: number;
  readonly payloadChecksum: number;
}

export interface Frame extends FrameFields {
  readonly payload: Buffer; // a view of the received bytes where possible
}

export interface FrameLimits {
  // The largest payload this receiver accepts, on top of each type's own range (e.g. a link
  // that has not finished its handshake may accept only control-sized frames).
  readonly payloadSizeMax?: number;
}

// How many of the payload's first bytes payloadCrc covers: all of them, but for a records
// frame whose records carry the checksums (see the top of the file).
function payloadCheckedBytes(type: number, flags: number, payloadSize: number): number {
  return type === FrameType.records && (flags & RecordsFlag.recordChecksums) !== 0 ? Math.min(recordsBatchHeaderSize, payloadSize) : payloadSize;
}

// Writes the header for `payload` (the parts of one payload, in order) into `target`
// (allocated when not given) and returns it. The payload is only read, for its checksum.
export function frameHeaderEncode(fields: FrameFields, payload: readonly Buffer[], target?: Buffer): Buffer {
  const rule = frameTypeRule(fields.type);
  assert(rule !== undefined, () => `unknown frame type ${fields.type}`);
  assert((fields.flags & ~rule.flagsKnown) === 0, () => `flags ${fields.flags} not defined for ${rule.name}`);
  assert(fields.sequence >= 0n && fields.sequence <= 0xffff_ffff_ffff_ffffn, "frame sequence out of range");
  let payloadSize = 0;
  for (const part of payload) payloadSize += part.length;
  let unchecked = payloadCheckedBytes(fields.type, fields.flags, payloadSize);
  let payloadChecksum = 0;
  for (const part of payload) {
    if (unchecked === 0) break;
    const checked = part.length <= unchecked ? part : part.subarray(0, unchecked);
    if (checked.length > 0) payloadChecksum = crc32c(checked, payloadChecksum);
    unchecked -= checked.length;
  }
  assert(payloadSize >= rule.payloadSizeMin && payloadSize <= rule.payloadSizeMax, () => `${rule.name} payload of ${payloadSize} bytes`);
  const header = target ?? Buffer.allocUnsafe(frameHeaderSize);
  assert(header.length >= frameHeaderSize, "frame header target too small");
  header.writeUInt32LE(frameMagic, 0);
  header.writeUInt16LE(frameVersion, 4);
  header.writeUInt16LE(fields.type, 6);
  header.writeUInt16LE(fields.flags, 8);
  header.writeUInt16LE(0, 10);
  header.writeUInt32LE(payloadSize, 12);
  header.writeBigUInt64LE(fields.sequence, 16);
  header.writeUInt32LE(payloadChecksum, 24);
  header.writeUInt32LE(crc32c(header.subarray(0, 28)), 28);
  return header;
}

// [header, ...payload]: one frame for writev, payload parts referenced, not copied.
export function frameEncode(fields: FrameFields, payload: readonly Buffer[]): Buffer[] {
  return [frameHeaderEncode(fields, payload), ...payload];
}

// Checks what the first bytes of a header already tell (magic from 4 bytes, version from 6),
// so a stream that is not this protocol is refused before 32 bytes have arrived.
export function frameHeaderPrefixCheck(source: Buffer): void {
  if (source.length >= 4 && source.readUInt32LE(0) !== frameMagic) throw new FrameError("magic", { magic: source.readUInt32LE(0) });
  if (source.length >= 6 && source.readUInt16LE(4) !== frameVersion) throw new FrameError("version", { version: source.readUInt16LE(4) });
}

// Decodes and checks the 32-byte header at the start of `source`. Nothing here depends on the
// payload: the caller reads payloadSize bytes only after this returned.
export function frameHeaderDecode(source: Buffer, limits: FrameLimits = {}): FrameHeader {
  if (source.length < frameHeaderSize) throw new FrameError("truncated", { bytes: source.length });
  frameHeaderPrefixCheck(source);
  if (crc32c(source.subarray(0, 28)) !== source.readUInt32LE(28)) throw new FrameError("headerChecksum");
  if (source.readUInt16LE(10) !== 0) throw new FrameError("reserved", { reserved: source.readUInt16LE(10) });
  const type = source.readUInt16LE(6);
  const rule = frameTypeRule(type);
  if (rule === undefined) throw new FrameError("type", { type });
  const flags = source.readUInt16LE(8);
  if ((flags & ~rule.flagsKnown) !== 0) throw new FrameError("flags", { type: rule.name, flags });
  const payloadSize = source.readUInt32LE(12);
  const payloadSizeMax = Math.min(rule.payloadSizeMax, limits.payloadSizeMax ?? replicationFramePayloadSizeMax);
  if (payloadSize < rule.payloadSizeMin || payloadSize > payloadSizeMax) {
    throw new FrameError("size", { type: rule.name, payloadSize, min: rule.payloadSizeMin, max: payloadSizeMax });
  }
  return { type, flags, payloadSize, sequence: source.readBigUInt64LE(16), payloadChecksum: source.readUInt32LE(24) };
}

// Checks a complete payload against its header's checksum.
export function framePayloadCheck(header: FrameHeader, payload: Buffer): void {
  assert(payload.length === header.payloadSize, "payload of the header's size");
  const checked = payloadCheckedBytes(header.type, header.flags, payload.length);
  const checksum = checked > 0 ? crc32c(checked === payload.length ? payload : payload.subarray(0, checked)) : 0;
  if (checksum !== header.payloadChecksum) throw new FrameError("payloadChecksum", { type: header.type, sequence: header.sequence });
}

// Decodes one whole frame from the start of `source` (which may hold more). The payload is a
// view of `source`. For a byte stream use FrameDecoder.
export function frameDecode(source: Buffer, limits: FrameLimits = {}): { frame: Frame; size: number } {
  const header = frameHeaderDecode(source, limits);
  const size = frameHeaderSize + header.payloadSize;
  if (source.length < size) throw new FrameError("truncated", { bytes: source.length, needed: size });
  const payload = source.subarray(frameHeaderSize, size);
  framePayloadCheck(header, payload);
  return { frame: { type: header.type, flags: header.flags, sequence: header.sequence, payload }, size };
}

// Numbers the frames one side sends on one connection: 0, 1, 2, …
export class FrameEncoder {
  private sequenceNext = 0n;

  get nextSequence(): bigint {
    return this.sequenceNext;
  }

  // [header, ...payload]: for a socket that copies the parts itself (FrameStream, on a
  // WorkerLinkSocket). The same bytes as encodeWhole's.
  encode(frame: { readonly type: number; readonly flags: number; readonly payload: readonly Buffer[] }): Buffer[] {
    const parts = frameEncode({ type: frame.type, flags: frame.flags, sequence: this.sequenceNext }, frame.payload);
    this.sequenceNext += 1n;
    return parts;
  }

  // The whole frame in one buffer (a copy of the payload parts): one socket write and one
  // checksum pass instead of one per part. A TLS socket copies a many-part write into one
  // buffer before sealing it anyway, so for a link this copy replaces that one, and the 2N+2
  // parts of an N-record frame no longer each go through the stream's write path.
  encodeWhole(frame: { readonly type: number; readonly flags: number; readonly payload: readonly Buffer[] }): Buffer {
    let payloadSize = 0;
    for (const part of frame.payload) payloadSize += part.length;
    const whole = Buffer.allocUnsafe(frameHeaderSize + payloadSize);
    let at = frameHeaderSize;
    for (const part of frame.payload) at += part.copy(whole, at);
    frameHeaderEncode({ type: frame.type, flags: frame.flags, sequence: this.sequenceNext }, [whole.subarray(frameHeaderSize)], whole);
    this.sequenceNext += 1n;
    return whole;
  }
}
