// The write done in one synchronous step (Group.changeNow): it is taken only where the general
// path would not have to wait for anything, and otherwise the write goes the general way with
// the same outcome: LSN order on the image, errors held and retried, FUA and write-ahead
// untouched.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OperatingError } from "../../src/errors.js";
import { Group, type Durability } from "../../src/group/group.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { Volume } from "../../src/volume/volume.js";
import { simGroup } from "./sim-group.js";

const volumeSize = 1024 * 1024;
const block = (fill: number) => Buffer.alloc(4096, fill);

async function setup(durability: Durability): Promise<{ group: Group; volume: Volume; disk: SimDisk }> {
  const group = await simGroup(durability);
  const disk = new SimDisk("image", volumeSize);
  const volume = new Volume(1, "disk0", disk, volumeSize, () => 0);
  group.addVolume(volume);
  return { group, volume, disk };
}

function imageAt(disk: SimDisk, offset: number): Buffer {
  const target = Buffer.alloc(4096);
  disk.peek(target, offset);
  return target;
}

describe("a write done at once", () => {
  it("is in the image when write() returns, once its extent is in the activity map", async () => {
    const { group, volume, disk } = await setup("activity-map");
    await group.write(volume, 0, block(1), false); // the extent's first write persists the map first
    assert.equal(group.stats.writesNow, 0);
    const done = group.write(volume, 8192, block(2), false);
    assert.ok(imageAt(disk, 8192).equals(block(2)), "written before write() returned");
    await done;
    assert.equal(group.stats.writesNow, 1);
    assert.equal(group.inflight, 0);
    assert.equal(group.log.headLsn, 2n, "logged like any write");
    assert.equal(group.appliedLsn, 2n, "the applied watermark passed it");
    const third = group.write(volume, 16384, block(3), true); // FUA: the general path, in flight
    group.write(volume, 65536, block(4), false); // done at once while LSN 3 is in flight
    assert.equal(group.stats.writesNow, 2);
    assert.equal(group.appliedLsn, 2n, "not past LSN 3, still in flight");
    await third;
    assert.equal(group.appliedLsn, 4n, "LSN 3 done: past both");
    await group.log.sync();
    const records = [];
    for await (const record of group.log.cursor(1n)) records.push(record);
    // no link: logged without their data (RecordFlag.dataOmitted; test/group/data-omitted.test.ts)
    assert.deepEqual(records.map((record) => [record.lsn, record.offset, record.length, record.payloadSize]), [[1n, 0, 4096, 0], [2n, 8192, 4096, 0], [3n, 16384, 4096, 0], [4n, 65536, 4096, 0]]);
    await group.close();
  });

  it("waits behind an overlapping write in flight, and the image ends in LSN order", async () => {
    const { group, volume, disk } = await setup("activity-map");
    await group.write(volume, 0, block(1), false);
    const first = group.write(volume, 0, block(7), true); // FUA: the general path, in flight
    const second = group.write(volume, 0, block(8), false);
    assert.ok(!imageAt(disk, 0).equals(block(8)), "not written ahead of the write before it");
    await Promise.all([first, second]);
    assert.ok(imageAt(disk, 0).equals(block(8)));
    assert.equal(group.stats.writesNow, 0);
    await group.close();
  });

  it("goes the general way when the file declines, and a disk error is held as before", async () => {
    const { group, volume, disk } = await setup("activity-map");
    await group.write(volume, 0, block(1), false);
    disk.injectFault("EIO", "write", 1);
    await assert.rejects(group.write(volume, 4096, block(3), false), (error) => error instanceof OperatingError && error.code === "DISK_IO");
    assert.equal(group.unappliedList().length, 1, "held for a retry");
    assert.equal(group.stats.writesNow, 0);
    await group.close();
  });

  it("is never taken under write-ahead, where the log must be durable first", async () => {
    const { group, volume, disk } = await setup("write-ahead");
    await group.write(volume, 0, block(1), false);
    const done = group.write(volume, 4096, block(2), false);
    assert.ok(!imageAt(disk, 4096).equals(block(2)), "the image waits for the log");
    await done;
    assert.ok(imageAt(disk, 4096).equals(block(2)));
    assert.equal(group.stats.writesNow, 0);
    await group.close();
  });

  it("is refused once the group is closing", async () => {
    const { group, volume } = await setup("activity-map");
    await group.write(volume, 0, block(1), false);
    const closing = group.close();
    await assert.rejects(group.write(volume, 4096, block(2), false), (error) => error instanceof OperatingError && error.code === "SHUTTING_DOWN");
    await closing;
  });
});
