// A replica (src/group/replica.ts) fed the records of a primary's log, as a link session feeds
// it: its log copy is the primary's verbatim, its volume always equals the primary's after some
// prefix of the LSN order (DESIGN.md §2.2) and after each received prefix once applied; items
// placed after LSN n run after exactly n; periodic streams are applied one interval at a time;
// consecutive plain writes are applied as runs without breaking the prefix property; a
// resync restarts the log copy where the primary says and ends consistent; a crash anywhere
// is redone from the log to a prefix state.

import { OperatingError } from "../../src/errors.js";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { AssertionError } from "../../src/assert.js";
import type { Replica } from "../../src/group/replica.js";
import type { LogRecord } from "../../src/log/record.js";
import { Random } from "../../src/sim/random.js";
import { replicaRegionsInflightMax } from "../../src/constants.js";
import type { Volume } from "../../src/volume/volume.js";
import { GroupLog } from "../../src/log/group-log.js";
import { RecordKind } from "../../src/log/record.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { KiB, readAll, settle, smallLimits } from "../log/helpers.js";
import { applyToImage, digest, logAccept, primaryLogId, primaryWith, ReplicaDisks, resyncAccept, SyncGate, volumeId, volumeImage, volumeSize } from "./replica-fixture.js";

const disksMade: ReplicaDisks[] = [];
after(async () => {
  for (const disks of disksMade) await disks.remove();
});

async function disksMake(): Promise<ReplicaDisks> {
  const disks = await ReplicaDisks.make();
  disksMade.push(disks);
  return disks;
}

// A fresh replica whose log copy starts as the primary's (the initial sync's accept), started.
async function freshReplica(resumeLsn = 1n, previousChecksum = 0): Promise<{ disks: ReplicaDisks; replica: Replica; volume: Volume }> {
  const disks = await disksMake();
  const { replica, volume } = await disks.open(true);
  replica.start();
  await replica.beginResync(resyncAccept(resumeLsn, previousChecksum), "site-a");
  return { disks, replica, volume };
}

async function waitFor(condition: () => boolean, what: string, msMax = 10_000): Promise<void> {
  const startMs = Date.now();
  while (!condition()) {
    if (Date.now() - startMs > msMax) assert.fail(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

// Splits records into batches of 1…batchMax.
function batches(records: readonly LogRecord[], random: Random, batchMax = 12): LogRecord[][] {
  const result: LogRecord[][] = [];
  for (let at = 0; at < records.length; ) {
    const size = 1 + random.below(batchMax);
    result.push(records.slice(at, at + size));
    at += size;
  }
  return result;
}

describe("replica: applying a primary's log", () => {
  it("the volume equals the primary's after each received prefix, and only ever after some prefix", async () => {
    const primary = await primaryWith(300, 1);
    const prefixes = new Set(primary.images.map(digest));
    const { replica, volume } = await freshReplica();
    const random = new Random(11);
    const checks: { afterLsn: bigint; appliedLsn: bigint; equal: boolean }[] = [];
    let samples = 0;
    let sampling = true;
    const sampler = (async () => {
      // Reads the volume while the applier runs: never a state the primary did not have.
      while (sampling) {
        const image = await volumeImage(volume);
        assert.ok(prefixes.has(digest(image)), `a state that is no prefix, at applied LSN ${replica.appliedLsn}`);
        samples += 1;
        await settle();
      }
    })();
    for (const batch of batches(primary.records, random)) {
      await replica.appendRecords(batch);
      const afterLsn = batch.at(-1)!.lsn;
      // A task placed after the batch sees exactly its prefix.
      replica.enqueue({
        kind: "task",
        run: async () => {
          const image = await volumeImage(volume);
          checks.push({ afterLsn, appliedLsn: replica.appliedLsn, equal: image.equals(primary.images[Number(afterLsn)]!) });
        },
      });
      if (random.below(3) === 0) await settle();
    }
    await replica.drained();
    sampling = false;
    await sampler;
    assert.ok(samples > 10, `only ${samples} samples`);
    assert.equal(checks.length, batches(primary.records, new Random(11)).length);
    for (const check of checks) {
      assert.equal(check.appliedLsn, check.afterLsn, "the task ran right after its LSN");
      assert.ok(check.equal, `volume after LSN ${check.afterLsn} differs from the primary's`);
    }
    assert.equal(replica.appliedLsn, 300n);
    assert.ok(replica.stats.appliedRuns > 0, "no run of writes was applied together (Volume.writeRun)");
    assert.ok((await volumeImage(volume)).equals(primary.images[300]!));
    // The log copy is the primary's, record for record.
    assert.equal(replica.log.headChecksum, primary.log.headChecksum);
    assert.equal(replica.log.logId, primaryLogId);
    const position = await replica.position();
    assert.deepEqual(position, { durableLsn: 300n, durableChecksum: primary.records[299]!.checksum, appliedLsn: 300n, logId: primaryLogId });
    await replica.close();
  });

  it("after its memory ran out, records that arrive once the kept ones are taken are kept again, not read back from the log copy", async () => {
    const memoryBytesMax = 16 * 1024;
    const primary = await primaryWith(60, 21);
    const disks = await disksMake();
    const { replica, volume } = await disks.open(true, { memoryBytesMax });
    replica.start();
    await replica.beginResync(resyncAccept(1n, 0), "site-a");
    // The applier is held at its 10th image write, past the records it kept of the first batch.
    let writes = 0;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const write = disks.volume.write.bind(disks.volume);
    disks.volume.write = async (sources, position, durable) => {
      writes += 1;
      if (writes >= 10) await held;
      return write(sources, position, durable);
    };
    const first = primary.records.slice(0, 40);
    let keptFirst = 0; // kept until the first that did not fit; none after it
    for (let bytes = 0; keptFirst < first.length && bytes + first[keptFirst]!.payloadSize <= memoryBytesMax; keptFirst++) bytes += first[keptFirst]!.payloadSize;
    let secondCount = 0; // a second batch that fits in memory whole
    for (let bytes = 0; 40 + secondCount < 60 && bytes + primary.records[40 + secondCount]!.payloadSize <= memoryBytesMax; secondCount++) bytes += primary.records[40 + secondCount]!.payloadSize;
    assert.ok(keptFirst < 30 && secondCount >= 2, `a workload that overflows the memory (${keptFirst} kept) and a second batch of several records (${secondCount})`);
    await replica.appendRecords(first);
    await waitFor(() => writes >= 10, "the applier to reach its held write");
    assert.ok(replica.appliedLsn >= BigInt(keptFirst), "the applier has taken every kept record");
    await replica.appendRecords(primary.records.slice(40, 40 + secondCount));
    release();
    await replica.drained();
    assert.equal(replica.appliedLsn, BigInt(40 + secondCount));
    assert.ok((await volumeImage(volume)).equals(primary.images[40 + secondCount]!));
    // Read back: exactly the first batch's records that did not fit; the second batch came from memory.
    assert.equal(replica.stats.recordsReadBack, 40 - keptFirst);
    await replica.close();
  });

  it("applies a record only once it is durable in the replica's log (write-ahead)", async () => {
    const primary = await primaryWith(20, 2);
    const { disks, replica } = await freshReplica();
    const gate = new SyncGate(disks.log);
    gate.hold = true;
    await replica.appendRecords(primary.records.slice(0, 10));
    await sleep(20);
    assert.equal(replica.appliedLsn, 0n, "applied before durable");
    gate.release();
    await waitFor(() => replica.appliedLsn === 10n, "the records to be applied");
    assert.ok(replica.log.durableLsn >= 10n);
    await replica.close();
  });

  // Writes of the whole volume, each filled with its LSN's low byte: enough bytes to fill the
  // replica's log copy (logSizeMin) past replicaApplyCheckpointFillRatio.
  async function wholeVolumeWrites(count: number): Promise<LogRecord[]> {
    const sizeBytes = 8192 + count * (volumeSize + 4 * KiB);
    const log = await GroupLog.create(new SimDisk("primary-log", sizeBytes), { sizeBytes, groupId: "g", logId: primaryLogId, limits: smallLimits });
    for (let index = 1; index <= count; index++) {
      log.append({ kind: RecordKind.write, flags: 0, volumeId, offset: 0, length: volumeSize, payload: Buffer.alloc(volumeSize, index & 0xff) });
      if (index % 256 === 0) await log.sync(); // within the log's queue limit
    }
    await log.sync();
    return readAll(log, 1n);
  }

  it("the applier's checkpoint runs beside it: records are applied while the volume syncs, the log is released through the LSN it began at", async () => {
    const count = 1400; // 1400 × 68 KiB in the log copy: past half of its 128 MiB
    const records = await wholeVolumeWrites(count);
    const { disks, replica, volume } = await freshReplica();
    const gate = new SyncGate(disks.volume);
    gate.hold = true;
    const checkpointsBefore = replica.stats.checkpoints;
    let sent = 0;
    while (gate.entered === 0 && sent < count) {
      await replica.appendRecords(records.slice(sent, sent + 50));
      sent += 50;
      await settle();
    }
    await waitFor(() => gate.entered > 0, "a checkpoint to begin");
    const appliedAtSync = replica.appliedLsn;
    assert.ok(sent < count, "the checkpoint began before every record was sent");
    for (; sent < count; sent += 50) await replica.appendRecords(records.slice(sent, sent + 50));
    // Before, the applier waited for its checkpoint: nothing past appliedAtSync until the sync ended.
    await waitFor(() => replica.appliedLsn === BigInt(count), `records past LSN ${appliedAtSync} to be applied while the volume syncs`);
    assert.equal(replica.stats.checkpoints, checkpointsBefore, "the checkpoint is still syncing");
    assert.ok(replica.log.usage().tailLsn <= appliedAtSync, "nothing released before the sync ended");
    gate.release();
    await waitFor(() => replica.stats.checkpoints > checkpointsBefore, "the checkpoint to end");
    assert.ok(replica.log.usage().tailLsn > appliedAtSync, `released through the LSN the checkpoint began at (tail ${replica.log.usage().tailLsn}, began at ${appliedAtSync})`);
    assert.ok((await volumeImage(volume)).equals(Buffer.alloc(volumeSize, count & 0xff)));
    await replica.close();
  });

  it("a checkpoint that fails beside the applier stops it (DISK_IO), and a restart redoes from the log", async () => {
    const count = 1400;
    const records = await wholeVolumeWrites(count);
    const { disks, replica } = await freshReplica();
    const gate = new SyncGate(disks.volume);
    gate.failWith = new OperatingError("DISK_IO", { what: "datasync replica volume (injected)", errno: "EIO" });
    let refused: unknown = null;
    for (let sent = 0; sent < count && refused === null; sent += 50) {
      try {
        await replica.appendRecords(records.slice(sent, sent + 50));
      } catch (error) {
        refused = error;
      }
      await settle();
    }
    await waitFor(() => replica.health !== null, "the applier to stop");
    if (refused === null) refused = await replica.appendRecords(records.slice(0, 1)).catch((error: unknown) => error);
    assert.ok(refused instanceof OperatingError && refused.code === "DISK_IO", `appends refused with DISK_IO, got ${String(refused)}`);
    const durable = replica.log.durableLsn;
    await replica.close();
    gate.failWith = null;
    const { replica: restarted, volume } = await disks.open(false);
    assert.equal(restarted.appliedLsn, durable, "redo applied every durable record");
    assert.ok((await volumeImage(volume)).equals(Buffer.alloc(volumeSize, Number(durable) & 0xff)));
    await restarted.close();
  });

  it("an item placed after LSN n runs after exactly n: region data lands between records", async () => {
    const primary = await primaryWith(40, 3);
    const { replica, volume, disks } = await freshReplica();
    const region = { kind: "regionData" as const, volumeId: 1, offset: 0, length: volumeSize, data: Buffer.alloc(volumeSize, 0x77) };
    const seen: [string, bigint][] = [];
    const task = (name: string) => ({ kind: "task" as const, run: async () => void seen.push([name, replica.appliedLsn]) });
    replica.enqueue(task("before any record"));
    await replica.appendRecords(primary.records.slice(0, 15));
    replica.enqueue({ kind: "regionData", message: region }, volumeSize);
    assert.equal(replica.pendingBytes, volumeSize);
    replica.enqueue(task("after the region"));
    replica.enqueue({ kind: "volumeTable", message: { kind: "volumeTable", atLsn: 15n, volumes: [{ volumeId: 1, name: "disk0", size: volumeSize }] } });
    await replica.appendRecords(primary.records.slice(15, 25));
    // A zeroed region that runs past the end of the volume is cut at its end; one of a volume
    // the replica does not have is skipped.
    replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 1, offset: volumeSize - 4096, length: 8192, data: null } });
    replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 9, offset: 0, length: 4096, data: Buffer.alloc(4096, 1) } });
    await replica.appendRecords(primary.records.slice(25));
    await replica.drained();
    assert.deepEqual(seen, [
      ["before any record", 0n],
      ["after the region", 15n],
    ]);
    assert.equal(replica.pendingBytes, 0);
    assert.equal(disks.tables.length, 1);
    assert.equal(disks.tables[0]!.atLsn, 15n);
    // The expected volume: all 0x77 after record 15, records 16…25, the zeroed tail, 26…40.
    const expected = Buffer.alloc(volumeSize, 0x77);
    for (const record of primary.records.slice(15, 25)) applyToImage(expected, record);
    expected.fill(0, volumeSize - 4096);
    for (const record of primary.records.slice(25)) applyToImage(expected, record);
    assert.ok((await volumeImage(volume)).equals(expected));
    assert.equal(replica.stats.regionsApplied, 2);
    assert.equal(replica.stats.regionBytesApplied, volumeSize + 4096);
    await replica.close();
  });

  it("region pieces queued at one point are written together (replicaRegionsInflightMax), an overlapping one and the next records after them", async () => {
    const primary = await primaryWith(5, 8);
    const { replica, volume } = await freshReplica();
    const write = volume.write.bind(volume);
    const later = 0xee; // the later pass's data is written at once, the others after a pause:
    let inflight = 0; //   written beside the piece it overlaps, it would land first and lose
    let inflightMax = 0;
    volume.write = async (data, offset, durable) => {
      inflight += 1;
      inflightMax = Math.max(inflightMax, inflight);
      try {
        if (data[0] !== later) await sleep(2);
        await write(data, offset, durable);
      } finally {
        inflight -= 1;
      }
    };
    const pieceBytes = 1024;
    const expected = Buffer.alloc(volumeSize);
    const piece = (index: number): void => {
      const offset = index * pieceBytes;
      const data = Buffer.alloc(pieceBytes, 1 + index);
      data.copy(expected, offset);
      replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 1, offset, length: pieceBytes, data } }, pieceBytes);
    };
    for (let index = 0; index < 8; index++) piece(index);
    // A later pass over piece 2, queued among them: it must land after piece 2, not beside it.
    replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 1, offset: 2 * pieceBytes, length: pieceBytes, data: Buffer.alloc(pieceBytes, later) } }, pieceBytes);
    expected.fill(later, 2 * pieceBytes, 3 * pieceBytes);
    for (let index = 8; index < volumeSize / pieceBytes; index++) piece(index);
    await replica.appendRecords(primary.records);
    await replica.drained();
    for (const record of primary.records) applyToImage(expected, record);
    assert.ok((await volumeImage(volume)).equals(expected), "the pieces, the later pass after piece 2, then the records");
    assert.equal(inflightMax, replicaRegionsInflightMax, "pieces written together, at most the limit");
    assert.equal(replica.stats.regionsApplied, volumeSize / pieceBytes + 1);
    await replica.close();
  });

  it("a periodic stream is applied one whole interval at a time", async () => {
    const primary = await primaryWith(30, 4);
    const { replica, volume } = await freshReplica();
    // A resync's records are applied regardless of intervals: end the (empty) resync first.
    replica.enqueue({ kind: "resyncEnd", consistentLsn: 0n });
    await waitFor(() => replica.consistent, "the empty resync's end");
    replica.useIntervals(true);
    await replica.appendRecords(primary.records.slice(0, 10));
    await replica.log.durable(10n);
    await sleep(20);
    assert.equal(replica.appliedLsn, 0n, "no interval has ended");
    replica.intervalEnd(4n);
    await waitFor(() => replica.appliedLsn === 4n, "the first interval");
    await sleep(20);
    assert.equal(replica.appliedLsn, 4n, "applied past the interval's end");
    assert.ok((await volumeImage(volume)).equals(primary.images[4]!));
    let taskRan = false;
    replica.enqueue({ kind: "task", run: async () => void (taskRan = true) }); // after 10
    await replica.appendRecords(primary.records.slice(10, 20));
    replica.intervalEnd(20n);
    await waitFor(() => replica.appliedLsn === 20n, "the second interval");
    assert.ok(taskRan);
    assert.ok((await volumeImage(volume)).equals(primary.images[20]!));
    // Without intervals again (a new connection of another mode): everything durable goes in.
    replica.useIntervals(false);
    await replica.appendRecords(primary.records.slice(20));
    await waitFor(() => replica.appliedLsn === 30n, "the rest");
    assert.throws(() => replica.intervalEnd(30n), AssertionError);
    await replica.close();
  });

  it("a periodic stream's readers see the volume only at interval boundaries", async () => {
    const primary = await primaryWith(300, 6);
    const { replica, volume } = await freshReplica();
    replica.enqueue({ kind: "resyncEnd", consistentLsn: 0n });
    await waitFor(() => replica.consistent, "the empty resync's end");
    replica.useIntervals(true);
    await replica.appendRecords(primary.records.slice(0, 300));
    await replica.log.durable(300n);
    const boundaries = [primary.images[0]!, primary.images[150]!, primary.images[300]!];
    replica.intervalEnd(150n);
    let reads = 0;
    const reader = (async () => {
      while (replica.appliedLsn < 300n) {
        const image = Buffer.alloc(volume.size);
        await replica.read(volume, 0, image);
        assert.ok(boundaries.some((boundary) => boundary.equals(image)), `read ${reads} saw a state between interval boundaries (applied ${replica.appliedLsn})`);
        reads += 1;
        if (replica.appliedLsn === 150n) replica.intervalEnd(300n);
      }
    })();
    await reader;
    assert.ok(reads >= 2, `only ${reads} reads`);
    assert.ok((await volumeImage(volume)).equals(primary.images[300]!));
    await replica.close();
  });

  it("refuses reads (REPLICA_INCONSISTENT) while a resync makes it inconsistent, and serves them after", async () => {
    const { replica, volume } = await freshReplica();
    const target = Buffer.alloc(4096);
    await assert.rejects(replica.read(volume, 0, target), (error: unknown) => error instanceof OperatingError && error.code === "REPLICA_INCONSISTENT");
    replica.enqueue({ kind: "resyncEnd", consistentLsn: 0n });
    await waitFor(() => replica.consistent, "the resync's end");
    await replica.read(volume, 0, target);
    await replica.close();
  });

  it("continues(accept): only a log accept that continues exactly this copy", async () => {
    const primary = await primaryWith(10, 5);
    const disks = await disksMake();
    const { replica } = await disks.open(true);
    replica.start();
    // A fresh replica has a log of its own (random logId): no primary's log continues it.
    assert.equal(replica.continues(logAccept(1n, 0)), false);
    await replica.beginResync(resyncAccept(1n, 0), "site-a");
    assert.equal(replica.continues(logAccept(1n, 0)), true, "an empty copy at LSN 1");
    await replica.appendRecords(primary.records.slice(0, 5));
    const checksum5 = primary.records[4]!.checksum;
    assert.equal(replica.continues(logAccept(6n, checksum5)), true);
    assert.equal(replica.continues(logAccept(5n, primary.records[3]!.checksum)), false, "a step back");
    assert.equal(replica.continues(logAccept(7n, primary.records[5]!.checksum)), false, "a gap");
    assert.equal(replica.continues(logAccept(6n, checksum5 ^ 1)), false, "another history");
    assert.equal(replica.continues(logAccept(6n, checksum5, { logId: primaryLogId + 1n })), false, "another log");
    await replica.close();
  });

  it("a record that is not the next one is refused (a bug: assert), and nothing is appended", async () => {
    const primary = await primaryWith(10, 6);
    const { replica } = await freshReplica();
    await replica.appendRecords(primary.records.slice(0, 3));
    await assert.rejects(replica.appendRecords([primary.records[4]!]), AssertionError);
    await assert.rejects(replica.appendRecords([primary.records[2]!]), AssertionError);
    assert.equal(replica.log.headLsn, 3n);
    await replica.appendRecords(primary.records.slice(3));
    await replica.drained();
    assert.equal(replica.appliedLsn, 10n);
    await replica.close();
  });
});

describe("replica: resync", () => {
  it("beginResync restarts the log copy at resumeLsn with the primary's logId and chain; resyncEnd makes it consistent", async () => {
    const primary = await primaryWith(40, 7);
    const { disks, replica, volume } = await freshReplica();
    const statePath = join(disks.directory, "replica.json");
    const state = async () => JSON.parse(await readFile(statePath, "utf8")) as { consistent: boolean; resyncing: boolean; primary: string };
    await replica.appendRecords(primary.records.slice(0, 5));
    // The link overflowed: the primary resyncs from LSN 21 (records 6…20 become regions).
    await replica.beginResync(resyncAccept(21n, primary.records[19]!.checksum), "site-a");
    assert.equal(replica.appliedLsn, 20n);
    assert.equal(replica.log.headLsn, 20n);
    assert.equal(replica.log.headChecksum, primary.records[19]!.checksum);
    assert.equal(replica.log.logId, primaryLogId);
    assert.equal(replica.log.usage().tailLsn, 21n);
    assert.ok((await volumeImage(volume)).equals(primary.images[5]!), "what it held was applied first");
    assert.deepEqual([replica.consistent, replica.resyncing], [false, true]);
    assert.deepEqual(await state(), { version: 1, consistent: false, resyncing: true, primary: "site-a" });
    assert.throws(() => replica.checkPromotable(), (error: unknown) => (error as { code?: string }).code === "REPLICA_INCONSISTENT");
    assert.equal(replica.continues(logAccept(21n, primary.records[19]!.checksum)), true, "a reconnect may continue the copy (the primary's bitmap decides)");
    // The regions' content is read after the records that wrote it were sent (here: at LSN 30);
    // applying records 21… over it converges.
    replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 1, offset: 0, length: volumeSize / 2, data: primary.images[30]!.subarray(0, volumeSize / 2) } });
    await replica.appendRecords(primary.records.slice(20, 30));
    replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 1, offset: volumeSize / 2, length: volumeSize / 2, data: primary.images[30]!.subarray(volumeSize / 2) } });
    await replica.appendRecords(primary.records.slice(30, 40));
    replica.enqueue({ kind: "resyncEnd", consistentLsn: 40n });
    await replica.drained();
    assert.deepEqual([replica.consistent, replica.resyncing], [true, false]);
    assert.deepEqual(await state(), { version: 1, consistent: true, resyncing: false, primary: "site-a" });
    replica.checkPromotable();
    assert.ok((await volumeImage(volume)).equals(primary.images[40]!));
    assert.equal(replica.stats.resyncs, 2);
    await replica.close();
    // The copy survives a restart: the same position, consistent.
    const reopened = await disks.open(false);
    assert.equal(reopened.replica.log.headLsn, 40n);
    assert.equal(reopened.replica.consistent, true);
    assert.equal(reopened.replayed, 0, "closed cleanly: nothing to redo");
    await reopened.replica.close();
  });

  // FAILING (bug, left for the lead): the primary takes an ack with appliedLsn ≥ the resync's
  // consistentLsn as "the peer applied the resync" and drops its bitmap (primary-link.ts
  // onProgress → resyncApplied). The replica reports appliedLsn (replica-session.ts ack()) as
  // soon as the records through consistentLsn are applied, BEFORE the resyncEnd item has
  // flushed the region data to the volumes and persisted `consistent: true`. A crash in that
  // window loses region data that is in no log, and leaves the replica inconsistent for good:
  // the primary no longer has a bitmap, so it resumes the log and never resends the regions.
  it("a resync counts as done only once the replica says consistent: a crash before that leaves the primary's bitmap in place", async () => {
    const primary = await primaryWith(40, 12);
    const { disks, replica } = await freshReplica();
    await replica.beginResync(resyncAccept(21n, primary.records[19]!.checksum), "site-a");
    replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 1, offset: 0, length: volumeSize, data: primary.images[20]! } });
    await replica.appendRecords(primary.records.slice(20, 40));
    // Hold the volume's syncs: the resyncEnd item's flush is where the window is.
    const volumeSyncs = new SyncGate(disks.volume);
    volumeSyncs.hold = true;
    replica.enqueue({ kind: "resyncEnd", consistentLsn: 40n });
    await waitFor(() => replica.appliedLsn === 40n && replica.log.durableLsn === 40n, "records through consistentLsn applied");
    await sleep(20);
    // What the session's ack says now (min(applied, durable), and the consistent flag), and what
    // the primary concludes from it (primary-link.ts: applied ≥ resyncEnd's LSN AND consistent).
    const reportedApplied = replica.appliedLsn < replica.log.durableLsn ? replica.appliedLsn : replica.log.durableLsn;
    const primaryThinksResyncDone = reportedApplied >= 40n && replica.consistent;
    disks.crash(new Random(5));
    volumeSyncs.remove();
    const { replica: restarted, volume: restartedVolume } = await disks.open(false);
    const restartedImage = await volumeImage(restartedVolume);
    await restarted.close();
    volumeSyncs.release(); // the crashed replica's flush, so that it can stop
    await replica.close().catch(() => undefined);
    assert.equal(reportedApplied, 40n, "the records through consistentLsn are applied");
    assert.equal(primaryThinksResyncDone, false, "but the ack does not say consistent until the resync's end is durable");
    // The replica restarts inconsistent, and the primary, still holding its bitmap, resyncs again.
    assert.equal(restarted.consistent, false);
    assert.equal(typeof restartedImage.length, "number");
  });

  // Where the primary's image held a change its log had lost (an activity-map crash keeps the
  // image's hot extents), a resync's region is the only copy of that change. Redo after a crash
  // of the replica must not replay the records at or before consistentLsn over it.
  it("after a resync's end, a crash and redo never undo its regions with older records", async () => {
    const primary = await primaryWith(40, 21);
    const { disks, replica } = await freshReplica();
    await replica.beginResync(resyncAccept(21n, primary.records[19]!.checksum), "site-a");
    await replica.appendRecords(primary.records.slice(20, 40));
    const regions = Buffer.alloc(volumeSize, 0xee); // no record wrote this: the image's own
    replica.enqueue({ kind: "regionData", message: { kind: "regionData", volumeId: 1, offset: 0, length: volumeSize, data: regions } });
    replica.enqueue({ kind: "resyncEnd", consistentLsn: 40n });
    await replica.drained();
    assert.equal(replica.consistent, true);
    disks.crash(new Random(9));
    await replica.close().catch(() => undefined);
    const { replica: restarted, volume } = await disks.open(false);
    assert.equal(restarted.consistent, true);
    assert.ok((await volumeImage(volume)).equals(regions), "the regions survive the crash and the redo");
    await restarted.close();
  });

  it("a resyncEnd that is not at its LSN is a bug (the applier stops)", async () => {
    const primary = await primaryWith(10, 8);
    const { replica } = await freshReplica();
    await replica.appendRecords(primary.records.slice(0, 5));
    await replica.drained();
    // Placed after LSN 5 but claiming 7: the session checks consistentLsn against the head first.
    replica.enqueue({ kind: "resyncEnd", consistentLsn: 7n });
    await assert.rejects(replica.drained(), (error: unknown) => (error as { code?: string }).code === "DISK_IO");
    assert.ok(replica.health instanceof AssertionError);
    assert.equal(replica.consistent, false);
    await replica.close();
  });
});

describe("replica: crash and redo", () => {
  const trials: { durableAtCut: bigint; appliedAtCut: bigint; headLsn: bigint; replayed: number; droppedSectors: number }[] = [];
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    it(`a power cut while receiving and applying (seed ${seed}): redo to the durable end, a prefix state`, async () => {
      const primary = await primaryWith(200, 100 + seed);
      const random = new Random(seed);
      const { disks, replica } = await freshReplica();
      const failures: unknown[] = [];
      const cutAfter = 2 + random.below(12);
      let durableAtCut = 0n;
      for (const [index, batch] of batches(primary.records, random).entries()) {
        if (index === cutAfter) break;
        await replica.appendRecords(batch).catch((error: unknown) => failures.push(error));
        if (random.below(3) === 0) await settle();
        if (index === 3) await replica.checkpoint(); // release the log through what is applied
        if (random.below(4) === 0) await sleep(random.below(3));
      }
      durableAtCut = replica.log.durableLsn;
      const appliedAtCut = replica.appliedLsn;
      const droppedSectors = disks.crash(random);
      await settle();

      const { replica: restarted, volume, replayed } = await disks.open(false);
      const headLsn = restarted.log.headLsn;
      trials.push({ durableAtCut, appliedAtCut, headLsn, replayed, droppedSectors });
      assert.ok(headLsn >= durableAtCut, `recovered head ${headLsn} < durable ${durableAtCut}`);
      assert.ok(headLsn <= BigInt(primary.records.length));
      assert.equal(restarted.appliedLsn, headLsn, "redo applies everything the log holds");
      assert.ok(replayed >= 0);
      assert.equal(restarted.log.headChecksum, primary.records[Number(headLsn) - 1]?.checksum ?? 0, "the copy is a prefix of the primary's log");
      assert.ok((await volumeImage(volume)).equals(primary.images[Number(headLsn)]!), `volume after redo differs from the primary at ${headLsn} (applied ${appliedAtCut} at the cut)`);
      // The stream resumes after the recovered head and converges.
      restarted.start();
      assert.equal(restarted.continues(logAccept(headLsn + 1n, restarted.log.headChecksum)), true);
      await restarted.appendRecords(primary.records.slice(Number(headLsn)));
      await restarted.drained();
      assert.ok((await volumeImage(volume)).equals(primary.images[200]!));
      await restarted.close();
      await replica.close().catch(() => undefined);
      assert.deepEqual(failures, [], "appends before the cut succeed");
    });
  }

  it("the power cuts above hit a replica with records to redo and writes that were lost", () => {
    assert.equal(trials.length, 6);
    assert.ok(trials.some((trial) => trial.headLsn > trial.appliedAtCut && trial.replayed > 0), JSON.stringify(trials, (_, value) => (typeof value === "bigint" ? String(value) : value)));
    assert.ok(trials.some((trial) => trial.droppedSectors > 0));
  });

  it("a crash right after beginResync: the restarted copy starts at resumeLsn, still inconsistent", async () => {
    const primary = await primaryWith(30, 9);
    const { disks, replica } = await freshReplica();
    await replica.appendRecords(primary.records.slice(0, 10));
    await replica.beginResync(resyncAccept(21n, primary.records[19]!.checksum), "site-a");
    disks.crash(new Random(3));
    const { replica: restarted } = await disks.open(false);
    assert.equal(restarted.log.headLsn, 20n);
    assert.equal(restarted.log.headChecksum, primary.records[19]!.checksum);
    assert.equal(restarted.log.logId, primaryLogId);
    assert.equal(restarted.consistent, false);
    assert.equal(restarted.resyncing, true);
    await restarted.close();
    await replica.close().catch(() => undefined);
  });
});
