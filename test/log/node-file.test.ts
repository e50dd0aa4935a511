// The group log on a real file (NodeBlockFile, native addon) in a temporary directory:
// appends with durability waits, reopen after a clean close and after an abandoned log (as
// after kill -9), and a new log made over an old one never recovers the old records. Run
// with the log's batches through the page cache and around it (bypassCache, as nodes open
// their logs).

import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { logSizeMin } from "../../src/constants.js";
import { NodeBlockFile } from "../../src/io/node-block-file.js";
import { GroupLog } from "../../src/log/group-log.js";
import { RecordKind } from "../../src/log/record.js";
import { Random } from "../../src/sim/random.js";
import { readAll } from "./helpers.js";

describe("group log on a real file", () => {
  let directory = "";
  before(async () => {
    directory = await mkdtemp(join(tmpdir(), "lockstep-log-"));
  });
  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  const writebacks = new Map<boolean, number>(); // startWriteback calls while appending, by mode
  for (const bypassCache of [false, true]) it(`appends, closes, reopens, recovers an abandoned log, and ignores an older log (${bypassCache ? "batches around the page cache" : "through the page cache"})`, async () => {
    const path = join(directory, `group-${bypassCache}.log`);
    const random = new Random(11);
    const payloads: Buffer[] = [];
    let file = await NodeBlockFile.open(path, { create: 0, bypassCache });
    assert.equal(file.bypassesCache, bypassCache, "the test directory's file system refuses O_DIRECT");
    let log = await GroupLog.create(file, { sizeBytes: logSizeMin, groupId: "real" });
    assert.equal((await stat(path)).size, logSizeMin);
    let writebackCalls = 0;
    const startWriteback = file.startWriteback.bind(file);
    file.startWriteback = (offset, length) => {
      writebackCalls += 1;
      startWriteback(offset, length);
    };
    const waits: Promise<void>[] = [];
    for (let index = 0; index < 2000; index++) {
      const payload = random.fill(Buffer.alloc(random.below(3) === 0 ? 65536 : 4096));
      payloads.push(payload);
      const lsn = log.append({ kind: RecordKind.write, flags: 0, volumeId: 1, offset: index * 4096, length: payload.length, payload });
      if (index % 16 === 15) waits.push(log.durable(lsn));
    }
    await Promise.all(waits);
    const usage = log.usage();
    assert.ok(usage.syncs < 2000 / 16, `${usage.syncs} datasyncs`);
    // (small batches, and a first one that starts inside a page, go through the cache)
    if (bypassCache) assert.ok(file.directWrites > 0, `none of ${usage.batches} batches around the page cache`);
    else assert.equal(file.directWrites, 0);
    // writeback is started for bytes written through the cache only (tens of MiB appended here)
    writebacks.set(bypassCache, writebackCalls);
    if (!bypassCache) assert.ok(writebackCalls >= 3, `${writebackCalls} writebacks started`);
    else assert.ok(writebackCalls < writebacks.get(false)!, `${writebackCalls} writebacks started around the cache, ${writebacks.get(false)} through it`);
    await log.close();
    await file.close();

    file = await NodeBlockFile.open(path, { bypassCache });
    log = await GroupLog.open(file, { groupId: "real" });
    assert.equal(log.recovery!.headLsn, 2000n);
    const records = await readAll(log, 1n);
    assert.equal(records.length, 2000);
    records.forEach((record, index) => assert.ok(record.payload.equals(payloads[index]!), `record ${index + 1}`));
    // Abandon the log without close (a killed process): recovery still finds every record.
    for (let index = 0; index < 10; index++) log.append({ kind: RecordKind.trim, flags: 0, volumeId: 1, offset: 0, length: 4096 });
    await log.written(2010n);
    await file.close();

    file = await NodeBlockFile.open(path, { bypassCache });
    log = await GroupLog.open(file);
    assert.equal(log.recovery!.headLsn, 2010n);
    await log.close();
    await file.close();

    // A new log over the old one: the old records have another logId and are not recovered.
    file = await NodeBlockFile.open(path, { bypassCache });
    log = await GroupLog.create(file, { sizeBytes: logSizeMin, groupId: "real" });
    await log.close();
    await file.close();
    file = await NodeBlockFile.open(path);
    log = await GroupLog.open(file);
    assert.equal(log.recovery!.headLsn, 0n);
    assert.equal(log.recovery!.stoppedBecause, "log");
    await file.close();
  });
});
