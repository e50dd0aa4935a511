import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { AppliedWatermark } from "../../src/group/applied-watermark.js";
import { Group } from "../../src/group/group.js";
import { encodeOperationSet } from "../../src/group/operation.js";
import { RangeGate } from "../../src/group/range-gate.js";
import { GroupLog } from "../../src/log/group-log.js";
import { silentLogger } from "../../src/logger.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { Volume } from "../../src/volume/volume.js";
import { smallLimits } from "../log/helpers.js";

describe("range gate", () => {
  it("makes overlapping writes wait for their predecessors, and only those", async () => {
    const gate = new RangeGate();
    const first = gate.enter(1, 0, 4096);
    const disjoint = gate.enter(1, 4096, 4096);
    const otherVolume = gate.enter(2, 0, 4096);
    const overlapping = gate.enter(1, 2048, 4096);
    assert.equal(first.wait, null);
    assert.equal(disjoint.wait, null);
    assert.equal(otherVolume.wait, null);
    assert.notEqual(overlapping.wait, null);
    let released = false;
    const waiting = overlapping.wait!.then(() => (released = true));
    gate.leave(first);
    await Promise.resolve();
    assert.equal(released, false, "still waits for the second overlapping predecessor");
    gate.leave(disjoint);
    await waiting;
    assert.equal(released, true);
    gate.leave(overlapping);
    gate.leave(otherVolume);
    assert.equal(gate.size, 0);
  });
});

describe("range gate, whole", () => {
  it("an entry for every key waits for everything before it, and everything after waits for it", async () => {
    const gate = new RangeGate();
    const before = gate.enter(7, 1 << 30, 512);
    const all = gate.enterAll();
    assert.notEqual(all.wait, null, "waits for the entry before it");
    const after = gate.enter(3, 0, 512);
    assert.notEqual(after.wait, null, "a later entry on any key waits for it");
    let allowed = false;
    const waiting = after.wait!.then(() => (allowed = true));
    gate.leave(before);
    await all.wait;
    await Promise.resolve();
    assert.equal(allowed, false);
    gate.leave(all);
    await waiting;
    gate.leave(after);
    assert.equal(gate.size, 0);
  });

  // A resync reads a region at an exact point (readOrdered) while an operation that changes the
  // volume (a restore) runs: the LSN returned and the content read must belong together, or the
  // peer would get the region before the operation after the operation's record.
  it("a read at an exact point never pairs an operation's LSN with content from before it", async () => {
    const logSize = 512 * 1024;
    const log = await GroupLog.create(new SimDisk("log", logSize), { sizeBytes: logSize, groupId: "g", limits: smallLimits });
    const group = new Group("g", log, "write-ahead", null, silentLogger);
    const volume = new Volume(1, "v", new SimDisk("volume", 1024 * 1024), 1024 * 1024, () => 0);
    group.addVolume(volume);
    await group.write(volume, 0, Buffer.alloc(4096, 1), false);
    const payload = encodeOperationSet({ version: 1, order: "ordered", operations: [{ op: "snapshot.restore", volumeId: 1, snapshot: "s" }] });
    let performing!: () => void;
    const started = new Promise<void>((resolve) => (performing = resolve));
    const operation = group.operate(payload, 1, () => undefined, async () => {
      performing();
      await new Promise((resolve) => setTimeout(resolve, 20));
      await volume.write(Buffer.alloc(4096, 2), 0); // what the restore changes, after its LSN
    });
    await started;
    const target = Buffer.alloc(4096);
    const atLsn = await group.readOrdered(volume, 0, target);
    const { lsn } = await operation;
    assert.ok(atLsn >= lsn, "the read came after the operation's record");
    assert.equal(target[0], 2, "so it sees what the operation changed");
    await group.close();
  });
});

describe("applied watermark", () => {
  it("advances only over a contiguous prefix of completed LSNs", () => {
    const watermark = new AppliedWatermark(10n);
    for (const lsn of [11n, 12n, 13n, 14n]) watermark.begin(lsn);
    watermark.end(13n);
    assert.equal(watermark.appliedLsn, 10n);
    watermark.end(11n);
    assert.equal(watermark.appliedLsn, 11n);
    watermark.end(12n);
    assert.equal(watermark.appliedLsn, 13n);
    watermark.end(14n);
    assert.equal(watermark.appliedLsn, 14n);
    assert.equal(watermark.inflight, 0);
    assert.throws(() => watermark.begin(14n), /begun after/);
  });

  it("equals the last LSN before the oldest one still in flight, whatever the order of begins and ends", () => {
    // Steps: true begins the next LSN, false ends one of those in flight (picked by the index).
    fc.assert(fc.property(fc.array(fc.tuple(fc.boolean(), fc.nat()), { maxLength: 3000 }), (steps) => {
      const watermark = new AppliedWatermark(0n);
      const inflight: bigint[] = [];
      let next = 1n;
      for (const [begin, pick] of steps) {
        if (begin || inflight.length === 0) {
          watermark.begin(next);
          inflight.push(next);
          next += 1n;
        } else {
          const [lsn] = inflight.splice(pick % inflight.length, 1);
          watermark.end(lsn!);
        }
        const oldest = inflight.reduce((low, lsn) => (lsn < low ? lsn : low), next);
        assert.equal(watermark.appliedLsn, oldest - 1n);
        assert.equal(watermark.inflight, Number(next - oldest)); // begun and not passed yet
      }
    }), { numRuns: 200 });
  });
});
