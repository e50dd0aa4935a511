// The delayed log writer (GroupLog.delayWrites, for a primary under activity-map durability):
// appends wait for the delay and then share one batch, records that arrive while a batch is
// written wait for the next delay, and whoever waits on the log (durability, a checkpoint, a
// sync link through hurry(), a full delay batch) gets it written at once.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { GroupLog, type LogClock } from "../../src/log/group-log.js";
import { logWriteDelayBytesMax } from "../../src/log/limits.js";
import { RecordKind } from "../../src/log/record.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { KiB, smallLimits } from "./helpers.js";

// A clock whose timers run only when the test says so.
class ManualClock implements LogClock {
  private timers: { at: number; callback: () => void }[] = [];
  private now = 0;

  nowMs(): number {
    return this.now;
  }

  setTimeout(callback: () => void, ms: number): () => void {
    const timer = { at: this.now + ms, callback };
    this.timers.push(timer);
    return () => (this.timers = this.timers.filter((other) => other !== timer));
  }

  get pending(): number {
    return this.timers.length;
  }

  advance(ms: number): void {
    this.now += ms;
    const due = this.timers.filter((timer) => timer.at <= this.now);
    this.timers = this.timers.filter((timer) => timer.at > this.now);
    for (const timer of due) timer.callback();
  }
}

// A disk whose writes wait until the test lets them go.
class HeldDisk extends SimDisk {
  started = 0;
  private release: (() => void) | null = null;
  private gate: Promise<void> | null = null;

  hold(): void {
    this.gate = new Promise((resolve) => (this.release = resolve));
  }

  letGo(): void {
    this.release?.();
    this.gate = null;
  }

  override async write(sources: readonly Buffer[], position: number, durable = false): Promise<void> {
    this.started += 1;
    if (this.gate !== null) await this.gate;
    return super.write(sources, position, durable);
  }
}

const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
const write = (offset: number, bytes = 4096) => ({ kind: RecordKind.write, flags: 0, volumeId: 1, offset, length: bytes, payload: Buffer.alloc(bytes, 7) });

async function delayedLog(): Promise<{ log: GroupLog; clock: ManualClock; disk: HeldDisk }> {
  const clock = new ManualClock();
  const size = 8192 + 4096 * KiB;
  const disk = new HeldDisk("log", size);
  const log = await GroupLog.create(disk, { sizeBytes: size, groupId: "g", limits: smallLimits, clock });
  log.delayWrites(1);
  return { log, clock, disk };
}

describe("the delayed log writer", () => {
  it("writes appends only when the delay ends, in one batch", async () => {
    const { log, clock } = await delayedLog();
    const before = log.usage().batches;
    for (let index = 0; index < 5; index++) log.append(write(index * 4096));
    await settle();
    assert.equal(log.usage().writtenLsn, 0n, "nothing written before the delay ends");
    assert.equal(clock.pending, 1, "one timer for all of them");
    clock.advance(1);
    await settle();
    assert.equal(log.usage().writtenLsn, 5n);
    assert.equal(log.usage().batches - before, 1);
    await log.close();
  });

  it("leaves records that arrive during a batch for the next delay", async () => {
    const { log, clock, disk } = await delayedLog();
    log.append(write(0));
    disk.hold();
    const started = disk.started;
    clock.advance(1);
    await settle();
    assert.equal(disk.started, started + 1, "the first batch is being written");
    log.append(write(4096)); // arrives during that round
    disk.letGo();
    await settle();
    assert.equal(log.usage().writtenLsn, 1n);
    assert.equal(clock.pending, 1, "the second waits for a delay of its own");
    clock.advance(1);
    await settle();
    assert.equal(log.usage().writtenLsn, 2n);
    await log.close();
  });

  it("writes at once for a durability waiter, for hurry(), and once a delay batch is full", async () => {
    const { log, clock } = await delayedLog();
    const first = log.append(write(0));
    await log.durable(first); // no clock advance: durability does not wait for the delay
    const second = log.append(write(4096));
    log.hurry(); // a sync link
    await settle();
    assert.equal(log.usage().writtenLsn, second);
    let last = 0n;
    for (let bytes = 0; bytes < logWriteDelayBytesMax; bytes += 64 * KiB) last = log.append(write(8192 + bytes, 64 * KiB));
    await settle();
    await settle();
    assert.equal(log.usage().writtenLsn, last, "a full delay batch is written without the timer");
    assert.equal(clock.pending, 0);
    await log.close();
  });

  it("is off by default and off again with delayWrites(0), which writes what waits", async () => {
    const { log } = await delayedLog();
    const lsn = log.append(write(0));
    log.delayWrites(0);
    await settle();
    assert.equal(log.usage().writtenLsn, lsn);
    await log.close();
  });
});
