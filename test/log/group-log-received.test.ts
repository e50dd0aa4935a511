// The group log as a copy of another node's log (a replica's): create() at a start LSN chained
// to the primary's record before it, appendReceived() of the primary's records verbatim (same
// LSNs, checksums and chain), recovery of such a copy, previousChecksumOf() at and inside the
// log and below its tail, and appended() for readers waiting for new records.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AssertionError } from "../../src/assert.js";
import { OperatingError } from "../../src/errors.js";
import { GroupLog, type LogEntry } from "../../src/log/group-log.js";
import { type LogRecord, RecordKind } from "../../src/log/record.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { FencedFile, KiB, readAll, settle, smallLimits } from "./helpers.js";

const dataStart = 8192;

function write(offset: number, payload: Buffer): LogEntry {
  return { kind: RecordKind.write, flags: 0, volumeId: 1, offset, length: payload.length, payload };
}

function isCode(code: string) {
  return (error: unknown) => error instanceof OperatingError && error.code === code;
}

async function newLog(dataBytes: number, options: { logId?: bigint; startLsn?: bigint; startPreviousChecksum?: number } = {}) {
  const disk = new SimDisk("log", dataStart + dataBytes);
  const log = await GroupLog.create(new FencedFile(disk), { sizeBytes: dataStart + dataBytes, groupId: "g", limits: smallLimits, ...options });
  return { disk, log };
}

// A primary log with `count` records of random sizes, and the records as read back.
async function primaryWith(count: number, seed = 1): Promise<{ log: GroupLog; records: LogRecord[] }> {
  const { log } = await newLog(1024 * KiB, { logId: 0x5eedn });
  const random = new Random(seed);
  for (let index = 0; index < count; index++) {
    if (random.below(4) === 0) log.append({ kind: RecordKind.zero, flags: 0, volumeId: 1, offset: index * 512, length: 4096 });
    else log.append(write(index * 512, random.fill(Buffer.alloc(512 * (1 + random.below(4))))));
  }
  await log.sync();
  return { log, records: await readAll(log, 1n) };
}

function fieldsOf(record: LogRecord): unknown {
  const { lsn, checksum, previousChecksum, logId, generation, kind, volumeId, offset, length, timestampMs, payload } = record;
  return { lsn, checksum, previousChecksum, logId, generation, kind, volumeId, offset, length, timestampMs, payload: Buffer.from(payload) };
}

describe("group log: a copy of another log", () => {
  it("create() at startLsn 100: empty, chained to the given checksum, and so after a reopen", async () => {
    const { disk, log } = await newLog(64 * KiB, { startLsn: 100n, startPreviousChecksum: 0xcafe_f00d });
    assert.equal(log.headLsn, 99n);
    assert.equal(log.headChecksum, 0xcafe_f00d);
    assert.deepEqual([log.usage().tailLsn, log.usage().headLsn, log.usage().durableLsn], [100n, 99n, 99n]);
    assert.equal(await log.previousChecksumOf(100n), 0xcafe_f00d, "head + 1: where a stream from 100 begins");
    assert.equal(await log.previousChecksumOf(99n), null, "before the log's start");
    assert.equal(await log.previousChecksumOf(101n), null, "beyond head + 1");
    assert.equal(await log.previousChecksumOf(0n), null);
    await log.close();

    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    assert.equal(reopened.headLsn, 99n);
    assert.equal(reopened.headChecksum, 0xcafe_f00d);
    assert.equal(reopened.recovery!.tailLsn, 100n);
    assert.equal(reopened.append(write(0, Buffer.alloc(512, 1))), 100n);
    await reopened.sync();
    const [first] = await readAll(reopened, 100n);
    assert.equal(first!.previousChecksum, 0xcafe_f00d);
    assert.equal(await reopened.previousChecksumOf(100n), 0xcafe_f00d, "inside the log now");
    assert.equal(await reopened.previousChecksumOf(101n), first!.checksum);
  });

  it("LSN 1 chains to nothing: a start checksum with it is a bug", async () => {
    const disk = new SimDisk("log", dataStart + 64 * KiB);
    await assert.rejects(GroupLog.create(disk, { sizeBytes: dataStart + 64 * KiB, groupId: "g", limits: smallLimits, startLsn: 1n, startPreviousChecksum: 5 }), AssertionError);
  });

  it("appendReceived: the primary's records verbatim, from the middle of its log; the copy survives a reopen", async () => {
    const primary = await primaryWith(40);
    const from = 11n;
    const startPreviousChecksum = await primary.log.previousChecksumOf(from);
    assert.equal(startPreviousChecksum, primary.records[9]!.checksum);
    const { disk, log } = await newLog(256 * KiB, { logId: primary.log.logId, startLsn: from, startPreviousChecksum: startPreviousChecksum! });
    for (const record of primary.records.slice(10, 30)) assert.equal(log.appendReceived(record), record.lsn);
    assert.equal(log.headLsn, 30n);
    assert.equal(log.headChecksum, primary.records[29]!.checksum);
    await log.sync();
    assert.deepEqual((await readAll(log, from)).map(fieldsOf), primary.records.slice(10, 30).map(fieldsOf));
    for (const lsn of [11n, 20n, 30n, 31n]) assert.equal(await log.previousChecksumOf(lsn), await primary.log.previousChecksumOf(lsn), `previousChecksumOf(${lsn})`);

    // Crash (nothing unsynced) and reopen: the same head and chain; the stream continues.
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    assert.equal(reopened.logId, primary.log.logId);
    assert.equal(reopened.headLsn, 30n);
    assert.equal(reopened.headChecksum, primary.records[29]!.checksum);
    assert.equal(reopened.recovery!.records, 20);
    for (const record of primary.records.slice(30)) reopened.appendReceived(record);
    await reopened.sync();
    assert.deepEqual((await readAll(reopened, from)).map(fieldsOf), primary.records.slice(10).map(fieldsOf));
  });

  it("appendReceived refuses a record that is not the next one (assert), and the log stays usable", async () => {
    const primary = await primaryWith(10);
    const { log } = await newLog(256 * KiB, { logId: primary.log.logId, startLsn: 3n, startPreviousChecksum: primary.records[1]!.checksum });
    log.appendReceived(primary.records[2]!); // LSN 3
    const record4 = primary.records[3]!;
    const refused: [string, LogRecord][] = [
      ["a gap", primary.records[4]!],
      ["a duplicate", primary.records[2]!],
      ["a broken chain", { ...record4, previousChecksum: record4.previousChecksum ^ 1 }],
      ["another log", { ...record4, logId: record4.logId + 1n }],
      // A changed payload or field is not checked here: appendReceived takes a record whose
      // checksum its decoder verified (the receiver's frame decoding), and does not hash again.
    ];
    for (const [name, record] of refused) {
      assert.throws(() => log.appendReceived(record), AssertionError, name);
      assert.equal(log.headLsn, 3n, `${name}: nothing appended`);
    }
    assert.equal(log.appendReceived(record4), 4n);
    await log.sync();
    assert.deepEqual((await readAll(log, 3n)).map((record) => record.checksum), [primary.records[2]!.checksum, record4.checksum]);
  });

  it("appendReceived wraps over many laps with release(); recovery finds the head and its checksum", async () => {
    const primary = await primaryWith(600, 3);
    const { disk, log } = await newLog(32 * KiB, { logId: primary.log.logId });
    for (const record of primary.records) {
      if (!log.hasRoom(record.payloadSize)) {
        await log.sync();
        log.release(record.lsn - 3n);
        await log.waitForRoom(record.payloadSize, 1000);
      }
      log.appendReceived(record);
    }
    await log.sync();
    log.release(595n);
    await log.checkpoint();
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    assert.equal(reopened.headLsn, 600n);
    assert.equal(reopened.headChecksum, primary.log.headChecksum);
    assert.deepEqual((await readAll(reopened, 596n)).map(fieldsOf), primary.records.slice(595).map(fieldsOf));
  });

  it("previousChecksumOf: head + 1, inside the log, and null below the tail once the space is reused", async () => {
    const { log } = await newLog(32 * KiB);
    const checksums = new Map<bigint, number>([[0n, 0]]);
    const payload = Buffer.alloc(3 * KiB, 7);
    const appendSome = async (count: number) => {
      for (let index = 0; index < count; index++) log.append(write(0, payload));
      await log.sync();
      for (const record of await readAll(log, log.usage().tailLsn)) checksums.set(record.lsn, record.checksum);
    };
    await appendSome(8);
    assert.equal(await log.previousChecksumOf(1n), 0);
    for (let lsn = 1n; lsn <= 9n; lsn++) assert.equal(await log.previousChecksumOf(lsn), checksums.get(lsn - 1n), `LSN ${lsn}`);
    log.release(8n);
    await log.checkpoint();
    await appendSome(8); // reuses the space of records 1…8
    const tail = log.usage().tailLsn;
    assert.equal(await log.previousChecksumOf(1n), null, "record 1 was overwritten");
    assert.equal(await log.previousChecksumOf(5n), null);
    assert.equal(await log.previousChecksumOf(tail), checksums.get(tail - 1n));
    assert.equal(await log.previousChecksumOf(log.headLsn + 1n), log.headChecksum);
    assert.equal(await log.previousChecksumOf(log.headLsn + 2n), null);
  });

  it("previousChecksumOf waits for a record that is only queued", async () => {
    const { log } = await newLog(64 * KiB);
    log.append(write(0, Buffer.alloc(512, 1)));
    const lsn2 = log.append(write(0, Buffer.alloc(512, 2)));
    assert.equal(log.usage().writtenLsn, 0n);
    const checksum = await log.previousChecksumOf(lsn2);
    await log.sync();
    const [first] = await readAll(log, 1n);
    assert.equal(checksum, first!.checksum);
  });

  it("a new log in a file that held another copy of the same log does not take the old records for its own", async () => {
    const primary = await primaryWith(20);
    const { disk, log } = await newLog(256 * KiB, { logId: primary.log.logId });
    for (const record of primary.records) log.appendReceived(record);
    await log.close();
    // A resync restarts the copy at LSN 8 in the same file (as Replica.beginResync does).
    const file = new FencedFile(disk);
    const restarted = await GroupLog.create(file, { sizeBytes: dataStart + 256 * KiB, groupId: "g", limits: smallLimits, logId: primary.log.logId, startLsn: 8n, startPreviousChecksum: primary.records[6]!.checksum });
    restarted.appendReceived(primary.records[7]!);
    await restarted.sync();
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    assert.equal(reopened.headLsn, 8n);
    assert.equal(reopened.headChecksum, primary.records[7]!.checksum);
    assert.deepEqual((await readAll(reopened, 8n)).map((record) => record.lsn), [8n]);
    // And a copy of another log in the same file: nothing of the old one.
    const other = await GroupLog.create(new FencedFile(disk), { sizeBytes: dataStart + 256 * KiB, groupId: "g", limits: smallLimits, logId: 0xabcn, startLsn: 1n });
    await other.close();
    const reopenedOther = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    assert.deepEqual([reopenedOther.headLsn, reopenedOther.headChecksum, reopenedOther.logId], [0n, 0, 0xabcn]);
  });
});

describe("group log: appended()", () => {
  it("resolves at once after lsn, waits for the next append (either kind) otherwise, rejects after close", async () => {
    const primary = await primaryWith(3);
    const { log } = await newLog(64 * KiB, { logId: primary.log.logId });
    let woke = false;
    const waiting = log.appended(0n).then(() => (woke = true));
    await settle();
    assert.equal(woke, false, "nothing appended yet");
    log.appendReceived(primary.records[0]!);
    await waiting;
    await log.appended(0n); // record 1 is after LSN 0
    let woke2 = false;
    const waiting2 = log.appended(1n).then(() => (woke2 = true));
    await settle();
    assert.equal(woke2, false);
    log.appendReceived(primary.records[1]!);
    await waiting2;
    const waiting3 = log.appended(2n);
    await log.close();
    await waiting3; // woken by the close (the reader then finds the log closed)
    await assert.rejects(log.appended(2n), isCode("SHUTTING_DOWN"));
  });
});
