// Power cuts at the group level, on simulated disks: random batches of writes (some FUA),
// zeroes and flushes go through the real write path (log, activity map, volume); then every
// disk loses a random part of what was not synced, sector by sector, while writes may still
// be in flight. After recovery (log scan, redo, activity map), every sector shows the newest
// durable write to it or a write issued after that one — never anything older, never garbage.
// Both durability modes.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ActivityMap, activitySlotSize } from "../../src/group/activity-map.js";
import { Group, type Durability, type OperationPerformer } from "../../src/group/group.js";
import { GroupLog } from "../../src/log/group-log.js";
import { silentLogger } from "../../src/logger.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { Volume } from "../../src/volume/volume.js";
import { FencedFile, smallLimits } from "../log/helpers.js";

const sector = 512;
const volumeSize = 256 * 1024;
const sectors = volumeSize / sector;
const logSize = 1024 * 1024;

interface Disks {
  log: SimDisk;
  volume: SimDisk;
  activity: SimDisk;
}

interface Opened {
  group: Group;
  volume: Volume;
  fences: FencedFile[];
}

async function open(disks: Disks, durability: Durability, fresh: boolean, operations?: (volume: Volume) => OperationPerformer): Promise<Opened> {
  const fences = [new FencedFile(disks.log), new FencedFile(disks.volume), new FencedFile(disks.activity)];
  const [logFile, volumeFile, activityFile] = fences as [FencedFile, FencedFile, FencedFile];
  const log = fresh
    ? await GroupLog.create(logFile, { sizeBytes: logSize, groupId: "g", limits: smallLimits })
    : await GroupLog.open(logFile, { limits: smallLimits });
  let activity: ActivityMap | null = null;
  let recovered: Awaited<ReturnType<typeof ActivityMap.open>>["recovered"] = [];
  let group!: Group;
  if (durability === "activity-map") {
    const opened = await ActivityMap.open(activityFile, (volumeId) => group.coolLsn(volumeId), () => group.syncAll());
    activity = opened.map;
    recovered = opened.recovered;
  }
  group = new Group("g", log, durability, activity, silentLogger);
  const volume = new Volume(1, "v", volumeFile, volumeSize, () => 0);
  group.addVolume(volume);
  if (operations !== undefined) group.operations = operations(volume);
  await group.recover(recovered);
  await group.recoveredHandedOff(); // no links to hand the hot extents to
  return { group, volume, fences };
}

// Sector content: write id (u32) + sector index (u32) + filler; zero = never written.
function sectorData(writeId: number, sectorIndex: number): Buffer {
  const data = Buffer.alloc(sector, writeId & 0xff);
  data.writeUInt32LE(writeId, 0);
  data.writeUInt32LE(sectorIndex, 4);
  return data;
}

interface SectorHistory {
  // Write ids in issue order (0 = zeroed), and the index of the newest durable one.
  ids: number[];
  durableIndex: number;
}

async function trial(seed: number, durability: Durability): Promise<{ durableSectors: number }> {
  const random = new Random(seed);
  const disks: Disks = { log: new SimDisk("log", logSize), volume: new SimDisk("volume", volumeSize), activity: new SimDisk("activity", activitySlotSize * 2) };
  let opened = await open(disks, durability, true);
  const history: SectorHistory[] = Array.from({ length: sectors }, () => ({ ids: [0], durableIndex: 0 }));
  let writeId = 0;
  const steps = 10 + random.below(30);
  for (let step = 0; step < steps; step++) {
    // A batch of non-overlapping changes in flight together.
    const used = new Set<number>();
    const batch: Promise<void>[] = [];
    const acked: { first: number; count: number; index: number[] }[] = [];
    for (let change = 0; change < 1 + random.below(6); change++) {
      const count = 1 + random.below(16);
      const first = random.below(sectors - count);
      if ([...Array(count).keys()].some((at) => used.has(first + at))) continue;
      for (let at = 0; at < count; at++) used.add(first + at);
      writeId += 1;
      const id = writeId;
      const zero = random.chance(0.1);
      const fua = random.chance(0.2);
      const index = [...Array(count).keys()].map((at) => history[first + at]!.ids.push(zero ? 0 : id) - 1);
      const data = Buffer.concat([...Array(count).keys()].map((at) => sectorData(id, first + at)));
      const run = zero
        ? opened.group.zero(opened.volume, first * sector, count * sector, random.chance(0.5), fua)
        : opened.group.write(opened.volume, first * sector, data, fua);
      batch.push(
        run.then(() => {
          acked.push({ first, count, index });
          if (fua) for (let at = 0; at < count; at++) history[first + at]!.durableIndex = Math.max(history[first + at]!.durableIndex, index[at]!);
        }),
      );
    }
    if (step === steps - 1) {
      for (const pending of batch) pending.catch(() => undefined); // in flight at the cut: fails on the fenced disk
      break;
    }
    await Promise.all(batch);
    if (random.chance(0.3)) {
      await opened.group.flush(opened.volume);
      for (const { first, count, index } of acked) {
        for (let at = 0; at < count; at++) history[first + at]!.durableIndex = Math.max(history[first + at]!.durableIndex, index[at]!);
      }
    }
    if (random.chance(0.1)) await opened.group.checkpoint();
  }
  // The cut: fence the old process's files, drop/tear what was not synced, reboot.
  for (const fence of opened.fences) fence.fence();
  const keep = random.below(100) / 100;
  disks.log.crash(random, keep);
  disks.volume.crash(random, keep);
  disks.activity.crash(random, keep);
  opened = await open(disks, durability, false);
  let durableSectors = 0;
  const image = Buffer.alloc(volumeSize);
  await opened.volume.read(image, 0);
  for (let index = 0; index < sectors; index++) {
    const content = image.subarray(index * sector, (index + 1) * sector);
    const { ids, durableIndex } = history[index]!;
    if (durableIndex > 0) durableSectors += 1;
    const allowed = ids.slice(durableIndex);
    const matches = allowed.some((id) => (id === 0 ? content.every((byte) => byte === 0) : content.equals(sectorData(id, index))));
    assert.ok(matches, `seed ${seed} (${durability}): sector ${index} holds ${content.readUInt32LE(0)}, allowed ${JSON.stringify(allowed)}`);
  }
  await opened.group.close();
  return { durableSectors };
}

describe("power cut through the group write path", () => {
  for (const durability of ["activity-map", "write-ahead"] as const) {
    it(`loses no durable write (${durability}, 150 seeds)`, async () => {
      let durable = 0;
      for (let seed = 1; seed <= 150; seed++) durable += (await trial(seed, durability)).durableSectors;
      assert.ok(durable > 1000, `durable sectors were checked (${durable})`);
    });
  }
});

// An operation is redone from its record after a crash, on the images as they are then. In
// activity-map mode the images are the only copy of the changes before it, so they must be
// durable before the record is (found by the simulator: a snapshot redone on an image that had
// lost an unflushed write before it, differing from its twins).
describe("power cut between an operation's record and its performing", () => {
  for (const durability of ["activity-map", "write-ahead"] as const) {
    it(`redoes it on images that hold every change before it (${durability})`, async () => {
      const disks: Disks = { log: new SimDisk("log", logSize), volume: new SimDisk("volume", volumeSize), activity: new SimDisk("activity", activitySlotSize * 2) };
      const seen: { lsn: bigint; first: Buffer }[] = [];
      const performer = (volume: Volume): OperationPerformer => ({
        perform: async (record) => {
          const first = Buffer.alloc(sector);
          await volume.read(first, 0);
          seen.push({ lsn: record.lsn, first });
        },
        sync: async () => undefined,
        snapshotImages: () => [],
        freezeTwins: () => Promise.reject(new Error("not in this test")),
      });
      let opened = await open(disks, durability, true, performer);
      await opened.group.write(opened.volume, 0, sectorData(7, 0), false); // acknowledged, not flushed
      // The power cut lands as the operation is about to be performed: its record is durable.
      const cut = opened.group.operate(Buffer.from("op"), opened.volume.id, () => undefined, async () => {
        for (const fence of opened.fences) fence.fence();
        for (const disk of [disks.log, disks.volume, disks.activity]) disk.crash(new Random(1), 0); // every unsynced sector lost
        throw new Error("power cut");
      });
      await assert.rejects(cut);
      // Recovery redoes the operation (its record was durable) on the recovered image.
      opened = await open(disks, durability, false, performer);
      assert.equal(seen.length, 1, "redone once at recovery");
      assert.ok(seen[0]!.first.equals(sectorData(7, 0)), `the redone operation saw write ${seen[0]!.first.readUInt32LE(0)}, not 7`);
      await opened.group.close();
    });
  }
});
