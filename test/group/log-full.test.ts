// A full log: writes wait while a checkpoint frees room (back-pressure), and when no room
// appears in time they fail with LOG_FULL (ENOSPC to an NBD client) — never silently.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Group } from "../../src/group/group.js";
import { OperatingError } from "../../src/errors.js";
import { GroupLog } from "../../src/log/group-log.js";
import { silentLogger } from "../../src/logger.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { Volume } from "../../src/volume/volume.js";
import { smallLimits } from "../log/helpers.js";

const logSize = 512 * 1024;

async function setup(stallMsMax: number): Promise<{ group: Group; volume: Volume; volumeDisk: SimDisk }> {
  const log = await GroupLog.create(new SimDisk("log", logSize), { sizeBytes: logSize, groupId: "g", limits: smallLimits });
  const group = new Group("g", log, "write-ahead", null, silentLogger, { stallMsMax });
  const volumeDisk = new SimDisk("volume", 1024 * 1024);
  const volume = new Volume(1, "v", volumeDisk, 1024 * 1024, () => 0);
  group.addVolume(volume);
  return { group, volume, volumeDisk };
}

describe("a full log", () => {
  it("applies back-pressure while checkpoints free room; no write fails", async () => {
    const { group, volume } = await setup(10_000);
    const data = Buffer.alloc(16 * 1024, 7);
    for (let round = 0; round < 40; round++) {
      await Promise.all([...Array(8).keys()].map((index) => group.write(volume, index * data.length, data, false)));
    }
    assert.ok(group.stats.checkpoints > 0, "checkpoints freed log room");
    assert.equal(group.stats.logFullErrors, 0);
    assert.ok(group.log.usage().usedBytes < logSize);
  });

  it("refuses with LOG_FULL when no room appears in time", async () => {
    const { group, volume, volumeDisk } = await setup(200);
    // A checkpoint cannot finish while the image's fdatasync hangs, so no room is freed.
    volumeDisk.datasync = () => new Promise(() => undefined);
    const data = Buffer.alloc(64 * 1024, 1);
    const results = await Promise.allSettled([...Array(12).keys()].map((index) => group.write(volume, (index % 16) * data.length, data, false)));
    const refused = results.filter((result) => result.status === "rejected");
    assert.ok(refused.length > 0, "some writes were refused");
    for (const result of refused) {
      const error = (result as PromiseRejectedResult).reason as unknown;
      assert.ok(error instanceof OperatingError && error.code === "LOG_FULL", String(error));
      assert.equal(error.nbdErrno, 28, "ENOSPC to the client");
    }
    assert.equal(group.stats.logFullErrors, refused.length);
  });
});
