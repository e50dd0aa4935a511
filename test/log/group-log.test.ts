// The group log on a simulated disk: appends and progress, group commit, wrap-around over
// many laps with release(), room and back-pressure, the rule that freed space is reused only
// after a durable superblock, cursors, and failures.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OperatingError } from "../../src/errors.js";
import { GroupLog, type LogEntry } from "../../src/log/group-log.js";
import { RecordFlag, RecordKind, recordDiskSize } from "../../src/log/record.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { FencedFile, KiB, readAll, settle, smallLimits } from "./helpers.js";

const dataStart = 8192;

function write(volumeId: number, offset: number, payload: Buffer, flags = 0): LogEntry {
  return { kind: RecordKind.write, flags, volumeId, offset, length: payload.length, payload };
}

function isCode(code: string) {
  return (error: unknown) => error instanceof OperatingError && error.code === code;
}

async function newLog(dataBytes: number, limits = {}) {
  const disk = new SimDisk("log", dataStart + dataBytes);
  const file = new FencedFile(disk);
  const log = await GroupLog.create(file, { sizeBytes: dataStart + dataBytes, groupId: "group", limits: { ...smallLimits, ...limits } });
  return { disk, file, log };
}

describe("group log", () => {
  it("appends every kind, reports progress, reads back in order, reopens", async () => {
    const { disk, log } = await newLog(256 * KiB);
    const a = log.append(write(1, 0, Buffer.alloc(4096, 0xa1), RecordFlag.fua));
    const b = log.append({ kind: RecordKind.zero, flags: 0, volumeId: 1, offset: 8192, length: 65536 });
    const c = log.append({ kind: RecordKind.trim, flags: 0, volumeId: 2, offset: 0, length: 1 << 20 });
    const d = log.append({ kind: 0x101, flags: 0, volumeId: 0, offset: 0, length: 0, payload: Buffer.from('{"snapshot":"s1"}') });
    assert.deepEqual([a, b, c, d], [1n, 2n, 3n, 4n]);
    assert.equal(log.usage().writtenLsn, 0n);
    await log.written(d);
    assert.equal(log.usage().durableLsn, 0n);
    assert.equal(disk.syncCount, 1); // create's
    assert.equal(await log.sync(), 4n);
    assert.equal(log.usage().durableLsn, 4n);
    const records = await readAll(log, 1n);
    assert.deepEqual(records.map((record) => [record.lsn, record.kind, record.volumeId, record.offset, record.length, record.payload.length]), [
      [1n, RecordKind.write, 1, 0, 4096, 4096],
      [2n, RecordKind.zero, 1, 8192, 65536, 0],
      [3n, RecordKind.trim, 2, 0, 1 << 20, 0],
      [4n, 0x101, 0, 0, 0, 17],
    ]);
    assert.equal(records[0]!.flags, RecordFlag.fua);
    assert.deepEqual(records[0]!.payload, Buffer.alloc(4096, 0xa1));
    assert.equal((await readAll(log, 3n)).length, 2);
    assert.equal((await readAll(log, 5n)).length, 0);
    await log.close();
    assert.throws(() => log.append(write(1, 0, Buffer.alloc(512))), isCode("SHUTTING_DOWN"));
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits, groupId: "group" });
    assert.deepEqual(
      { ...reopened.recovery, stoppedAt: 0 },
      { tailLsn: 1n, headLsn: 4n, records: 4, bytes: 4608 + 512 * 3, stoppedBecause: "empty", stoppedAt: 0, superblockSequence: 2n, superblockFallback: false },
    );
    assert.equal(reopened.append(write(1, 0, Buffer.alloc(512))), 5n);
    await reopened.sync();
    assert.deepEqual((await readAll(reopened, 1n)).map((record) => record.lsn), [1n, 2n, 3n, 4n, 5n]);
    await assert.rejects(GroupLog.open(new FencedFile(disk), { groupId: "other" }), isCode("CONFIG_INVALID"));
  });

  it("group commit: many concurrent durability waiters share few datasyncs", async () => {
    const { disk, log } = await newLog(1024 * KiB);
    const syncsBefore = disk.syncCount;
    const waits: Promise<void>[] = [];
    for (let index = 0; index < 1000; index++) waits.push(log.durable(log.append(write(0, index * 512, Buffer.alloc(512, index)))));
    await Promise.all(waits);
    const syncs = disk.syncCount - syncsBefore;
    assert.ok(syncs <= 2, `${syncs} datasyncs for 1000 records`);
    assert.equal(log.usage().durableLsn, 1000n);
    assert.equal(log.usage().syncs, syncs);
  });

  it("group commit: requests arriving during a datasync wait for the next one", async () => {
    const { disk, file, log } = await newLog(4096 * KiB);
    // A slow datasync (2 ms) and 20 clients, each appending and waiting, 25 times.
    const syncDisk = disk.datasync.bind(disk);
    disk.datasync = async () => {
      await new Promise((resolve) => setTimeout(resolve, 2));
      await syncDisk();
    };
    const syncsBefore = log.usage().syncs;
    const client = async (id: number) => {
      for (let round = 0; round < 25; round++) {
        await log.durable(log.append(write(id, round * 4096, Buffer.alloc(4096, id))));
      }
    };
    await Promise.all(Array.from({ length: 20 }, (_, id) => client(id)));
    const syncs = log.usage().syncs - syncsBefore;
    assert.ok(syncs <= 500 / 10, `${syncs} datasyncs for 500 records from 20 clients`);
    assert.ok(syncs >= 25, "each client waits for its own round");
    assert.equal(file.writes.length - 1, log.usage().batches + log.usage().superblockWrites); // one write per batch (and create's)
  });

  it("batches respect the byte and record limits, one write each", async () => {
    const { file, log } = await newLog(1024 * KiB, { batchRecordsMax: 8, batchBytesMax: 16 * KiB });
    const writesBefore = file.writes.length;
    for (let index = 0; index < 100; index++) log.append(write(0, 0, Buffer.alloc(100 + index * 20, index)));
    await log.sync();
    const writes = file.writes.slice(writesBefore);
    assert.equal(writes.length, log.usage().batches);
    // (each write also covers the rest of the pages its batch starts and ends in)
    assert.ok(writes.every((batch) => batch.bytes <= 16 * KiB + 2 * 4096));
    assert.ok(writes.length >= 100 / 8);
    // A record larger than a batch goes alone.
    const big = log.append(write(0, 0, Buffer.alloc(40 * KiB, 7)));
    await log.sync();
    const last = file.writes.at(-1)!;
    assert.ok(last.bytes >= recordDiskSize(40 * KiB) && last.bytes <= recordDiskSize(40 * KiB) + 2 * 4096);
    assert.deepEqual((await readAll(log, big))[0]!.payload, Buffer.alloc(40 * KiB, 7));
  });

  it("passes large payloads to the write as they are, copies small ones into few buffers", async () => {
    const { disk, file, log } = await newLog(1024 * KiB, { batchCopyBytesMax: 8 * KiB });
    const seen: (readonly Buffer[])[] = [];
    const diskWrite = disk.write.bind(disk);
    disk.write = async (sources, position) => {
      seen.push(sources);
      await diskWrite(sources, position);
    };
    const large = Buffer.alloc(100 * KiB, 3);
    for (let index = 0; index < 50; index++) log.append(write(0, 0, Buffer.alloc(4 * KiB, index)));
    log.append(write(0, 0, large));
    for (let index = 0; index < 50; index++) log.append(write(0, 0, Buffer.alloc(512, index)));
    await log.sync();
    assert.equal(seen.length, 1, "one write for the whole batch");
    const buffers = seen[0]!;
    assert.ok(buffers.includes(large), "the large payload is not copied");
    assert.ok(buffers.length <= 7, `${buffers.length} buffers`); // (and the head page's start, zeroes to the last page's end)
    assert.equal(file.writes.length, 2); // create's superblocks, then the batch
    const records = await readAll(log, 1n);
    assert.deepEqual(records[50]!.payload, large);
    assert.deepEqual(records[100]!.payload, Buffer.alloc(512, 49));
  });

  it("writes whole pages: the head page's start again, zeroes to the last page's end (no read-modify-write)", async () => {
    const { file, log } = await newLog(1024 * KiB);
    const random = new Random(11);
    const writesBefore = file.writes.length;
    const payloads = new Map<bigint, Buffer>();
    for (let round = 0; round < 40; round++) {
      for (let index = 0; index < 1 + random.below(5); index++) {
        const payload = random.fill(Buffer.alloc(random.below(9000)));
        payloads.set(log.append(write(1, index, payload)), payload);
      }
      await log.sync();
    }
    const writes = file.writes.slice(writesBefore).filter((entry) => entry.position >= 8192); // (not superblocks)
    assert.ok(writes.length >= 40);
    for (const entry of writes) assert.ok(entry.position % 4096 === 0 && entry.bytes % 4096 === 0, `write of ${entry.bytes} at ${entry.position}`);
    const records = await readAll(log, 1n);
    assert.equal(records.length, payloads.size);
    for (const record of records) assert.deepEqual(record.payload, payloads.get(record.lsn));
  });

  it("wraps around over many laps with release(); recovery finds exactly the head", async () => {
    const { disk, log } = await newLog(64 * KiB);
    const random = new Random(7);
    const payloads = new Map<bigint, Buffer>();
    let wraps = 0;
    let previousHead = 0;
    let lastLsn = 0n;
    for (let index = 0; index < 2000; index++) {
      const size = random.below(3) === 0 ? random.below(6000) : random.below(700);
      const payload = random.fill(Buffer.alloc(size));
      if (!log.hasRoom(size)) {
        await log.sync();
        log.release(lastLsn - BigInt(random.below(4))); // keep a few records back
        await log.waitForRoom(size, 1000);
      }
      lastLsn = log.append(write(3, index, payload));
      payloads.set(lastLsn, payload);
      const head = (log as unknown as { space: { headPosition: number } }).space.headPosition;
      if (head < previousHead) wraps += 1;
      previousHead = head;
      if (index % 97 === 0) {
        await log.sync();
        const tail = log.usage().tailLsn;
        const records = await readAll(log, tail);
        assert.equal(records.length, Number(lastLsn - tail + 1n));
        for (const record of records) assert.deepEqual(record.payload, payloads.get(record.lsn));
      }
    }
    assert.ok(wraps >= 20, `only ${wraps} laps`);
    await log.sync();
    log.release(lastLsn - 5n);
    await log.checkpoint();
    const usage = log.usage();
    assert.equal(usage.tailLsn, lastLsn - 4n);
    // Reopen without close: recovery from the superblock's tail finds exactly the head.
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    assert.equal(reopened.recovery!.headLsn, lastLsn);
    assert.equal(reopened.recovery!.tailLsn, lastLsn - 4n);
    assert.equal(reopened.usage().usedBytes, usage.usedBytes);
    const records = await readAll(reopened, lastLsn - 4n);
    assert.deepEqual(records.map((record) => record.lsn), [0n, 1n, 2n, 3n, 4n].map((back) => lastLsn - 4n + back));
    for (const record of records) assert.deepEqual(record.payload, payloads.get(record.lsn));
  });

  it("LOG_FULL at once, waitForRoom waits for release or times out", async () => {
    const { log } = await newLog(32 * KiB);
    const payload = Buffer.alloc(3 * KiB); // 3584 bytes on disk: 9 fit in 32 KiB
    let lsn = 0n;
    while (log.hasRoom(payload.length)) lsn = log.append(write(0, 0, payload));
    assert.equal(lsn, 9n);
    assert.throws(() => log.append(write(0, 0, payload)), isCode("LOG_FULL"));
    await assert.rejects(log.waitForRoom(payload.length, 20), isCode("LOG_FULL"));
    const waiting = log.waitForRoom(payload.length, 5000);
    await log.sync();
    log.release(4n); // frees the first 4 KiB segment (records 1-2) once a superblock is durable
    await waiting;
    assert.ok(log.hasRoom(payload.length));
    assert.equal(log.append(write(0, 0, payload)), 10n);
    await log.sync();
    assert.deepEqual((await readAll(log, log.usage().tailLsn)).map((record) => record.lsn), [5n, 6n, 7n, 8n, 9n, 10n]);
  });

  it("never overwrites freed space before the superblock that freed it is durable", async () => {
    const { disk, file, log } = await newLog(32 * KiB);
    const payload = Buffer.alloc(3 * KiB, 0x5a);
    while (log.hasRoom(payload.length)) log.append(write(0, 0, payload));
    await log.sync();
    log.release(9n); // everything; below the persist threshold in bytes? no: 32 KiB / 8 = 4 KiB, so it is due
    assert.equal(log.hasRoom(payload.length), false, "room only after a durable superblock");
    // Crash right before the datasync that would make the new superblock durable.
    let crashed = false;
    file.beforeSync = () => {
      if (crashed) return;
      crashed = true;
      file.fence();
      disk.crash(new Random(1), 0.5);
    };
    await assert.rejects(log.waitForRoom(payload.length, 1000), isCode("DISK_IO"));
    assert.throws(() => log.append(write(0, 0, payload)), isCode("DISK_IO"));
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    // Old tail or new tail: either way every record from it on is intact.
    const recovery = reopened.recovery!;
    assert.equal(recovery.headLsn, 9n);
    const records = await readAll(reopened, recovery.tailLsn);
    assert.equal(records.length, Number(10n - recovery.tailLsn));
    for (const record of records) assert.deepEqual(record.payload, payload);
  });

  it("the writer puts a record into freed space only after the superblock's datasync", async () => {
    const { file, log } = await newLog(32 * KiB);
    const payload = Buffer.alloc(3 * KiB, 1);
    while (log.hasRoom(payload.length)) log.append(write(0, 0, payload));
    await log.sync();
    const events: string[] = [];
    const fileWrite = file.write.bind(file);
    file.write = async (sources, position) => {
      events.push(position < dataStart ? "superblock" : `data@${position}`);
      await fileWrite(sources, position);
    };
    file.beforeSync = () => events.push("sync");
    log.release(9n);
    await log.waitForRoom(payload.length, 1000);
    log.append(write(0, 0, payload));
    await log.sync();
    const superblockAt = events.indexOf("superblock");
    assert.ok(superblockAt >= 0);
    assert.equal(events[superblockAt + 1], "sync");
    assert.ok(events.slice(0, superblockAt).every((event) => !event.startsWith("data")), events.join(" "));
  });

  it("cursors: catch up, continue, and refuse released records", async () => {
    const { log } = await newLog(32 * KiB);
    const cursor = log.cursor(1n);
    assert.equal(await cursor.next(), null);
    log.append(write(0, 0, Buffer.alloc(1000, 1)));
    assert.equal(await cursor.next(), null, "queued records are not read");
    await log.written(1n);
    assert.equal((await cursor.next())!.lsn, 1n);
    for (let index = 0; index < 8; index++) log.append(write(0, 0, Buffer.alloc(3 * KiB, index)));
    await log.sync();
    assert.deepEqual((await readAll(log, 2n)).map((record) => Number(record.lsn)), [2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal((await cursor.next())!.lsn, 2n);
    log.release(9n);
    await log.checkpoint();
    assert.throws(() => log.cursor(3n), isCode("OUT_OF_RANGE"));
    assert.throws(() => log.cursor(11n), isCode("OUT_OF_RANGE"));
    for (let index = 0; index < 8; index++) log.append(write(0, 0, Buffer.alloc(3 * KiB, index)));
    await log.sync();
    // The old cursor's records were overwritten: it says so instead of returning anything.
    await assert.rejects(cursor.next(), isCode("OUT_OF_RANGE"));
    assert.equal((await readAll(log, 10n)).length, 8);
  });

  it("reads back records larger than the read-ahead window", async () => {
    const { disk, log } = await newLog(1024 * KiB, { readChunkBytes: 4 * KiB });
    const random = new Random(3);
    const payloads = [100_000, 3, 70_000, 0, 200_000].map((size) => random.fill(Buffer.alloc(size)));
    for (const payload of payloads) log.append(write(0, 0, payload));
    await log.close();
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: { ...smallLimits, readChunkBytes: 4 * KiB } });
    const records = await readAll(reopened, 1n);
    assert.deepEqual(records.map((record) => record.payload), payloads);
  });

  it("bounds the queue: OVERLOADED, and waitForRoom waits for the writer", async () => {
    const { log } = await newLog(1024 * KiB, { queueBytesMax: 16 * KiB });
    let appended = 0;
    for (; appended < 10; appended++) {
      if (!log.hasRoom(3 * KiB)) break;
      log.append(write(0, 0, Buffer.alloc(3 * KiB)));
    }
    assert.equal(appended, 4);
    assert.throws(() => log.append(write(0, 0, Buffer.alloc(3 * KiB))), isCode("OVERLOADED"));
    await log.waitForRoom(3 * KiB, 1000);
    assert.equal(log.usage().queuedBytes, 0);
  });

  it("a write error fails the log: waiters rejected, appends refused, nothing pretended", async () => {
    const { disk, log } = await newLog(256 * KiB);
    log.append(write(0, 0, Buffer.alloc(512)));
    await log.sync();
    disk.injectFault("EIO", "write");
    const lsn = log.append(write(0, 0, Buffer.alloc(512)));
    const results = await Promise.allSettled([log.written(lsn), log.durable(lsn), log.sync(), log.checkpoint()]);
    for (const result of results) {
      assert.equal(result.status, "rejected");
      assert.ok(isCode("DISK_IO")((result as PromiseRejectedResult).reason));
    }
    assert.throws(() => log.append(write(0, 0, Buffer.alloc(512))), isCode("DISK_IO"));
    await assert.rejects(log.waitForRoom(512), isCode("DISK_IO"));
    assert.equal(log.usage().durableLsn, 1n);
    await log.durable(1n); // what was durable stays durable
    await assert.rejects(log.close(), isCode("DISK_IO"));
  });

  it("a datasync error fails the log", async () => {
    const { disk, log } = await newLog(256 * KiB);
    disk.injectFault("EIO", "sync");
    const lsn = log.append(write(0, 0, Buffer.alloc(512)));
    await log.written(lsn);
    await assert.rejects(log.durable(lsn), isCode("DISK_IO"));
    assert.equal(log.usage().durableLsn, 0n);
    assert.throws(() => log.append(write(0, 0, Buffer.alloc(512))), isCode("DISK_IO"));
  });

  // Found by the replica crash tests: a replica closing after a power cut waited forever for
  // its log's close(). The checkpoint requests a writer round takes for its superblock were
  // neither resolved nor rejected when that superblock's write or datasync failed.
  for (const on of ["write", "sync"] as const) {
    it(`a checkpoint whose superblock ${on} fails is rejected, not left waiting; so is close()`, async () => {
      const { disk, log } = await newLog(256 * KiB);
      log.append(write(0, 0, Buffer.alloc(512)));
      await log.sync(); // nothing queued: the next write is the superblock's
      disk.injectFault("EIO", on);
      const pending = Symbol("pending");
      const outcome = (promise: Promise<void>) =>
        Promise.race([promise.then(() => "resolved", (error: unknown) => error), new Promise((resolve) => setTimeout(() => resolve(pending), 2000))]);
      const checkpointOutcome = await outcome(log.checkpoint());
      assert.notEqual(checkpointOutcome, pending, "checkpoint() never settled");
      assert.ok(isCode("DISK_IO")(checkpointOutcome), `checkpoint() gave ${String(checkpointOutcome)}`);
      assert.equal(log.health.state, "failed");
      const closeOutcome = await outcome(log.close());
      assert.ok(isCode("DISK_IO")(closeOutcome), `close() gave ${String(closeOutcome)}`);
    });
  }

  it("refuses a bad size or group id, and a record that can never fit", async () => {
    const disk = new SimDisk("log", 1 << 20);
    await assert.rejects(GroupLog.create(disk, { sizeBytes: 1 << 20, groupId: "g" }), isCode("CONFIG_INVALID")); // < logSizeMin
    await assert.rejects(GroupLog.create(disk, { sizeBytes: 8192 + 1000, groupId: "g", limits: smallLimits }), isCode("CONFIG_INVALID"));
    await assert.rejects(GroupLog.create(disk, { sizeBytes: 65536, groupId: "", limits: smallLimits }), isCode("CONFIG_INVALID"));
    const log = await GroupLog.create(disk, { sizeBytes: 8192 + 16 * KiB, groupId: "g", limits: smallLimits });
    await assert.rejects(log.waitForRoom(20 * KiB, 10), isCode("LOG_FULL"));
    assert.throws(() => log.append(write(0, 0, Buffer.alloc(20 * KiB))), isCode("LOG_FULL"));
    await settle();
  });

  it("memory stays bounded: segments and queue do not grow with data written", async () => {
    const { log } = await newLog(256 * KiB);
    const space = (log as unknown as { space: { segmentCount: number } }).space;
    let segmentsMax = 0;
    for (let index = 0; index < 20_000; index++) {
      if (!log.hasRoom(1000)) {
        await log.sync();
        log.release(log.usage().headLsn);
        await log.waitForRoom(1000, 1000);
      }
      log.append(write(0, 0, Buffer.alloc(1000)));
      segmentsMax = Math.max(segmentsMax, space.segmentCount);
    }
    assert.ok(segmentsMax <= 256 / 4 + 2, `${segmentsMax} segments`);
  });
});
