// Valid replication input for the mutator: messages of every kind made with the project's own
// encoders (message.ts and the codecs beside it), framed with frame.ts, and the map of every
// fixed field of each frame (header and payload) with its limits, so boundary values land on
// named fields. Plus the reseal step: recompute the CRCs (frame header, payload, and each
// record's own checksum and chain) and renumber sequences, so a mutant is not always caught
// at the first checksum but reaches the checks behind it.
//
//   frame at f: header fields f+0 … f+31 │ payload fields f+32 + (layout of the message kind)

import { logRecordPayloadSizeMax, sectorSize, snapshotsPerVolumeMax, verifyRegionsPerRequestMax, volumeIdMax, volumeSizeMax, volumesPerGroupMax } from "../../src/constants.js";
import { crc32c } from "../../src/io/crc32c.js";
import { RecordKind, recordHeaderSize } from "../../src/log/record.js";
import { FrameType, frameEncode, frameHeaderSize, frameTypeRule } from "../../src/replication/frame.js";
import { protocolVersionMax } from "../../src/replication/handshake.js";
import { replicationBatchRecordsMax, replicationFramePayloadSizeMax, replicationRegionDataSizeMax, replicationRegionsPerFrameMax } from "../../src/replication/limits.js";
import { type MessageToSend, messageEncode } from "../../src/replication/message.js";
import { Random } from "../../src/sim/random.js";
import { chainedRecords } from "../replication/generators.js";
import type { Field, Reseal, Seed } from "./mutator.js";

const safeMax = BigInt(Number.MAX_SAFE_INTEGER);

// What the valid messages describe: a group, its two nodes and the secondary's log position.
export interface StreamContext {
  readonly group: string;
  readonly primary: string;
  readonly secondary: string;
  readonly generation: bigint;
  readonly logId: bigint;
  readonly headLsn: bigint; // the secondary's last record (0: none)
  readonly headChecksum: number; // its checksum (0: none)
  readonly volumes: readonly { readonly volumeId: number; readonly name: string; readonly size: number }[];
}

export const defaultStreamContext: StreamContext = {
  group: "g",
  primary: "primary",
  secondary: "secondary1",
  generation: 1n,
  logId: 0x1234_5678_9abc_def0n,
  headLsn: 41n,
  headChecksum: 0xdead_beef,
  volumes: [{ volumeId: 1, name: "fz", size: 4 * 1024 * 1024 }],
};

type Layout = readonly (readonly [name: string, at: number, size: Field["size"], interesting?: readonly bigint[]])[];

const big = (...values: number[]) => values.map((value) => BigInt(value));
const lsnEdges = [0n, 1n, safeMax, 1n << 63n, (1n << 64n) - 1n];

const headerLayout = (type: number): Layout => {
  const rule = frameTypeRule(type)!;
  return [
    ["magic", 0, 4],
    ["version", 4, 2, big(0, 1, 2)],
    ["type", 6, 2, big(0, 1, 12, 13)],
    ["flags", 8, 2, big(1, 2, 3, 4)],
    ["reserved", 10, 2],
    ["payloadSize", 12, 4, big(rule.payloadSizeMin, rule.payloadSizeMax, replicationFramePayloadSizeMax)],
    ["sequence", 16, 8],
    ["payloadCrc", 24, 4],
    ["headerCrc", 28, 4],
  ];
};

const recordHeaderLayout: Layout = [
  ["record.checksum", 0, 4],
  ["record.magic", 4, 4],
  ["record.version", 8, 2],
  ["record.kind", 10, 2, big(RecordKind.write, RecordKind.snapshotZero, RecordKind.wrap, RecordKind.operationFirst)],
  ["record.flags", 12, 2, big(1, 2, 4)],
  ["record.reserved", 14, 2],
  ["record.payloadSize", 16, 4, big(0, logRecordPayloadSizeMax)],
  ["record.volumeId", 20, 4, big(volumeIdMax)],
  ["record.length", 24, 4, big(sectorSize)],
  ["record.previous", 28, 4],
  ["record.lsn", 32, 8, lsnEdges],
  ["record.generation", 40, 8],
  ["record.logId", 48, 8],
  ["record.timestampMs", 56, 8, [safeMax]],
  ["record.offset", 64, 8, [safeMax, BigInt(volumeSizeMax)]],
  ["record.reserved64", 72, 8],
];

// The fixed fields of each payload, by message kind (offsets from the payload's start). Records,
// regions and volume entries repeat: their first entry is mapped.
function payloadLayout(message: MessageToSend): Layout {
  switch (message.kind) {
    case "hello":
      return [
        ["versionMin", 0, 2, big(1)],
        ["versionMax", 2, 2, big(1)],
        ["role", 4, 2, big(1, 3)],
        ["reserved", 6, 2],
        ["generation", 8, 8],
        ["durableLsn", 16, 8, lsnEdges],
        ["appliedLsn", 24, 8, lsnEdges],
        ["durableChecksum", 32, 4],
        ["nodeLength", 36, 1, big(64)],
        ["groupLength", 37 + message.node.length, 1, big(64)],
      ];
    case "accept":
      return [["protocolVersion", 0, 2, big(1)], ["start", 2, 2, big(1, 2)], ["previousChecksum", 4, 4], ["resumeLsn", 8, 8, lsnEdges], ["logId", 16, 8], ["flags", 24, 4, big(1)], ["reserved", 28, 4]];
    case "reject":
      return [["reason", 0, 2, big(1, 9)], ["textLength", 2, 2, big(256)]];
    case "records":
      return [["firstLsn", 0, 8, lsnEdges], ["count", 8, 4, big(replicationBatchRecordsMax)], ["reserved", 12, 4], ...recordHeaderLayout.map(([name, at, size, interesting]) => [name, 16 + at, size, interesting] as const)];
    case "ack":
      return [["receivedLsn", 0, 8, lsnEdges], ["durableLsn", 8, 8, lsnEdges], ["appliedLsn", 16, 8, lsnEdges], ["flags", 24, 4, big(1)], ["reserved", 28, 4]];
    case "heartbeat":
      return [["timestampMs", 0, 8, [safeMax]], ["echoTimestampMs", 8, 8, [safeMax]]];
    case "bitmapRegions":
      return [["count", 0, 4, big(replicationRegionsPerFrameMax)], ["reserved", 4, 4], ["region.volumeId", 8, 4, big(volumeIdMax)], ["region.reserved", 12, 4], ["region.offset", 16, 8, [BigInt(volumeSizeMax), safeMax]], ["region.length", 24, 8, [BigInt(volumeSizeMax), BigInt(sectorSize)]]];
    case "regionData":
      return [["volumeId", 0, 4, big(volumeIdMax)], ["length", 4, 4, big(replicationRegionDataSizeMax, sectorSize)], ["offset", 8, 8, [BigInt(volumeSizeMax), safeMax]]];
    case "resyncEnd":
      return [["consistentLsn", 0, 8, lsnEdges]];
    case "volumeTable":
      return [["atLsn", 0, 8, lsnEdges], ["count", 8, 4, big(volumesPerGroupMax)], ["reserved", 12, 4], ["volume.id", 16, 4, big(volumeIdMax)], ["volume.size", 20, 8, [BigInt(volumeSizeMax), safeMax]], ["volume.nameLength", 28, 1, big(64)]];
    case "hashRequest":
      return [["requestId", 0, 4], ["volumeId", 4, 4, big(volumeIdMax)], ["regionBytes", 8, 4, big(sectorSize, 64 * 1024 * 1024)], ["count", 12, 4, big(verifyRegionsPerRequestMax)], ["offset", 16, 8, [BigInt(volumeSizeMax), safeMax]], ["snapshotLength", 24, 1, big(64)]];
    case "hashReply":
      return [["requestId", 0, 4], ["count", 4, 4, big(verifyRegionsPerRequestMax)]];
    case "twinListRequest":
      return [["requestId", 0, 4], ["volumeId", 4, 4, big(volumeIdMax)]];
    case "twinList":
    case "twinCatalog":
      return [["head0", 0, 4], ["head1", 4, 4, big(volumeIdMax)], ["count", 8, 4, big(snapshotsPerVolumeMax)], ["reserved", 12, 4], ["twin.size", 16, 8, [BigInt(volumeSizeMax), BigInt(sectorSize)]], ["twin.createdLsn", 24, 8, lsnEdges], ["twin.flags", 32, 1, big(1, 2, 3, 4)], ["twin.nameLength", 33, 1, big(64, 65)], ["twin.parentLength", 34, 1, big(64)], ["twin.reserved", 35, 1]];
    case "twinRegion":
      return [["volumeId", 0, 4, big(volumeIdMax)], ["length", 4, 4, big(replicationRegionDataSizeMax, sectorSize)], ["offset", 8, 8, [BigInt(volumeSizeMax), safeMax]], ["nameLength", 16, 1, big(64, 65)]];
  }
}

// Frames the messages with sequences sequenceFirst, sequenceFirst + 1, …: one seed.
export function frameSeed(messages: readonly MessageToSend[], sequenceFirst: bigint): Seed {
  const parts: Buffer[] = [];
  const fields: Field[] = [];
  const units: number[] = [];
  let at = 0;
  messages.forEach((message, index) => {
    const { type, flags, payload } = messageEncode(message);
    const frame = Buffer.concat(frameEncode({ type, flags, sequence: sequenceFirst + BigInt(index) }, payload));
    units.push(at);
    const prefix = messages.length > 1 ? `${index}.` : "";
    for (const [name, offset, size, interesting] of headerLayout(type)) fields.push({ name: `${prefix}${name}`, at: at + offset, size, endian: "le", interesting });
    for (const [name, offset, size, interesting] of payloadLayout(message)) {
      if (frameHeaderSize + offset + size <= frame.length) fields.push({ name: `${prefix}${message.kind}.${name}`, at: at + frameHeaderSize + offset, size, endian: "le", interesting });
    }
    parts.push(frame);
    at += frame.length;
  });
  return { kind: messages.map((message) => message.kind).join("+"), bytes: Buffer.concat(parts), fields, units };
}

// ---- Valid messages ----

export function helloOfPrimary(context: StreamContext): MessageToSend {
  return { kind: "hello", versionMin: 1, versionMax: 1, role: "primary", generation: context.generation, durableLsn: 0n, appliedLsn: 0n, durableChecksum: 0, node: context.primary, group: context.group };
}

export function acceptContinuing(context: StreamContext): MessageToSend {
  return { kind: "accept", protocolVersion: 1, start: "log", resumeLsn: context.headLsn + 1n, previousChecksum: context.headChecksum, logId: context.logId, intervals: false };
}

// Deterministic bytes standing for volume content at an offset (the live fuzzers compare images).
export function pattern(offset: number, length: number): Buffer {
  const bytes = Buffer.alloc(length + 8);
  for (let at = 0; at < length; at += 8) {
    const position = offset + at;
    bytes.writeUInt32LE(position >>> 0, at);
    bytes.writeUInt32LE(Math.imul(position >>> 9, 0x9e37_79b1) >>> 0, at + 4);
  }
  return bytes.subarray(0, length);
}

// 1…3 records continuing the secondary's log: writes, zeroes, trims, a snapshot write, an operation.
function recordsContinuing(random: Random, context: StreamContext): MessageToSend {
  const volume = context.volumes[random.below(context.volumes.length)]!;
  const shapes = Array.from({ length: 1 + random.below(3) }, () => {
    const sectors = 1 + random.below(4);
    const length = sectors * sectorSize;
    const offset = random.below(volume.size / sectorSize - sectors) * sectorSize;
    const base = { flags: random.below(2), volumeId: volume.volumeId, offset, length, generation: context.generation, timestampMs: 1_700_000_000_000 + random.below(1000) };
    switch (random.below(5)) {
      case 0:
        return { fields: { ...base, kind: RecordKind.zero }, payload: Buffer.alloc(0) };
      case 1:
        return { fields: { ...base, kind: RecordKind.trim, flags: 0 }, payload: Buffer.alloc(0) };
      case 2: {
        const name = Buffer.from("fz-snap");
        return { fields: { ...base, kind: RecordKind.snapshotWrite, flags: 0 }, payload: Buffer.concat([Buffer.from([name.length]), name, pattern(offset, length)]) };
      }
      case 3:
        return { fields: { ...base, kind: RecordKind.operationFirst, flags: 0, offset: 0, length: 0 }, payload: Buffer.from(JSON.stringify({ op: "snapshotCreate", volume: volume.name, snapshot: "fz-snap" })) };
      default:
        return { fields: { ...base, kind: RecordKind.write }, payload: pattern(offset, length) };
    }
  });
  return { kind: "records", records: chainedRecords(context.headLsn + 1n, context.logId, context.headChecksum, shapes), ackNow: random.chance(0.5), intervalEnd: random.chance(0.2) };
}

// One valid message of every kind (the handshake as each side would send it; the stream as a
// primary continuing the secondary's log would).
export function messagesOfEveryKind(random: Random, context: StreamContext): MessageToSend[] {
  const volume = context.volumes[0]!;
  const sectors = volume.size / sectorSize;
  const regionSectors = 1 + random.below(8);
  const regionOffset = random.below(sectors - regionSectors) * sectorSize;
  return [
    helloOfPrimary(context),
    { kind: "hello", versionMin: 1, versionMax: 1, role: "secondary", generation: context.generation, durableLsn: context.headLsn, appliedLsn: context.headLsn, durableChecksum: context.headLsn === 0n ? 0 : context.headChecksum, node: context.secondary, group: context.group },
    acceptContinuing(context),
    { kind: "reject", reason: random.chance(0.5) ? "protocolError" : "staleGeneration", text: "bad frame: magic" },
    recordsContinuing(random, context),
    { kind: "ack", receivedLsn: context.headLsn, durableLsn: context.headLsn, appliedLsn: context.headLsn, consistent: true },
    { kind: "heartbeat", timestampMs: 1_700_000_000_000 + random.below(1000), echoTimestampMs: random.chance(0.5) ? 0 : 1_700_000_000_000 },
    { kind: "bitmapRegions", regions: [{ volumeId: volume.volumeId, offset: regionOffset, length: regionSectors * sectorSize }] },
    { kind: "regionData", volumeId: volume.volumeId, offset: regionOffset, length: regionSectors * sectorSize, data: random.chance(0.3) ? null : pattern(regionOffset, regionSectors * sectorSize) },
    { kind: "resyncEnd", consistentLsn: context.headLsn },
    { kind: "volumeTable", atLsn: context.headLsn, volumes: context.volumes },
    { kind: "hashRequest", requestId: random.next(), volumeId: volume.volumeId, regionBytes: 1024 * 1024, count: 1 + random.below(4), offset: 0, snapshot: random.chance(0.3) ? "fz-snap" : null },
    { kind: "hashReply", requestId: random.next(), digests: random.fill(Buffer.alloc(16 * random.below(3))) },
    { kind: "twinListRequest", requestId: random.next(), volumeId: volume.volumeId },
    { kind: "twinList", requestId: random.next(), volumeId: volume.volumeId, twins: [{ name: "fz-snap", parent: null, writable: false, size: volume.size, createdLsn: context.headLsn }] },
    { kind: "twinCatalog", volumeId: volume.volumeId, twins: [{ name: "fz-snap", parent: null, writable: false, size: volume.size, createdLsn: context.headLsn, build: true }, { name: "fz-child", parent: "fz-snap", writable: true, size: volume.size, createdLsn: context.headLsn, build: random.chance(0.5) }] },
    { kind: "twinRegion", volumeId: volume.volumeId, twin: "fz-snap", offset: regionOffset, length: regionSectors * sectorSize, data: random.chance(0.3) ? null : pattern(regionOffset, regionSectors * sectorSize) },
  ];
}

// Valid hellos a secondary refuses, one for each check it makes (docs/PROTOCOL.md §4.1).
export function hellosRefused(context: StreamContext): MessageToSend[] {
  const hello = helloOfPrimary(context) as Extract<MessageToSend, { kind: "hello" }>;
  return [
    { ...hello, versionMin: protocolVersionMax + 1, versionMax: protocolVersionMax + 2 },
    { ...hello, group: `${context.group}-other` },
    { ...hello, role: "bunker" },
    { ...hello, node: `${context.primary}-other` },
    ...(context.generation > 0n ? [{ ...hello, generation: context.generation - 1n }] : []),
  ];
}

// Seeds: each kind alone, the refused hellos, and short streams of two or three frames.
export function replicationSeeds(random: Random, context: StreamContext, sequenceFirst: bigint, streamsMax = 12): Seed[] {
  const messages = messagesOfEveryKind(random, context);
  const seeds = [...messages, ...hellosRefused(context)].map((message) => frameSeed([message], sequenceFirst));
  for (let stream = 0; stream < streamsMax; stream++) {
    const count = 2 + random.below(2);
    seeds.push(frameSeed(Array.from({ length: count }, () => messages[random.below(messages.length)]!), sequenceFirst));
  }
  return seeds;
}

// ---- Reseal ----

// Recomputes each whole record's checksum in a records payload, and (chain) each record's
// `previous` from the one before it.
function recordsReseal(payload: Buffer, chain: boolean): void {
  if (payload.length < 16) return;
  const count = payload.readUInt32LE(8);
  let at = 16;
  let previous: number | undefined;
  for (let index = 0; index < count && at + recordHeaderSize <= payload.length; index++) {
    const end = at + recordHeaderSize + payload.readUInt32LE(at + 16);
    if (end > payload.length) return;
    if (chain && previous !== undefined) payload.writeUInt32LE(previous, at + 28);
    const checksum = crc32c(payload.subarray(at + recordHeaderSize, end), crc32c(payload.subarray(at + 4, at + recordHeaderSize)));
    payload.writeUInt32LE(checksum, at);
    previous = checksum;
    at = end;
  }
}

// A Reseal for streams whose first frame carries sequenceFirst.
export function replicationReseal(sequenceFirst: bigint): Reseal {
  return (bytes, random) => {
    const renumber = random.chance(0.5);
    const records = random.chance(0.7);
    const chain = random.chance(0.5);
    let sequence = sequenceFirst;
    for (let at = 0; at + frameHeaderSize <= bytes.length; sequence++) {
      const end = at + frameHeaderSize + bytes.readUInt32LE(at + 12);
      if (renumber) bytes.writeBigUInt64LE(sequence, at + 16);
      if (end <= bytes.length) {
        const payload = bytes.subarray(at + frameHeaderSize, end);
        if (records && bytes.readUInt16LE(at + 6) === FrameType.records) recordsReseal(payload, chain);
        bytes.writeUInt32LE(payload.length > 0 ? crc32c(payload) : 0, at + 24);
      }
      bytes.writeUInt32LE(crc32c(bytes.subarray(at, at + 28)), at + 28);
      at = end;
    }
    return `reseal(crc${renumber ? ",sequence" : ""}${records ? (chain ? ",records+chain" : ",records") : ""})`;
  };
}
