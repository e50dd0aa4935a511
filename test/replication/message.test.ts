// The message payload codecs: roundtrip of every message type, strict and canonical decoding
// (a payload that decodes re-encodes to the same bytes; anything else is a FrameError), each
// reject reason, records continuity across frames, and boundary values.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { volumeIdMax, volumeSizeMax } from "../../src/constants.js";
import { crc32c } from "../../src/io/crc32c.js";
import { RecordKind } from "../../src/log/record.js";
import { FrameError } from "../../src/replication/frame-error.js";
import { type Frame, FrameType, frameTypeRule, RegionDataFlag } from "../../src/replication/frame.js";
import { protocolVersionChoose, protocolVersionMax, protocolVersionMin } from "../../src/replication/handshake.js";
import { replicationBatchRecordsMax, replicationRegionDataSizeMax, replicationRegionsPerFrameMax } from "../../src/replication/limits.js";
import { type Message, type MessageToSend, messageDecode, messageEncode } from "../../src/replication/message.js";
import { recordsBatchHeaderSize, recordsDecode, recordsEncode } from "../../src/replication/records-batch.js";
import {
  ackArbitrary,
  acceptArbitrary,
  bitmapRegionsArbitrary,
  chainedRecords,
  expectFrameError,
  frameErrorOrNothing,
  heartbeatArbitrary,
  helloArbitrary,
  messageArbitrary,
  recordsArbitrary,
  regionDataArbitrary,
  rejectArbitrary,
  resyncEndArbitrary,
  volumeTableArbitrary,
  hashRequestArbitrary,
  hashReplyArbitrary,
  twinCatalogArbitrary,
  twinListArbitrary,
  twinListRequestArbitrary,
  twinRegionArbitrary,
  u64Max,
} from "./generators.js";

function asFrame(message: MessageToSend): Frame {
  const { type, flags, payload } = messageEncode(message);
  return { type, flags, sequence: 0n, payload: Buffer.concat(payload) };
}

// The message as plain data, for comparison: records reduced to their fields and payloads.
function comparable(message: MessageToSend | Message): unknown {
  if (message.kind !== "records") return { ...message }; // (fast-check records have a null prototype)
  return {
    ...message,
    records: message.records.map(({ kind, flags, volumeId, offset, length, lsn, generation, logId, timestampMs, previousChecksum, payload }) => ({
      kind,
      flags,
      volumeId,
      offset,
      length,
      lsn,
      generation,
      logId,
      timestampMs,
      previousChecksum,
      payload: Buffer.from(payload),
    })),
  };
}

function decodePayload(type: number, payload: Buffer, flags = 0): Message {
  return messageDecode({ type, flags, sequence: 0n, payload });
}

const hello = { kind: "hello", versionMin: 1, versionMax: 1, role: "secondary", generation: 4n, durableLsn: 100n, appliedLsn: 90n, durableChecksum: 77, node: "site-b", group: "demo" } as const;
const zeroFields = { kind: RecordKind.zero, flags: 0, volumeId: 1, offset: 0, length: 4096, generation: 1n, timestampMs: 0 };
const writeFields = (length: number) => ({ kind: RecordKind.write, flags: 0, volumeId: 1, offset: 8192, length, generation: 1n, timestampMs: 3 });

describe("replication messages", () => {
  const arbitraries = {
    hello: helloArbitrary,
    accept: acceptArbitrary,
    reject: rejectArbitrary,
    records: recordsArbitrary,
    ack: ackArbitrary,
    heartbeat: heartbeatArbitrary,
    bitmapRegions: bitmapRegionsArbitrary,
    regionData: regionDataArbitrary,
    resyncEnd: resyncEndArbitrary,
    volumeTable: volumeTableArbitrary,
    hashRequest: hashRequestArbitrary,
    hashReply: hashReplyArbitrary,
    twinListRequest: twinListRequestArbitrary,
    twinList: twinListArbitrary,
    twinCatalog: twinCatalogArbitrary,
    twinRegion: twinRegionArbitrary,
  } satisfies Record<Message["kind"], fc.Arbitrary<MessageToSend>>;

  for (const [kind, arbitrary] of Object.entries(arbitraries)) {
    it(`roundtrips ${kind}`, () => {
      fc.assert(
        fc.property(arbitrary as fc.Arbitrary<MessageToSend>, (message) => {
          const frame = asFrame(message);
          assert.equal(frame.type, FrameType[message.kind]);
          const rule = frameTypeRule(frame.type)!;
          assert.ok(frame.payload.length >= rule.payloadSizeMin && frame.payload.length <= rule.payloadSizeMax);
          assert.deepEqual(comparable(messageDecode(frame)), comparable(message));
        }),
        { numRuns: 300 },
      );
    });
  }

  it("decodes strictly and canonically: a damaged payload is a FrameError or re-encodes to the same bytes", () => {
    fc.assert(
      fc.property(messageArbitrary, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 3 }), fc.oneof({ arbitrary: fc.constant(0), weight: 4 }, { arbitrary: fc.integer({ min: -8, max: 8 }), weight: 1 }), (message, edits, resize) => {
        const frame = asFrame(message);
        const payload = Buffer.from(frame.payload);
        for (const [at, value] of edits) payload[at % payload.length] = value;
        const damaged = resize >= 0 ? Buffer.concat([payload, Buffer.alloc(resize, 0)]) : payload.subarray(0, Math.max(0, payload.length + resize));
        let decoded: Message | undefined;
        frameErrorOrNothing(() => (decoded = decodePayload(frame.type, damaged, frame.flags)));
        if (decoded === undefined) return;
        const again = messageEncode(decoded);
        assert.equal(again.flags, frame.flags);
        assert.deepEqual(Buffer.concat(again.payload), damaged);
      }),
      { numRuns: 6000 },
    );
  });

  it("decodes random payloads of every type only into FrameErrors or canonical messages", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 3 }), fc.uint8Array({ maxLength: 300 }), (type, flags, bytes) => {
        const payload = Buffer.from(bytes);
        let decoded: Message | undefined;
        frameErrorOrNothing(() => (decoded = decodePayload(type, payload, flags & frameTypeRule(type)!.flagsKnown)));
        if (decoded !== undefined) assert.deepEqual(Buffer.concat(messageEncode(decoded).payload), payload);
      }),
      { numRuns: 3000 },
    );
  });

  it("negotiates the highest common protocol version", () => {
    assert.equal(protocolVersionChoose({ versionMin: 1, versionMax: 3 }, { versionMin: 2, versionMax: 5 }), 3);
    assert.equal(protocolVersionChoose({ versionMin: 1, versionMax: 1 }, { versionMin: 1, versionMax: 1 }), 1);
    assert.equal(protocolVersionChoose({ versionMin: 1, versionMax: 2 }, { versionMin: 3, versionMax: 4 }), null);
    assert.equal(protocolVersionChoose({ versionMin: protocolVersionMin, versionMax: protocolVersionMax }, { versionMin: 1, versionMax: 0xffff }), protocolVersionMax);
  });

  it("hello: refuses bad versions, roles, LSNs, names and lengths", () => {
    const good = asFrame(hello).payload;
    const edit = (mutate: (bytes: Buffer) => void) => {
      const bytes = Buffer.from(good);
      mutate(bytes);
      return expectFrameError(() => decodePayload(FrameType.hello, bytes));
    };
    assert.deepEqual(decodePayload(FrameType.hello, good), hello);
    assert.equal(edit((bytes) => bytes.writeUInt16LE(0, 0)), "field"); // versionMin 0
    assert.equal(edit((bytes) => bytes.writeUInt16LE(2, 0)), "field"); // versionMin > versionMax
    assert.equal(edit((bytes) => bytes.writeUInt16LE(4, 4)), "field"); // unknown role
    assert.equal(edit((bytes) => bytes.writeUInt16LE(1, 6)), "field"); // reserved
    assert.equal(edit((bytes) => bytes.writeBigUInt64LE(101n, 24)), "field"); // applied > durable
    assert.equal(edit((bytes) => bytes.writeUInt16LE(3, 4)), "field"); // a bunker with applied LSNs
    const noDurable = (bytes: Buffer) => {
      bytes.writeBigUInt64LE(0n, 16);
      bytes.writeBigUInt64LE(0n, 24);
    };
    assert.equal(edit(noDurable), "field"); // no durable LSN, but a checksum of its record
    assert.equal(edit((bytes) => (bytes[37] = "-".charCodeAt(0))), "name"); // node starts with '-'
    assert.equal(edit((bytes) => (bytes[38] = "/".charCodeAt(0))), "name");
    assert.equal(edit((bytes) => (bytes[36] = 0)), "name"); // empty node name
    assert.equal(edit((bytes) => (bytes[36] = 200)), "length"); // longer than the payload
    assert.equal(expectFrameError(() => decodePayload(FrameType.hello, Buffer.concat([good, Buffer.from([0])]))), "length");
    const long = Buffer.concat([good.subarray(0, 36), Buffer.from([65]), Buffer.alloc(65, 97), good.subarray(43)]);
    assert.equal(expectFrameError(() => decodePayload(FrameType.hello, long)), "name"); // 65 bytes
    assert.ok(asFrame({ ...hello, node: "n".repeat(64), generation: u64Max, durableLsn: u64Max, appliedLsn: u64Max }).payload.length <= frameTypeRule(FrameType.hello)!.payloadSizeMax);
  });

  it("accept and reject: refuse unknown values and reserved bits", () => {
    const accept = asFrame({ kind: "accept", protocolVersion: 1, start: "resync", resumeLsn: 5n, previousChecksum: 0, logId: 9n, intervals: false }).payload;
    const edit = (type: number, source: Buffer, mutate: (bytes: Buffer) => void) => {
      const bytes = Buffer.from(source);
      mutate(bytes);
      return expectFrameError(() => decodePayload(type, bytes));
    };
    assert.equal(edit(FrameType.accept, accept, (bytes) => bytes.writeUInt16LE(0, 0)), "field");
    assert.equal(edit(FrameType.accept, accept, (bytes) => bytes.writeUInt16LE(3, 2)), "field");
    assert.equal(edit(FrameType.accept, accept, (bytes) => bytes.writeBigUInt64LE(0n, 8)), "field");
    assert.equal(edit(FrameType.accept, accept, (bytes) => bytes.writeUInt32LE(2, 24)), "field");
    assert.equal(edit(FrameType.accept, accept, (bytes) => bytes.writeUInt32LE(1, 28)), "field");
    const reject = asFrame({ kind: "reject", reason: "staleGeneration", text: "generation 3 < 4" }).payload;
    assert.deepEqual(decodePayload(FrameType.reject, reject), { kind: "reject", reason: "staleGeneration", text: "generation 3 < 4" });
    assert.equal(reject.readUInt16LE(0), 5);
    assert.equal(edit(FrameType.reject, reject, (bytes) => bytes.writeUInt16LE(0, 0)), "field");
    assert.equal(edit(FrameType.reject, reject, (bytes) => bytes.writeUInt16LE(99, 0)), "field");
    assert.equal(edit(FrameType.reject, reject, (bytes) => (bytes[6] = 0x0a)), "field"); // not printable
    assert.equal(edit(FrameType.reject, reject, (bytes) => bytes.writeUInt16LE(15, 2)), "length"); // trailing byte
    assert.equal(edit(FrameType.reject, reject, (bytes) => bytes.writeUInt16LE(17, 2)), "length");
  });

  it("ack, heartbeat, resyncEnd: exact sizes, ordered LSNs, times within 2^53, u64 maxima", () => {
    const top = { kind: "ack", receivedLsn: u64Max, durableLsn: u64Max, appliedLsn: u64Max, consistent: true } as const;
    assert.deepEqual(messageDecode(asFrame(top)), top);
    const ack = asFrame({ kind: "ack", receivedLsn: 10n, durableLsn: 9n, appliedLsn: 8n, consistent: false }).payload;
    const swap = (first: number, second: number) => {
      const bytes = Buffer.from(ack);
      bytes.writeBigUInt64LE(ack.readBigUInt64LE(second), first);
      bytes.writeBigUInt64LE(ack.readBigUInt64LE(first), second);
      return expectFrameError(() => decodePayload(FrameType.ack, bytes));
    };
    assert.equal(swap(0, 8), "field"); // durable > received
    assert.equal(swap(8, 16), "field"); // applied > durable
    assert.equal(expectFrameError(() => decodePayload(FrameType.ack, ack.subarray(0, 23))), "length");
    const beat = asFrame({ kind: "heartbeat", timestampMs: Number.MAX_SAFE_INTEGER, echoTimestampMs: 0 }).payload;
    assert.deepEqual(decodePayload(FrameType.heartbeat, beat), { kind: "heartbeat", timestampMs: Number.MAX_SAFE_INTEGER, echoTimestampMs: 0 });
    const late = Buffer.from(beat);
    late.writeBigUInt64LE(BigInt(Number.MAX_SAFE_INTEGER) + 1n, 0);
    assert.equal(expectFrameError(() => decodePayload(FrameType.heartbeat, late)), "field");
    const end = { kind: "resyncEnd", consistentLsn: u64Max } as const;
    assert.deepEqual(messageDecode(asFrame(end)), end);
    assert.equal(expectFrameError(() => decodePayload(FrameType.resyncEnd, Buffer.alloc(9))), "length");
  });

  it("bitmapRegions: refuses zero, unaligned, oversized, overlapping and unordered regions", () => {
    const list = (...regions: [number, number, number][]) => {
      const bytes = Buffer.alloc(8 + 24 * regions.length);
      bytes.writeUInt32LE(regions.length, 0);
      regions.forEach(([volumeId, offset, length], index) => {
        bytes.writeUInt32LE(volumeId, 8 + 24 * index);
        bytes.writeBigUInt64LE(BigInt(offset), 16 + 24 * index);
        bytes.writeBigUInt64LE(BigInt(length), 24 + 24 * index);
      });
      return bytes;
    };
    const reason = (bytes: Buffer) => expectFrameError(() => decodePayload(FrameType.bitmapRegions, bytes));
    const edge = volumeSizeMax - 512;
    assert.deepEqual(decodePayload(FrameType.bitmapRegions, list([0, 0, 512], [0, 512, 512], [volumeIdMax, edge, 512])), {
      kind: "bitmapRegions",
      regions: [
        { volumeId: 0, offset: 0, length: 512 },
        { volumeId: 0, offset: 512, length: 512 },
        { volumeId: volumeIdMax, offset: edge, length: 512 },
      ],
    });
    assert.equal(reason(list([0, 0, 0])), "field");
    assert.equal(reason(list([0, 1, 512])), "field");
    assert.equal(reason(list([0, 0, 500])), "field");
    assert.equal(reason(list([volumeIdMax + 1, 0, 512])), "field");
    assert.equal(reason(list([0, edge, 1024])), "field"); // past the largest volume
    assert.equal(reason(list([0, 0, 1024], [0, 512, 512])), "field"); // overlap
    assert.equal(reason(list([1, 0, 512], [0, 0, 512])), "field"); // volumes out of order
    assert.equal(reason(list([0, 1024, 512], [0, 0, 512])), "field"); // offsets out of order
    assert.equal(reason(list()), "field"); // empty
    const reserved = list([0, 0, 512]);
    reserved.writeUInt32LE(1, 12);
    assert.equal(reason(reserved), "field");
    const miscounted = list([0, 0, 512], [0, 512, 512]);
    miscounted.writeUInt32LE(3, 0);
    assert.equal(reason(miscounted), "length");
    const huge = list([0, 0, 512]);
    huge.writeBigUInt64LE(u64Max, 16);
    assert.equal(reason(huge), "field");
    const tooMany = Buffer.alloc(8);
    tooMany.writeUInt32LE(replicationRegionsPerFrameMax + 1, 0);
    assert.equal(reason(tooMany), "field");
  });

  it("regionData: data length matches, the zero flag carries no data, pieces stay within limits", () => {
    const piece = { kind: "regionData", volumeId: 2, offset: volumeSizeMax - 1024, length: 1024, data: Buffer.alloc(1024, 9) } as const;
    const frame = asFrame(piece);
    assert.deepEqual(messageDecode(frame), piece);
    const zero = asFrame({ ...piece, data: null });
    assert.equal(zero.flags, RegionDataFlag.zero);
    assert.equal(zero.payload.length, 16);
    assert.equal(expectFrameError(() => decodePayload(FrameType.regionData, frame.payload, RegionDataFlag.zero)), "length"); // data with the flag
    assert.equal(expectFrameError(() => decodePayload(FrameType.regionData, zero.payload)), "length"); // no data without it
    const edit = (mutate: (bytes: Buffer) => void, flags = 0) => {
      const bytes = Buffer.from(flags === 0 ? frame.payload : zero.payload);
      mutate(bytes);
      return expectFrameError(() => decodePayload(FrameType.regionData, bytes, flags));
    };
    assert.equal(edit((bytes) => bytes.writeUInt32LE(volumeIdMax + 1, 0)), "field");
    assert.equal(edit((bytes) => bytes.writeBigUInt64LE(BigInt(volumeSizeMax), 8)), "field");
    assert.equal(edit((bytes) => bytes.writeBigUInt64LE(3n, 8)), "field");
    assert.equal(edit((bytes) => bytes.writeUInt32LE(0, 4), RegionDataFlag.zero), "field");
    assert.equal(edit((bytes) => bytes.writeUInt32LE(replicationRegionDataSizeMax + 512, 4), RegionDataFlag.zero), "field");
    assert.deepEqual(decodePayload(FrameType.regionData, (() => {
      const bytes = Buffer.from(zero.payload);
      bytes.writeUInt32LE(replicationRegionDataSizeMax, 4);
      bytes.writeBigUInt64LE(0n, 8);
      return bytes;
    })(), RegionDataFlag.zero), { kind: "regionData", volumeId: 2, offset: 0, length: replicationRegionDataSizeMax, data: null });
  });

  it("records: consecutive LSNs from firstLsn, chained, one log, no wrap markers, nothing trailing", () => {
    const records = chainedRecords(7n, 42n, 1234, [
      { fields: writeFields(5), payload: Buffer.from("hello") },
      { fields: zeroFields, payload: Buffer.alloc(0) },
      { fields: writeFields(0), payload: Buffer.alloc(0) },
    ]);
    const payload = Buffer.concat(recordsEncode(records));
    assert.equal(payload.length, recordsBatchHeaderSize + 3 * 80 + 5);
    const decoded = recordsDecode(payload, { firstLsn: 7n, previousChecksum: 1234, logId: 42n });
    assert.deepEqual(decoded.map((record) => record.lsn), [7n, 8n, 9n]);
    assert.equal(decoded[0]!.payload.toString(), "hello");
    assert.equal(decoded[0]!.payload.buffer, payload.buffer); // a view, not a copy
    const reason = (bytes: Buffer, expected = {}) => expectFrameError(() => recordsDecode(bytes, expected));
    // What the receiver expects next: a gap, a duplicate, a broken chain, another log.
    assert.equal(reason(payload, { firstLsn: 6n }), "lsn");
    assert.equal(reason(payload, { firstLsn: 8n }), "lsn");
    assert.equal(reason(payload, { previousChecksum: 1 }), "record");
    assert.equal(reason(payload, { logId: 43n }), "record");
    const edit = (mutate: (bytes: Buffer) => void) => {
      const bytes = Buffer.from(payload);
      mutate(bytes);
      return reason(bytes);
    };
    assert.equal(edit((bytes) => bytes.writeBigUInt64LE(8n, 0)), "lsn"); // records say 7, header 8
    assert.equal(edit((bytes) => bytes.writeBigUInt64LE(0n, 0)), "lsn");
    assert.equal(edit((bytes) => bytes.writeBigUInt64LE(u64Max - 1n, 0)), "lsn"); // 3 records past 2^64-1
    assert.equal(edit((bytes) => bytes.writeUInt32LE(2, 8)), "length"); // one record trailing
    assert.equal(edit((bytes) => bytes.writeUInt32LE(4, 8)), "length"); // one record missing
    assert.equal(edit((bytes) => bytes.writeUInt32LE(0, 8)), "field");
    assert.equal(edit((bytes) => bytes.writeUInt32LE(replicationBatchRecordsMax + 1, 8)), "field");
    assert.equal(edit((bytes) => bytes.writeUInt32LE(1, 12)), "field");
    assert.equal(edit((bytes) => (bytes[16 + 80 + 2] ^= 1)), "record"); // payload damaged: the record's checksum
    assert.equal(edit((bytes) => bytes.writeUInt32LE(1 << 20, 16 + 16)), "length"); // a record claims more than the frame
    assert.equal(reason(Buffer.concat([payload, Buffer.alloc(1)])), "length");
    // Records out of order, or from two logs, encoded by a buggy sender: each a valid record.
    const swapped = [...recordsEncode([records[1]!]), ...recordsEncode([records[0]!]).slice(1)];
    const twoRecords = Buffer.concat(swapped);
    twoRecords.writeUInt32LE(2, 8);
    assert.equal(reason(twoRecords), "lsn");
    const otherLog = chainedRecords(8n, 43n, records[0]!.checksum!, [{ fields: zeroFields, payload: Buffer.alloc(0) }]);
    const mixed = Buffer.concat([...recordsEncode([records[0]!]), ...recordsEncode(otherLog).slice(1)]);
    mixed.writeUInt32LE(2, 8);
    assert.equal(reason(mixed), "record");
    const unchained = chainedRecords(8n, 42n, 999, [{ fields: zeroFields, payload: Buffer.alloc(0) }]);
    const broken = Buffer.concat([...recordsEncode([records[0]!]), ...recordsEncode(unchained).slice(1)]);
    broken.writeUInt32LE(2, 8);
    assert.equal(reason(broken), "record");
    // A wrap marker is placement in one file, never part of the stream: a well-formed wrap
    // record (valid checksum and fields) is still refused.
    const blank = { kind: RecordKind.zero, flags: 0, volumeId: 0, offset: 0, length: 0, generation: 1n, timestampMs: 0 };
    const wrap = Buffer.concat(recordsEncode(chainedRecords(7n, 42n, 0, [{ fields: blank, payload: Buffer.alloc(0) }])));
    wrap.writeUInt16LE(RecordKind.wrap, 16 + 10);
    wrap.writeUInt32LE(crc32c(wrap.subarray(16 + 4, 16 + 80)), 16);
    try {
      recordsDecode(wrap);
      assert.fail("a wrap marker was accepted");
    } catch (error) {
      assert.ok(error instanceof FrameError && error.reason === "record");
      assert.equal(typeof error.detail === "object" && error.detail.recordReason, "kind");
    }
  });

  it("records: the largest batch in count, and LSNs up to 2^64-1", () => {
    const shapes = Array.from({ length: replicationBatchRecordsMax }, () => ({ fields: zeroFields, payload: Buffer.alloc(0) }));
    const first = u64Max - BigInt(replicationBatchRecordsMax) + 1n;
    const message = { kind: "records", records: chainedRecords(first, 1n, 0, shapes), ackNow: false, intervalEnd: true } as const;
    const decoded = messageDecode(asFrame(message));
    assert.ok(decoded.kind === "records" && decoded.intervalEnd && !decoded.ackNow);
    assert.equal(decoded.records.length, replicationBatchRecordsMax);
    assert.equal(decoded.records.at(-1)!.lsn, u64Max);
  });
});

