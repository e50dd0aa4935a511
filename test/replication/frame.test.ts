// The frame codec: header layout, roundtrip, and every kind of damage (bit flips, truncation,
// random bytes, forged headers with valid checksums, lying sizes) ends in a FrameError with a
// stable reason — never another exception, never an allocation the header did not justify.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { logRecordPayloadSizeMax } from "../../src/constants.js";
import { crc32c } from "../../src/io/crc32c.js";
import { RecordKind, recordHeaderSize } from "../../src/log/record.js";
import {
  FrameEncoder,
  type FrameHeader,
  FrameType,
  frameDecode,
  frameEncode,
  frameHeaderDecode,
  frameHeaderEncode,
  frameHeaderSize,
  frameMagic,
  frameTypeRule,
  frameVersion,
  RecordsFlag,
} from "../../src/replication/frame.js";
import { FrameDecoder } from "../../src/replication/frame-decoder.js";
import { replicationFramePayloadSizeMax, replicationRegionDataSizeMax, replicationRegionsPerFrameMax } from "../../src/replication/limits.js";
import { messageDecode, messageEncode } from "../../src/replication/message.js";
import { recordsBatchHeaderSize } from "../../src/replication/records-batch.js";
import type { RegionData } from "../../src/replication/resync.js";
import { allocationSizes, chainedRecords, encodeStream, expectFrameError, frameErrorOrNothing, messageArbitrary } from "./generators.js";

// A copy of a frame with its header changed and the header checksum made valid again: what a
// buggy or hostile peer could send.
function forge(frame: Buffer, mutate: (header: Buffer) => void): Buffer {
  const copy = Buffer.from(frame);
  mutate(copy);
  copy.writeUInt32LE(crc32c(copy.subarray(0, 28)), 28);
  return copy;
}

const heartbeatFrame = encodeStream([{ kind: "heartbeat", timestampMs: 1_700_000_000_000, echoTimestampMs: 0 }])[0]!;

describe("replication frame codec", () => {
  it("lays out the header as documented", () => {
    const header = heartbeatFrame.subarray(0, frameHeaderSize);
    assert.equal(header.toString("latin1", 0, 4), "LSRP");
    assert.equal(header.readUInt32LE(0), frameMagic);
    assert.equal(header.readUInt16LE(4), frameVersion);
    assert.equal(header.readUInt16LE(6), FrameType.heartbeat);
    assert.equal(header.readUInt16LE(8), 0);
    assert.equal(header.readUInt16LE(10), 0);
    assert.equal(header.readUInt32LE(12), 16);
    assert.equal(header.readBigUInt64LE(16), 0n);
    assert.equal(header.readUInt32LE(24), crc32c(heartbeatFrame.subarray(frameHeaderSize)));
    assert.equal(header.readUInt32LE(28), crc32c(header.subarray(0, 28)));
    assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283); // the Castagnoli CRC the documentation names
  });

  it("roundtrips every message's frame, payload parts referenced and not copied", () => {
    fc.assert(
      fc.property(messageArbitrary, fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn }), (message, sequence) => {
        const { type, flags, payload } = messageEncode(message);
        const parts = frameEncode({ type, flags, sequence }, payload);
        assert.equal(parts.length, payload.length + 1);
        payload.forEach((part, index) => assert.equal(parts[index + 1], part)); // the same objects
        const target = Buffer.alloc(frameHeaderSize + 7);
        assert.equal(frameHeaderEncode({ type, flags, sequence }, payload, target), target);
        assert.deepEqual(target.subarray(0, frameHeaderSize), parts[0]);
        const bytes = Buffer.concat(parts);
        const { frame, size } = frameDecode(Buffer.concat([bytes, Buffer.from("next frame")]));
        assert.equal(size, bytes.length);
        assert.deepEqual({ type: frame.type, flags: frame.flags, sequence: frame.sequence }, { type, flags, sequence });
        assert.deepEqual(frame.payload, Buffer.concat(payload));
        assert.deepEqual(Buffer.concat(messageEncode(messageDecode(frame)).payload), Buffer.concat(payload));
      }),
      { numRuns: 400 },
    );
  });

  // FrameStream sends a frame whole (encodeWhole) to a TLS socket and as parts (encode) to a
  // WorkerLinkSocket, which copies them: the bytes on the wire must not depend on which.
  it("encodes the same bytes as parts and whole, sequence after sequence", () => {
    fc.assert(
      fc.property(fc.array(messageArbitrary, { minLength: 1, maxLength: 4 }), (messages) => {
        const parts = new FrameEncoder();
        const whole = new FrameEncoder();
        for (const message of messages) {
          const encoded = messageEncode(message);
          assert.deepEqual(Buffer.concat(parts.encode(encoded)), whole.encodeWhole(encoded));
        }
        assert.equal(parts.nextSequence, BigInt(messages.length));
      }),
      { numRuns: 200 },
    );
  });

  it("rejects any single bit flip with a FrameError", () => {
    fc.assert(
      fc.property(messageArbitrary, fc.nat(), fc.integer({ min: 0, max: 7 }), (message, at, bit) => {
        const [frame] = encodeStream([message]);
        const index = at % frame!.length;
        frame![index]! ^= 1 << bit;
        const expected = index < 4 ? "magic" : index < 6 ? "version" : index < frameHeaderSize ? "headerChecksum" : "payloadChecksum";
        if (message.kind === "records" && message.recordChecksums === true && index >= frameHeaderSize + recordsBatchHeaderSize) {
          // The frame's checksum stops at the batch header: the record the flip hit refuses it.
          const { frame: decoded } = frameDecode(frame!);
          assert.ok(["record", "lsn", "length", "field"].includes(expectFrameError(() => messageDecode(decoded, {}))));
          return;
        }
        assert.equal(expectFrameError(() => frameDecode(frame!)), expected);
      }),
      { numRuns: 3000 },
    );
  });

  it("records frames with recordChecksums: the frame checks the batch header, each record its own bytes", () => {
    const records = chainedRecords(7n, 3n, 0, [
      { fields: { ...zeroFields, kind: RecordKind.write, length: 4096 }, payload: Buffer.alloc(4096, 0x5a) },
      { fields: { ...zeroFields, kind: RecordKind.write, offset: 4096, length: 4096 }, payload: Buffer.alloc(4096, 0xa5) },
    ]);
    const [flagged] = encodeStream([{ kind: "records", records, ackNow: false, intervalEnd: false, recordChecksums: true }]);
    const [whole] = encodeStream([{ kind: "records", records, ackNow: false, intervalEnd: false }]);
    assert.equal(flagged!.readUInt16LE(8), RecordsFlag.recordChecksums);
    assert.equal(flagged!.readUInt32LE(24), crc32c(flagged!.subarray(frameHeaderSize, frameHeaderSize + recordsBatchHeaderSize)));
    assert.equal(whole!.readUInt32LE(24), crc32c(whole!.subarray(frameHeaderSize)));
    assert.deepEqual(flagged!.subarray(frameHeaderSize), whole!.subarray(frameHeaderSize)); // the same payload
    const decoded = messageDecode(frameDecode(flagged!).frame);
    assert.equal(decoded.kind === "records" && decoded.recordChecksums, true);
    const flip = (frame: Buffer, at: number) => {
      const copy = Buffer.from(frame);
      copy[at]! ^= 0x10;
      return copy;
    };
    // In the batch header (firstLsn, count, reserved): the frame checksum.
    for (const at of [0, 8, 12]) assert.equal(expectFrameError(() => frameDecode(flip(flagged!, frameHeaderSize + at))), "payloadChecksum");
    // In a record's header or payload: the frame passes, the record refuses it.
    const secondPayload = frameHeaderSize + recordsBatchHeaderSize + 2 * recordHeaderSize + 4096 + 100;
    for (const at of [frameHeaderSize + recordsBatchHeaderSize + 40, frameHeaderSize + recordsBatchHeaderSize + recordHeaderSize + 5, secondPayload]) {
      const { frame } = frameDecode(flip(flagged!, at));
      assert.equal(expectFrameError(() => messageDecode(frame)), "record");
      assert.equal(expectFrameError(() => frameDecode(flip(whole!, at))), "payloadChecksum"); // without the flag, the frame
    }
  });

  it("rejects every truncation", () => {
    fc.assert(
      fc.property(messageArbitrary, fc.nat(), (message, cut) => {
        const [frame] = encodeStream([message]);
        assert.equal(expectFrameError(() => frameDecode(frame!.subarray(0, cut % frame!.length))), "truncated");
      }),
      { numRuns: 500 },
    );
  });

  it("rejects random bytes and never allocates", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.constantFrom("raw", "magic", "crc"), (bytes, prefix) => {
        const source = Buffer.from(bytes);
        if (prefix !== "raw" && source.length >= frameHeaderSize) {
          source.writeUInt32LE(frameMagic, 0); // past the magic and version, to the checksums
          source.writeUInt16LE(frameVersion, 4);
          if (prefix === "crc") source.writeUInt32LE(crc32c(source.subarray(0, 28)), 28);
        }
        expectFrameError(() => frameDecode(source));
        assert.deepEqual(
          allocationSizes(() => frameErrorOrNothing(() => frameDecode(source))),
          [],
        );
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses forged headers (valid checksum) outside their type's rules, from the header alone", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.oneof(fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 0, max: 600 })),
        fc.constantFrom(0, 1, 2, 3),
        (type, flags, reserved, payloadSize, bias) => {
          // Bias towards known types, no reserved bits and small flags so later checks run too.
          const header = forge(Buffer.alloc(frameHeaderSize), (bytes) => {
            bytes.writeUInt32LE(frameMagic, 0);
            bytes.writeUInt16LE(frameVersion, 4);
            bytes.writeUInt16LE(bias > 0 ? (type % 9) + 1 : type, 6);
            bytes.writeUInt16LE(bias > 1 ? flags & 3 : flags, 8);
            bytes.writeUInt16LE(bias > 0 ? 0 : reserved, 10);
            bytes.writeUInt32LE(payloadSize, 12);
          });
          let decoded: FrameHeader | undefined;
          const sizes = allocationSizes(() => frameErrorOrNothing(() => (decoded = frameHeaderDecode(header))));
          assert.deepEqual(sizes, []);
          if (decoded === undefined) return;
          const rule = frameTypeRule(decoded.type);
          assert.ok(rule !== undefined && (decoded.flags & ~rule.flagsKnown) === 0);
          assert.ok(decoded.payloadSize >= rule.payloadSizeMin && decoded.payloadSize <= rule.payloadSizeMax);
        },
      ),
      { numRuns: 3000 },
    );
  });

  it("names every header reason: magic, version, headerChecksum, reserved, type, flags, size, payloadChecksum, truncated", () => {
    const frame = heartbeatFrame;
    const reason = (bytes: Buffer) => expectFrameError(() => frameDecode(bytes));
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt32LE(0x4c53_4c52, 0))), "magic");
    assert.equal(reason(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n......")), "magic");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt16LE(2, 4))), "version");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt16LE(0, 4))), "version");
    const badCrc = Buffer.from(frame);
    badCrc[28]! ^= 1;
    assert.equal(reason(badCrc), "headerChecksum");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt16LE(1, 10))), "reserved");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt16LE(0, 6))), "type");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt16LE(17, 6))), "type");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt16LE(0xffff, 6))), "type");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt16LE(1, 8))), "flags"); // heartbeat has no flags
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt32LE(15, 12))), "size"); // heartbeat is exactly 16
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt32LE(17, 12))), "size");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt32LE(0, 12))), "size");
    const badPayload = Buffer.from(frame);
    badPayload[frameHeaderSize + 3]! ^= 0x80;
    assert.equal(reason(badPayload), "payloadChecksum");
    assert.equal(reason(forge(frame, (bytes) => bytes.writeUInt32LE(0, 24))), "payloadChecksum");
    assert.equal(reason(frame.subarray(0, frameHeaderSize - 1)), "truncated");
    assert.equal(reason(frame.subarray(0, frame.length - 1)), "truncated");
    // Flags are per type: records know ackNow, intervalEnd and recordChecksums, not more.
    const records = encodeStream([{ kind: "records", records: chainedRecords(1n, 1n, 0, [{ fields: zeroFields, payload: Buffer.alloc(0) }]), ackNow: true, intervalEnd: true }])[0]!;
    assert.equal(records.readUInt16LE(8), RecordsFlag.ackNow | RecordsFlag.intervalEnd);
    assert.equal(reason(forge(records, (bytes) => bytes.writeUInt16LE(8, 8))), "flags");
  });

  it("refuses a payload size of 0xffffffff, or above a type's or the receiver's limit, before allocating", () => {
    const records = encodeStream([{ kind: "records", records: chainedRecords(1n, 1n, 0, [{ fields: zeroFields, payload: Buffer.alloc(0) }]), ackNow: false, intervalEnd: false }])[0]!;
    const claims: [Buffer, number][] = [
      [records, 0xffff_ffff],
      [records, replicationFramePayloadSizeMax + 1],
      [heartbeatFrame, 0xffff_ffff],
      [heartbeatFrame, 1 << 20],
    ];
    for (const [frame, claimed] of claims) {
      const lying = forge(frame, (bytes) => bytes.writeUInt32LE(claimed, 12));
      const decoder = new FrameDecoder();
      const sizes = allocationSizes(() => assert.equal(expectFrameError(() => decoder.push(lying.subarray(0, frameHeaderSize))), "size"));
      assert.deepEqual(sizes, []);
      assert.equal(decoder.bufferedBytes, 0);
    }
    // A receiver may lower the limit (e.g. before the handshake is done).
    const small = new FrameDecoder({ payloadSizeMax: 64 });
    assert.equal(expectFrameError(() => small.push(records)), "size");
    assert.deepEqual(new FrameDecoder({ payloadSizeMax: 128 }).push(records).length, 1);
  });

  it("carries the largest payloads: one 32 MiB record, a 4 MiB region, a full region list", () => {
    const big = Buffer.alloc(logRecordPayloadSizeMax, 0xa5);
    const write = { kind: RecordKind.write, flags: 0, volumeId: 3, offset: 1 << 30, length: big.length, generation: 1n, timestampMs: 5 };
    const region: RegionData = { kind: "regionData", volumeId: 1, offset: 0, length: replicationRegionDataSizeMax, data: Buffer.alloc(replicationRegionDataSizeMax, 7) };
    const regions = Array.from({ length: replicationRegionsPerFrameMax }, (_, index) => ({ volumeId: 2, offset: index * 1024, length: 512 }));
    const frames = encodeStream([
      { kind: "records", records: chainedRecords(0xffff_ffff_ffff_ffffn, 9n, 0, [{ fields: write, payload: big }]), ackNow: true, intervalEnd: false },
      region,
      { kind: "bitmapRegions", regions },
    ]);
    assert.equal(frames[0]!.length, frameHeaderSize + recordsBatchHeaderSize + 80 + logRecordPayloadSizeMax);
    const decoder = new FrameDecoder();
    const decoded = [];
    const stream = Buffer.concat(frames);
    for (let at = 0; at < stream.length; at += 1 << 16) decoded.push(...decoder.push(stream.subarray(at, at + (1 << 16))));
    decoder.end();
    assert.equal(decoded.length, 3);
    const records = messageDecode(decoded[0]!);
    assert.ok(records.kind === "records" && records.records.length === 1);
    assert.equal(records.records[0]!.lsn, 0xffff_ffff_ffff_ffffn);
    assert.ok(records.records[0]!.payload.equals(big));
    const data = messageDecode(decoded[1]!);
    assert.ok(data.kind === "regionData" && data.data !== null && data.data.equals(region.data!));
    const list = messageDecode(decoded[2]!);
    assert.ok(list.kind === "bitmapRegions" && list.regions.length === replicationRegionsPerFrameMax);
  });
});

const zeroFields = { kind: RecordKind.zero, flags: 0, volumeId: 1, offset: 0, length: 4096, generation: 1n, timestampMs: 0 };
