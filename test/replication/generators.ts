// Shared by the replication codec tests: fast-check arbitraries for every message (valid by
// construction), frame helpers, and the checks every damaged input must pass — a FrameError
// with a reason, never another exception, and no allocation beyond what a checked header
// announced.

export { allocationSizes } from "../allocations.js";
import assert from "node:assert/strict";
import fc from "fast-check";
import { once } from "node:events";
import { type AddressInfo, connect, createServer, type Socket } from "node:net";
import { sectorSize, volumeIdMax, volumeSizeMax } from "../../src/constants.js";
import { type RecordFields, RecordKind, recordHeaderEncode } from "../../src/log/record.js";
import { type Frame, FrameEncoder, frameEncode } from "../../src/replication/frame.js";
import { FrameError, type FrameErrorReason } from "../../src/replication/frame-error.js";
import type { Accept, Hello, Reject } from "../../src/replication/handshake.js";
import { type MessageToSend, messageEncode } from "../../src/replication/message.js";
import type { Ack, Heartbeat } from "../../src/replication/progress.js";
import type { RecordToSend } from "../../src/replication/records-batch.js";
import type { BitmapRegions, RegionData, ResyncEnd, VolumeRegion } from "../../src/replication/resync.js";
import type { VolumeTable } from "../../src/replication/volume-table.js";
import type { HashReply, HashRequest } from "../../src/replication/verify-hashes.js";
import type { CatalogTwin, TwinCatalog, TwinList, TwinListRequest, TwinRegion } from "../../src/replication/twins.js";

export const u64Max = 0xffff_ffff_ffff_ffffn;
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const u64 = fc.oneof(fc.bigInt({ min: 0n, max: u64Max }), fc.constantFrom(0n, 1n, u64Max));
const safe = fc.oneof(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), fc.constantFrom(0, Number.MAX_SAFE_INTEGER));

export const nameArbitrary = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/);

export const helloArbitrary: fc.Arbitrary<Hello> = fc
  .record({
    versionMin: fc.integer({ min: 1, max: 0xffff }),
    versionSpan: fc.integer({ min: 0, max: 0xffff }),
    role: fc.constantFrom("primary", "secondary", "bunker" as const),
    generation: u64,
    durableLsn: u64,
    appliedFraction: fc.bigInt({ min: 0n, max: 1000n }),
    durableChecksum: u32,
    node: nameArbitrary,
    group: nameArbitrary,
  })
  .map(({ versionMin, versionSpan, appliedFraction, ...rest }) => ({
    kind: "hello" as const,
    ...rest,
    versionMin,
    versionMax: Math.min(0xffff, versionMin + versionSpan),
    appliedLsn: rest.role === "bunker" ? 0n : (rest.durableLsn * appliedFraction) / 1000n,
    durableChecksum: rest.durableLsn === 0n ? 0 : rest.durableChecksum,
  }));

export const acceptArbitrary: fc.Arbitrary<Accept> = fc.record({
  kind: fc.constant("accept" as const),
  protocolVersion: fc.integer({ min: 1, max: 0xffff }),
  start: fc.constantFrom("log", "resync" as const),
  resumeLsn: fc.bigInt({ min: 1n, max: u64Max }),
  previousChecksum: fc.integer({ min: 0, max: 0xffff_ffff }),
  logId: fc.bigInt({ min: 0n, max: u64Max }),
  intervals: fc.boolean(),
});

export const rejectArbitrary: fc.Arbitrary<Reject> = fc.record({
  kind: fc.constant("reject" as const),
  reason: fc.constantFrom(
    "versionMismatch",
    "unknownGroup",
    "notConfiguredPrimary",
    "notConfiguredPeer",
    "staleGeneration",
    "roleConflict",
    "linkBusy",
    "shuttingDown",
    "protocolError" as const,
  ),
  text: fc.stringMatching(/^[ -~]{0,256}$/),
});

// A chain of consecutive records of one log, as the log would hold them.
export function chainedRecords(firstLsn: bigint, logId: bigint, previousChecksum: number, shapes: readonly RecordShape[]): RecordToSend[] {
  const records: RecordToSend[] = [];
  let previous = previousChecksum;
  shapes.forEach((shape, index) => {
    const fields: RecordFields = { ...shape.fields, lsn: firstLsn + BigInt(index), logId, previousChecksum: previous };
    const { checksum } = recordHeaderEncode(fields, shape.payload);
    records.push({ ...fields, payload: shape.payload, checksum });
    previous = checksum;
  });
  return records;
}

interface RecordShape {
  fields: Omit<RecordFields, "lsn" | "logId" | "previousChecksum">;
  payload: Buffer;
}

const recordShapeArbitrary: fc.Arbitrary<RecordShape> = fc
  .record({
    kind: fc.oneof(fc.constantFrom(RecordKind.write, RecordKind.zero, RecordKind.trim), fc.integer({ min: 0x100, max: 0xffff })),
    flags: fc.constantFrom(0, 1, 2, 3),
    volumeId: u32,
    offset: safe,
    length: u32,
    generation: u64,
    timestampMs: safe,
    payload: fc.uint8Array({ maxLength: 600 }),
  })
  .map(({ payload, ...fields }) => {
    const bytes = Buffer.from(payload);
    if (fields.kind === RecordKind.write) return { fields: { ...fields, length: bytes.length }, payload: bytes };
    if (fields.kind === RecordKind.zero || fields.kind === RecordKind.trim) return { fields, payload: Buffer.alloc(0) };
    return { fields, payload: bytes };
  });

export const recordsArbitrary: fc.Arbitrary<MessageToSend & { kind: "records" }> = fc
  .record({
    shapes: fc.array(recordShapeArbitrary, { minLength: 1, maxLength: 6 }),
    firstLsn: fc.oneof(fc.bigInt({ min: 1n, max: u64Max }), fc.constant(1n)),
    logId: u64,
    previousChecksum: u32,
    ackNow: fc.boolean(),
    intervalEnd: fc.boolean(),
    recordChecksums: fc.boolean(),
  })
  .map(({ shapes, firstLsn, logId, previousChecksum, ackNow, intervalEnd, recordChecksums }) => {
    const first = firstLsn + BigInt(shapes.length - 1) > u64Max ? u64Max - BigInt(shapes.length - 1) : firstLsn;
    return { kind: "records" as const, records: chainedRecords(first, logId, previousChecksum, shapes), ackNow, intervalEnd, recordChecksums };
  });

export const ackArbitrary: fc.Arbitrary<Ack> = fc.tuple(fc.array(u64, { minLength: 3, maxLength: 3 }), fc.boolean()).map(([values, consistent]) => {
  const [appliedLsn, durableLsn, receivedLsn] = [...values].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)) as [bigint, bigint, bigint];
  return { kind: "ack", receivedLsn, durableLsn, appliedLsn, consistent };
});

export const heartbeatArbitrary: fc.Arbitrary<Heartbeat> = fc.record({ kind: fc.constant("heartbeat" as const), timestampMs: safe, echoTimestampMs: safe });

const sectorsMax = volumeSizeMax / sectorSize;

export const bitmapRegionsArbitrary: fc.Arbitrary<BitmapRegions> = fc
  .array(
    fc.record({
      volumeStep: fc.integer({ min: 0, max: 3 }),
      gapSectors: fc.oneof(fc.integer({ min: 0, max: 4096 }), fc.integer({ min: 0, max: sectorsMax / 64 })),
      lengthSectors: fc.oneof(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: sectorsMax / 64 })),
    }),
    { minLength: 1, maxLength: 40 },
  )
  .map((steps) => {
    const regions: VolumeRegion[] = [];
    let volumeId = 0;
    let end = 0;
    for (const step of steps) {
      if (step.volumeStep > 0 || end + (step.gapSectors + step.lengthSectors) * sectorSize > volumeSizeMax) {
        volumeId = Math.min(volumeIdMax, volumeId + Math.max(1, step.volumeStep));
        end = 0;
        if (regions.at(-1)?.volumeId === volumeId) break; // volumeIdMax reached
      }
      const offset = end + step.gapSectors * sectorSize;
      const length = step.lengthSectors * sectorSize;
      regions.push({ volumeId, offset, length });
      end = offset + length;
    }
    return { kind: "bitmapRegions" as const, regions };
  });

export const regionDataArbitrary: fc.Arbitrary<RegionData> = fc
  .record({
    volumeId: fc.integer({ min: 0, max: volumeIdMax }),
    offsetSectors: fc.integer({ min: 0, max: sectorsMax - 1024 }),
    zero: fc.boolean(),
    lengthSectors: fc.integer({ min: 1, max: 4 }),
    fill: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  })
  .map(({ volumeId, offsetSectors, zero, lengthSectors, fill }) => {
    const length = lengthSectors * sectorSize;
    const data = zero ? null : Buffer.from(Array.from({ length }, (_, index) => fill[index % fill.length]!));
    return { kind: "regionData" as const, volumeId, offset: offsetSectors * sectorSize, length, data };
  });

export const resyncEndArbitrary: fc.Arbitrary<ResyncEnd> = fc.record({ kind: fc.constant("resyncEnd" as const), consistentLsn: u64 });

export const volumeTableArbitrary: fc.Arbitrary<VolumeTable> = fc
  .uniqueArray(fc.record({ volumeId: fc.integer({ min: 1, max: 2 ** 20 - 1 }), name: nameArbitrary, size: fc.integer({ min: 1, max: 2 ** 41 }).map((sectors) => sectors * 512) }), { maxLength: 8, selector: (entry) => entry.name })
  .map((entries) => {
    const ids = [...new Set(entries.map((entry) => entry.volumeId))].sort((a, b) => a - b);
    return entries.slice(0, ids.length).map((entry, index) => ({ ...entry, volumeId: ids[index]! }));
  })
  .chain((volumes) => fc.record({ kind: fc.constant("volumeTable" as const), atLsn: u64, volumes: fc.constant(volumes) }));

export const hashRequestArbitrary: fc.Arbitrary<HashRequest> = fc
  .record({ requestId: fc.nat({ max: 0xffff_ffff }), volumeId: fc.integer({ min: 0, max: 2 ** 20 - 1 }), regionShift: fc.integer({ min: 9, max: 26 }), count: fc.integer({ min: 1, max: 16 }), index: fc.nat({ max: 2 ** 20 }), snapshot: fc.option(fc.stringMatching(/^[A-Za-z0-9~][A-Za-z0-9_.-]{0,63}$/), { nil: null }) })
  .map(({ requestId, volumeId, regionShift, count, index, snapshot }) => ({ kind: "hashRequest" as const, requestId, volumeId, regionBytes: 2 ** regionShift, count, offset: index * 2 ** regionShift, snapshot }));

export const hashReplyArbitrary: fc.Arbitrary<HashReply> = fc
  .record({ requestId: fc.nat({ max: 0xffff_ffff }), count: fc.integer({ min: 0, max: 16 }) })
  .chain(({ requestId, count }) => fc.uint8Array({ minLength: count * 16, maxLength: count * 16 }).map((bytes) => ({ kind: "hashReply" as const, requestId, digests: Buffer.from(bytes) })));

export const twinListRequestArbitrary: fc.Arbitrary<TwinListRequest> = fc.record({ kind: fc.constant("twinListRequest" as const), requestId: u32, volumeId: fc.integer({ min: 0, max: volumeIdMax }) });

// A snapshot tree of one volume, parents before children.
const twinsArbitrary: fc.Arbitrary<CatalogTwin[]> = fc
  .uniqueArray(nameArbitrary, { maxLength: 8 })
  .chain((names) =>
    fc.tuple(
      ...names.map((name, index) =>
        fc.record({
          name: fc.constant(name),
          parent: index === 0 ? fc.constant(null) : fc.option(fc.constantFrom(...names.slice(0, index)), { nil: null }),
          writable: fc.boolean(),
          size: fc.integer({ min: 1, max: volumeSizeMax / sectorSize }).map((sectors) => sectors * sectorSize),
          createdLsn: u64,
          build: fc.boolean(),
        }),
      ),
    ).map((twins) => twins.map((twin) => ({ ...twin }))), // plain objects (fast-check records have a null prototype)
  );

export const twinListArbitrary: fc.Arbitrary<TwinList> = fc
  .record({ requestId: u32, volumeId: fc.integer({ min: 0, max: volumeIdMax }), twins: twinsArbitrary })
  .map(({ requestId, volumeId, twins }) => ({ kind: "twinList" as const, requestId, volumeId, twins: twins.map(({ build: _build, ...twin }) => twin) }));

export const twinCatalogArbitrary: fc.Arbitrary<TwinCatalog> = fc.record({ kind: fc.constant("twinCatalog" as const), volumeId: fc.integer({ min: 0, max: volumeIdMax }), twins: twinsArbitrary });

export const twinRegionArbitrary: fc.Arbitrary<TwinRegion> = fc
  .record({ region: regionDataArbitrary, twin: nameArbitrary })
  .map(({ region, twin }) => ({ kind: "twinRegion" as const, volumeId: region.volumeId, twin, offset: region.offset, length: region.length, data: region.data }));

export const messageArbitrary: fc.Arbitrary<MessageToSend> = fc.oneof(
  helloArbitrary,
  acceptArbitrary,
  rejectArbitrary,
  recordsArbitrary,
  ackArbitrary,
  heartbeatArbitrary,
  bitmapRegionsArbitrary,
  regionDataArbitrary,
  resyncEndArbitrary,
  volumeTableArbitrary,
  hashRequestArbitrary,
  hashReplyArbitrary,
  twinListRequestArbitrary,
  twinListArbitrary,
  twinCatalogArbitrary,
  twinRegionArbitrary,
);

// Frames for a stream: each message framed with sequences 0, 1, 2, …; returns each frame's bytes.
export function encodeStream(messages: readonly MessageToSend[]): Buffer[] {
  const encoder = new FrameEncoder();
  return messages.map((message) => Buffer.concat(encoder.encode(messageEncode(message))));
}

// The bytes a decoded frame was sent as (for comparing with what was encoded).
export function frameBytes(frame: Frame): Buffer {
  return Buffer.concat(frameEncode({ type: frame.type, flags: frame.flags, sequence: frame.sequence }, [frame.payload]));
}

// Runs `action`; it must throw a FrameError. Returns its reason.
export function expectFrameError(action: () => unknown): FrameErrorReason {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof FrameError, `not a FrameError: ${String(error)}`);
    assert.equal(error.code, "REQUEST_INVALID");
    return error.reason;
  }
  assert.fail("accepted damaged bytes without an error");
}

// Runs `action`; only a FrameError may escape it (swallowed). Returns the reason or null.
export function frameErrorOrNothing(action: () => unknown): FrameErrorReason | null {
  try {
    action();
    return null;
  } catch (error) {
    if (!(error instanceof FrameError)) throw error;
    return error.reason;
  }
}


// Two connected TCP sockets on 127.0.0.1: the two ends of a link, for stream tests.
export async function socketPair(): Promise<[Socket, Socket]> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const accepted = once(server, "connection") as Promise<[Socket]>;
  const client = connect((server.address() as AddressInfo).port, "127.0.0.1");
  await once(client, "connect");
  const [serverSide] = await accepted;
  server.close();
  return [client, serverSide];
}
