import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ActivityMap, activitySlotSize } from "../../src/group/activity-map.js";
import { activityExtentSize, activityExtentsKeep, activityExtentsMax } from "../../src/constants.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import type { BlockFile } from "../../src/io/block-file.js";

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
