import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ActivityMap, activitySlotSize } from "../../src/group/activity-map.js";
import { activityExtentSize, activityExtentsKeep, activityExtentsMax } from "../../src/constants.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import type { BlockFile } from "../../src/io/block-file.js";
import { Group } from "../../src/group/group.js";
import { GroupLog } from "../../src/log/group-log.js";
import { silentLogger } from "../../src/logger.js";
import { Volume } from "../../src/volume/volume.js";
import { smallLimits } from "../log/helpers.js";

describe("activity map", () => {
  it("makes an extent durable before the write proceeds, once per extent", async () => {
    const disk = new SimDisk("activity", activitySlotSize * 2);
    let durable = 0n;
    const { map, recovered } = await ActivityMap.open(disk, () => durable, async () => undefined);
    assert.deepEqual(recovered, []);
    const first = map.mark(1, 0, 4096);
    assert.ok(first instanceof Promise, "a cold extent needs a durable mark");
    await first;
    assert.equal(disk.syncCount, 1);
    map.done(1, 0, 4096, 1n);
    assert.equal(map.mark(1, 8192, 4096), null, "a hot extent costs nothing");
    map.done(1, 8192, 4096, 2n);
    await map.mark(2, activityExtentSize * 3 - 1, 2); // two extents of volume 2
    map.done(2, activityExtentSize * 3 - 1, 2, 3n);

    // Power cut: the map on disk must name every extent written since the log was durable.
    disk.crash(new Random(1), 0);
    const reopened = await ActivityMap.open(disk, () => durable, async () => undefined);
    const names = reopened.recovered.map((extent) => `${extent.volumeId}@${extent.offset / activityExtentSize}`).sort();
    assert.deepEqual(names, ["1@0", "2@2", "2@3"]);

    // Once the log is durable past their LSNs, extents cool at the next persist.
    durable = 3n;
    await reopened.map.mark(3, 0, 4096);
    reopened.map.done(3, 0, 4096, 4n);
    const again = await ActivityMap.open(disk, () => durable, async () => undefined);
    assert.deepEqual(again.recovered.map((extent) => extent.volumeId), [3]);
  });

  it("keeps a working set hot while it fits; beyond activityExtentsKeep the least recently written cool first", async () => {
    const disk = new SimDisk("activity", activitySlotSize * 2);
    let durable = 0n;
    const { map } = await ActivityMap.open(disk, () => durable, async () => undefined);
    let lsn = 0n;
    const write = async (index: number): Promise<void> => {
      lsn += 1n;
      const marked = map.mark(1, index * activityExtentSize, 4096);
      if (marked !== null) await marked;
      map.done(1, index * activityExtentSize, 4096, lsn);
    };
    for (let index = 0; index < activityExtentsKeep - 1; index++) await write(index);
    durable = lsn; // everything durable (a FLUSH): every extent could cool
    await write(activityExtentsKeep - 1); // a new extent: the map is persisted again
    const persists = disk.syncCount;
    for (let round = 0; round < 3; round++) for (let index = 0; index < activityExtentsKeep; index++) await write(index);
    assert.equal(disk.syncCount, persists, "rewriting a working set that fits marks nothing, durable or not");
    assert.equal(map.hotCount, activityExtentsKeep);

    // Ten extents more: the persist that covers them cools the ten written longest ago (the
    // first ten of the last round), and the map on disk names the newest activityExtentsKeep.
    durable = lsn;
    for (let index = activityExtentsKeep; index < activityExtentsKeep + 10; index++) await write(index);
    assert.ok(map.hotCount <= activityExtentsKeep + 1, `cooled down to the keep (${map.hotCount} hot)`);
    const reopened = await ActivityMap.open(disk, () => durable, async () => undefined);
    const onDisk = new Set(reopened.recovered.map((extent) => extent.offset / activityExtentSize));
    for (let index = activityExtentsKeep; index < activityExtentsKeep + 10; index++) assert.ok(onDisk.has(index), `new extent ${index} is on disk`);
    for (let index = 0; index < 9; index++) assert.ok(!onDisk.has(index), `extent ${index}, written longest ago, cooled`);
    assert.ok(onDisk.has(activityExtentsKeep - 1), "the most recently rewritten old extent stays hot");
  });

  it("keeps the extent of a failed write hot", async () => {
    const disk = new SimDisk("activity", activitySlotSize * 2);
    const { map } = await ActivityMap.open(disk, () => 100n, async () => undefined);
    await map.mark(1, 0, 4096);
    map.done(1, 0, 4096, 5n, true);
    await map.mark(1, activityExtentSize * 5, 4096);
    map.done(1, activityExtentSize * 5, 4096, 6n);
    const reopened = await ActivityMap.open(disk, () => 100n, async () => undefined);
    assert.ok(reopened.recovered.some((extent) => extent.volumeId === 1 && extent.offset === 0), "the failed write's extent stays hot");
  });

  it("when every slot has a write in flight, a new extent waits for one to go idle (no spinning)", async () => {
    const disk = new SimDisk("activity", activitySlotSize * 2);
    let syncs = 0;
    const { map } = await ActivityMap.open(disk, () => 1_000_000n, async () => void (syncs += 1));
    for (let index = 0; index < activityExtentsMax; index++) await map.mark(1, index * activityExtentSize, 4096);
    let covered = false;
    const waiting = map.mark(2, 0, 4096)!.then(() => (covered = true));
    for (let round = 0; round < 20; round++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(covered, false, "no slot is free while all writes are in flight");
    const persistsWhileWaiting = disk.syncCount;
    for (let round = 0; round < 20; round++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(disk.syncCount, persistsWhileWaiting, "it waits instead of persisting again and again");
    map.done(1, 0, 4096, 1n); // one write finishes; its extent can cool
    await waiting;
    assert.equal(covered, true);
    assert.ok(syncs >= 1, "a full map made the log and images durable so idle extents could cool");
  });

  it("an extent cooled by a persist still being written is not covered: a write there waits for the next map", async () => {
    // The map being written leaves the cooled extent out, so a write landing there meanwhile
    // must not count the map on disk before it (which named the extent) as its cover: a crash
    // after the new map would leave that write in the image and out of the map.
    const disk = new SimDisk("activity", activitySlotSize * 2);
    let gate: Promise<void> | null = null;
    let open: () => void = () => undefined;
    const file = {
      read: (target: Buffer, position: number) => disk.read(target, position),
      write: async (sources: readonly Buffer[], position: number) => {
        if (gate !== null) await gate;
        return disk.write(sources, position);
      },
      datasync: () => disk.datasync(),
      close: () => disk.close(),
    } as unknown as BlockFile;
    let durable = 0n;
    const { map } = await ActivityMap.open(file, () => durable, async () => undefined);
    let lsn = 0n;
    for (let index = 0; index < activityExtentsKeep; index++) {
      lsn += 1n;
      const marked = map.mark(1, index * activityExtentSize, 4096);
      if (marked !== null) await marked;
      map.done(1, index * activityExtentSize, 4096, lsn);
    }
    assert.ok(map.covers(1, 0, 4096), "extent 0 is hot and on disk");
    durable = lsn; // a FLUSH: every extent may cool
    gate = new Promise((resolve) => (open = resolve));
    const newExtent = activityExtentsKeep * activityExtentSize;
    const persisting = map.mark(1, newExtent, 4096);
    assert.ok(persisting !== null, "a new extent persists the map");
    for (let round = 0; round < 5; round++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(map.covers(1, 0, 4096), false, "extent 0 (written longest ago) cooled out of the map being written");
    const again = map.mark(1, 0, 4096);
    assert.ok(again !== null, "a write to it waits for a map that names it");
    open();
    gate = null;
    await persisting;
    await again;
    map.done(1, newExtent, 4096, lsn + 1n);
    map.done(1, 0, 4096, lsn + 2n);
    const reopened = await ActivityMap.open(disk, () => durable, async () => undefined);
    assert.ok(reopened.recovered.some((extent) => extent.offset === 0), "the map on disk names extent 0 again");
  });
});

// A group's recovery keeps the hot extents in the map on disk until they were handed to the
// links (Group.recoveredHandedOff): cleared inside recover(), a crash before the links had
// marked them lost where image and log may disagree (found by the simulator with
// --activity-keep 1, seed 93: a crash during a start, then a recovery with an empty map).
describe("a group's recovery and the activity map", () => {
  it("keeps the recovered extents on disk until they are handed off", async () => {
    const logSize = 512 * 1024;
    const logDisk = new SimDisk("log", logSize);
    const mapDisk = new SimDisk("activity", activitySlotSize * 2);
    const volumeDisk = new SimDisk("image", 1024 * 1024);
    const start = async (fresh: boolean) => {
      const log = fresh ? await GroupLog.create(logDisk, { sizeBytes: logSize, groupId: "g", limits: smallLimits }) : await GroupLog.open(logDisk, { limits: smallLimits });
      let group!: Group;
      const opened = await ActivityMap.open(mapDisk, (volumeId) => group.coolLsn(volumeId), () => group.syncAll());
      group = new Group("g", log, "activity-map", opened.map, silentLogger);
      const volume = new Volume(1, "disk0", volumeDisk, 1024 * 1024, () => 0);
      group.addVolume(volume);
      return { group, volume, recovered: opened.recovered };
    };
    const first = await start(true);
    await first.group.recover(first.recovered);
    await first.group.recoveredHandedOff();
    await first.group.write(first.volume, 0, Buffer.alloc(4096, 1), false); // marks extent 0
    const hotNames = (extents: readonly { volumeId: number; offset: number }[]) => extents.map((extent) => `${extent.volumeId}@${extent.offset}`);
    // kill -9: nothing closed. The next start recovers, and crashes before handing off.
    const second = await start(false);
    assert.deepEqual(hotNames(second.recovered), ["1@0"]);
    await second.group.recover(second.recovered);
    const third = await start(false);
    assert.deepEqual(hotNames(third.recovered), ["1@0"], "still on disk after a recovery that was not handed off");
    await third.group.recover(third.recovered);
    await third.group.recoveredHandedOff();
    const fourth = await start(false);
    assert.deepEqual(fourth.recovered, [], "forgotten once handed off");
  });
});
