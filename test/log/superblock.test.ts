// The double-written superblock: the valid slot with the higher sequence wins; a torn or
// damaged slot falls back to the other; neither valid is LOG_CORRUPT.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OperatingError } from "../../src/errors.js";
import { GroupLog } from "../../src/log/group-log.js";
import { RecordKind } from "../../src/log/record.js";
import {
  type Superblock,
  superblockDecode,
  superblockEncode,
  superblockRead,
  superblockSlotSize,
  superblockWrite,
} from "../../src/log/superblock.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { FencedFile, KiB, smallLimits } from "./helpers.js";

const base: Superblock = {
  sequence: 5n,
  logId: 42n,
  groupId: "databases",
  sizeBytes: 8192 + 64 * KiB,
  dataStart: 8192,
  generation: 3n,
  tailLsn: 10n,
  tailPosition: 8192 + 4096,
  tailPreviousChecksum: 99,
  releasedLsn: 9n,
  durableLsn: 20n,
  timestampMs: 123,
};

describe("log superblock", () => {
  it("roundtrips", () => {
    assert.deepEqual(superblockDecode(superblockEncode(base)), base);
  });

  it("rejects every single bit flip", () => {
    const slot = superblockEncode(base);
    for (let bit = 0; bit < 300 * 8; bit += 7) {
      const damaged = Buffer.from(slot);
      damaged[bit >> 3]! ^= 1 << (bit & 7);
      assert.throws(() => superblockDecode(damaged), (error) => error instanceof OperatingError && error.code === "LOG_CORRUPT");
    }
  });

  it("takes the higher sequence, falls back when that slot is torn or damaged", async () => {
    const disk = new SimDisk("sb", 8192 + 64 * KiB);
    await superblockWrite(disk, { ...base, sequence: 6n, tailLsn: 11n, releasedLsn: 10n });
    await superblockWrite(disk, { ...base, sequence: 7n, tailLsn: 12n, releasedLsn: 11n });
    await disk.datasync();
    assert.equal((await superblockRead(disk)).superblock.sequence, 7n);
    // Sequence 8 goes to slot 0 and is torn by a power cut: slot 1 (sequence 7) survives.
    for (let seed = 1; seed <= 20; seed++) {
      await superblockWrite(disk, { ...base, sequence: 8n, tailLsn: 13n, releasedLsn: 12n });
      disk.crash(new Random(seed), 0.5);
      const choice = await superblockRead(disk);
      assert.ok(choice.superblock.sequence === 7n || choice.superblock.sequence === 8n);
      await superblockWrite(disk, { ...base, sequence: 6n, tailLsn: 11n, releasedLsn: 10n }); // restore slot 0 to older
      await disk.datasync();
    }
    // A damaged newer slot: the older one is used.
    const image = Buffer.alloc(superblockSlotSize);
    await disk.read(image, superblockSlotSize);
    image[200]! ^= 1;
    await disk.write([image], superblockSlotSize);
    const choice = await superblockRead(disk);
    assert.equal(choice.superblock.sequence, 6n);
    assert.equal(choice.slot, 0);
    // Both damaged: LOG_CORRUPT.
    await disk.write([Buffer.alloc(superblockSlotSize, 0xee)], 0);
    await assert.rejects(superblockRead(disk), (error) => error instanceof OperatingError && error.code === "LOG_CORRUPT");
  });

  it("a log opens from the older slot when the newer is damaged, and tells", async () => {
    const disk = new SimDisk("log", 8192 + 64 * KiB);
    const log = await GroupLog.create(disk, { sizeBytes: 8192 + 64 * KiB, groupId: "g", limits: smallLimits });
    for (let index = 0; index < 20; index++) log.append({ kind: RecordKind.write, flags: 0, volumeId: 0, offset: 0, length: 512, payload: Buffer.alloc(512, index) });
    await log.sync();
    log.release(10n);
    await log.checkpoint(); // sequence 2, slot 0: tail moved past 10 records (4 KiB segments)
    await log.close(); // sequence 3, slot 1
    const slot = Buffer.alloc(superblockSlotSize);
    await disk.read(slot, superblockSlotSize);
    slot[100]! ^= 0x10;
    await disk.write([slot], superblockSlotSize);
    await disk.datasync();
    const reopened = await GroupLog.open(new FencedFile(disk), { limits: smallLimits });
    assert.equal(reopened.recovery?.superblockFallback, true);
    assert.equal(reopened.recovery?.superblockSequence, 2n);
    assert.equal(reopened.recovery?.headLsn, 20n);
    assert.equal(reopened.recovery?.tailLsn, 11n);
  });
});
