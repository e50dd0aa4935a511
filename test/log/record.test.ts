// The record codec: roundtrip, and every kind of damage (bit flips, truncation, random bytes,
// lying lengths) ends in OperatingError LOG_CORRUPT, never another exception, and decoding
// never allocates.

import { allocationSizes } from "../allocations.js";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { logRecordPayloadSizeMax } from "../../src/constants.js";
import { OperatingError } from "../../src/errors.js";
import { crc32c } from "../../src/io/crc32c.js";
import {
  logCorruptReason,
  type RecordFields,
  RecordFlag,
  RecordKind,
  recordDecode,
  recordDiskSize,
  recordEncode,
  recordHeaderDecode,
  recordHeaderEncode,
  recordHeaderSize,
} from "../../src/log/record.js";

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u64 = fc.bigInt({ min: 0n, max: 0xffff_ffff_ffff_ffffn });

// A record's fields and payload that agree with each other.
const recordArbitrary = fc
  .record({
    kind: fc.oneof(fc.constantFrom(RecordKind.write, RecordKind.zero, RecordKind.trim, RecordKind.snapshotWrite, RecordKind.snapshotZero, RecordKind.wrap), fc.integer({ min: 0x100, max: 0xffff })),
    fua: fc.boolean(),
    volumeId: u32,
    offset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    length: u32,
    lsn: fc.bigInt({ min: 1n, max: 0xffff_ffff_ffff_ffffn }),
    generation: u64,
    logId: u64,
    timestampMs: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    previousChecksum: u32,
    payload: fc.uint8Array({ maxLength: 3000 }),
  })
  .map(({ kind, fua, payload, ...rest }) => {
    const bytes = Buffer.from(payload);
    const fields: RecordFields = { ...rest, kind, flags: fua ? RecordFlag.fua : 0 };
    if (kind === RecordKind.write) return { fields: { ...fields, length: bytes.length }, payload: bytes };
    if (kind === RecordKind.zero || kind === RecordKind.trim) return { fields, payload: Buffer.alloc(0) };
    if (kind === RecordKind.wrap) return { fields: { ...fields, flags: 0, volumeId: 0, offset: 0, length: 0 }, payload: Buffer.alloc(0) };
    if (kind === RecordKind.snapshotWrite) return { fields: { ...fields, length: bytes.length }, payload: Buffer.concat([Buffer.from([4]), Buffer.from("snap"), bytes]) };
    if (kind === RecordKind.snapshotZero) return { fields, payload: Buffer.concat([Buffer.from([4]), Buffer.from("snap")]) };
    return { fields, payload: bytes };
  });

function expectCorrupt(action: () => unknown): string {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof OperatingError, `not an OperatingError: ${String(error)}`);
    assert.equal(error.code, "LOG_CORRUPT");
    const reason = logCorruptReason(error);
    assert.ok(reason !== null);
    return reason;
  }
  assert.fail("decoded damaged bytes without an error");
}

// Counts Buffer allocations while `action` runs.
function allocations(action: () => void): number {
  return allocationSizes(action).length;
}

function tryDecode(source: Buffer): void {
  try {
    recordDecode(source);
  } catch (error) {
    if (!(error instanceof OperatingError)) throw error;
  }
}

describe("log record codec", () => {
  it("roundtrips every valid record, padded to 512 bytes", () => {
    fc.assert(
      fc.property(recordArbitrary, ({ fields, payload }) => {
        const { record, checksum } = recordEncode(fields, payload);
        assert.equal(record.length, recordDiskSize(payload.length));
        assert.equal(record.length % 512, 0);
        const decoded = recordDecode(record, { lsn: fields.lsn, logId: fields.logId, previousChecksum: fields.previousChecksum });
        assert.equal(decoded.checksum, checksum);
        assert.equal(decoded.payloadSize, payload.length);
        assert.deepEqual(Buffer.from(decoded.payload), payload);
        for (const key of Object.keys(fields) as (keyof RecordFields)[]) assert.equal(decoded[key], fields[key], key);
      }),
      { numRuns: 500 },
    );
  });

  it("writes the header apart from the payload, without copying it", () => {
    fc.assert(
      fc.property(recordArbitrary, ({ fields, payload }) => {
        const { header, checksum } = recordHeaderEncode(fields, payload);
        assert.equal(header.length, recordHeaderSize);
        const { record, checksum: whole } = recordEncode(fields, payload);
        assert.equal(checksum, whole);
        const padding = Buffer.alloc(record.length - recordHeaderSize - payload.length);
        assert.deepEqual(Buffer.concat([header, payload, padding]), record);
      }),
      { numRuns: 200 },
    );
  });

  it("rejects any single bit flip in the checked bytes with LOG_CORRUPT", () => {
    fc.assert(
      fc.property(recordArbitrary, fc.nat(), fc.integer({ min: 0, max: 7 }), ({ fields, payload }, at, bit) => {
        const { record } = recordEncode(fields, payload);
        const index = at % (recordHeaderSize + payload.length);
        record[index]! ^= 1 << bit;
        expectCorrupt(() => recordDecode(record));
      }),
      { numRuns: 2000 },
    );
  });

  it("rejects every truncation with LOG_CORRUPT", () => {
    fc.assert(
      fc.property(recordArbitrary, fc.nat(), ({ fields, payload }, cut) => {
        const { record } = recordEncode(fields, payload);
        const length = cut % (recordHeaderSize + payload.length);
        const reason = expectCorrupt(() => recordDecode(record.subarray(0, length)));
        assert.ok(["header", "size"].includes(reason), reason);
      }),
      { numRuns: 1000 },
    );
  });

  it("rejects random bytes with LOG_CORRUPT and never allocates", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), fc.boolean(), (bytes, withMagic) => {
        const source = Buffer.from(bytes);
        if (withMagic && source.length >= 12) {
          source.writeUInt32LE(0x524c_534c, 4); // get past the magic to the size and checksum checks
          source.writeUInt16LE(1, 8);
        }
        expectCorrupt(() => recordDecode(source));
        assert.equal(allocations(() => tryDecode(source)), 0);
      }),
      { numRuns: 2000 },
    );
  });

  it("refuses a payload size beyond the limit or the bytes given, before reading further", () => {
    const { record } = recordEncode(
      { kind: RecordKind.write, flags: 0, volumeId: 1, offset: 0, length: 512, lsn: 1n, generation: 1n, logId: 7n, timestampMs: 0, previousChecksum: 0 },
      Buffer.alloc(512, 1),
    );
    for (const claimed of [0xffff_ffff, logRecordPayloadSizeMax + 1, 1024]) {
      const lying = Buffer.from(record);
      lying.writeUInt32LE(claimed, 16);
      assert.equal(expectCorrupt(() => recordDecode(lying)), "size");
      assert.equal(allocations(() => tryDecode(lying)), 0);
    }
    const header = Buffer.from(record.subarray(0, recordHeaderSize));
    header.writeUInt32LE(logRecordPayloadSizeMax + 1, 16);
    assert.equal(expectCorrupt(() => recordHeaderDecode(header)), "size");
  });

  it("names the reason: magic, version, kind, field, log, lsn, chain, empty", () => {
    const fields: RecordFields = { kind: RecordKind.zero, flags: 0, volumeId: 2, offset: 4096, length: 8192, lsn: 9n, generation: 3n, logId: 11n, timestampMs: 5, previousChecksum: 1234 };
    const { record } = recordEncode(fields);
    assert.equal(expectCorrupt(() => recordDecode(record, { logId: 12n })), "log");
    assert.equal(expectCorrupt(() => recordDecode(record, { lsn: 10n })), "lsn");
    assert.equal(expectCorrupt(() => recordDecode(record, { previousChecksum: 1 })), "chain");
    assert.equal(expectCorrupt(() => recordDecode(Buffer.alloc(512))), "empty");
    const magic = Buffer.from(record);
    magic[4]! ^= 0xff;
    assert.equal(expectCorrupt(() => recordDecode(magic)), "magic");
    const version = Buffer.from(record);
    version.writeUInt16LE(2, 8);
    assert.equal(expectCorrupt(() => recordDecode(version)), "version");
    // Valid checksums over bad fields: what a buggy or hostile writer could produce.
    const reencode = (mutate: (bytes: Buffer) => void): Buffer => {
      const bytes = Buffer.from(record);
      mutate(bytes);
      bytes.writeUInt32LE(crc32c(bytes.subarray(4, recordHeaderSize)), 0);
      return bytes;
    };
    assert.equal(expectCorrupt(() => recordDecode(reencode((bytes) => bytes.writeUInt16LE(6, 10)))), "kind");
    assert.equal(expectCorrupt(() => recordDecode(reencode((bytes) => bytes.writeUInt16LE(0x8000, 12)))), "field");
    assert.equal(expectCorrupt(() => recordDecode(reencode((bytes) => bytes.writeUInt16LE(1, 14)))), "field");
  });
});
