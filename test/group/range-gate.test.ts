import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AppliedWatermark } from "../../src/group/applied-watermark.js";
import { RangeGate } from "../../src/group/range-gate.js";

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
});
