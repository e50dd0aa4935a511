// A primary in activity-map mode with no link logs writes without their data
// (RecordFlag.dataOmitted): recovery in that mode takes data from the images, and nothing else
// would read it back. A link, or write-ahead mode, keeps the data in the log. The codec accepts
// the flag only on a write record with no payload, and a secondary refuses such a record.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Durability, Group, GroupReplication } from "../../src/group/group.js";
import { type LogRecord, logCorruptReason, RecordFlag, RecordKind, recordDecode, recordEncode, recordHeaderDecode } from "../../src/log/record.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { Volume } from "../../src/volume/volume.js";
import { simGroup } from "./sim-group.js";

const volumeSize = 1024 * 1024;

function replicationNeedingData(needsData: { value: boolean }): GroupReplication {
  return {
    get needsData() {
      return needsData.value;
    },
    releasable: async (appliedLsn) => appliedLsn,
    syncWait: () => null,
    operationLogged: () => undefined,
  };
}

async function records(group: Group): Promise<LogRecord[]> {
  await group.log.sync();
  const found: LogRecord[] = [];
  for await (const record of group.log.cursor(group.log.usage().tailLsn)) found.push(record);
  return found;
}

async function groupWithVolume(durability: Durability): Promise<{ group: Group; volume: Volume }> {
  const group = await simGroup(durability);
  const volume = new Volume(1, "disk0", new SimDisk("image", volumeSize), volumeSize, () => 0);
  group.addVolume(volume);
  return { group, volume };
}

async function writeSome(group: Group, volume: Volume): Promise<void> {
  await group.write(volume, 0, Buffer.alloc(4096, 1), false);
  await group.write(volume, 8192, Buffer.alloc(8192, 2), true); // FUA: the general path
  await group.zero(volume, 65536, 4096, false, false);
}

describe("writes logged without their data", () => {
  it("activity-map, no link: write records carry where, not what; zeroes are unchanged", async () => {
    const { group, volume } = await groupWithVolume("activity-map");
    await writeSome(group, volume);
    const logged = await records(group);
    assert.deepEqual(
      logged.map((record) => [record.kind, record.offset, record.length, record.payloadSize, (record.flags & RecordFlag.dataOmitted) !== 0]),
      [
        [RecordKind.write, 0, 4096, 0, true],
        [RecordKind.write, 8192, 8192, 0, true],
        [RecordKind.zero, 65536, 4096, 0, false],
      ],
    );
    assert.ok((logged[1]!.flags & RecordFlag.fua) !== 0, "the FUA flag stays");
    const image = Buffer.alloc(8192);
    await volume.read(image, 8192);
    assert.ok(image.equals(Buffer.alloc(8192, 2)), "the image has the data");
    await group.close();
  });

  it("keeps the data while a link needs it, and omits it again once none does", async () => {
    const { group, volume } = await groupWithVolume("activity-map");
    const needsData = { value: true };
    group.replication = replicationNeedingData(needsData);
    await group.write(volume, 0, Buffer.alloc(4096, 1), false);
    await group.write(volume, 4096, Buffer.alloc(4096, 2), false);
    needsData.value = false;
    await group.write(volume, 8192, Buffer.alloc(4096, 3), false);
    const logged = await records(group);
    assert.deepEqual(
      logged.map((record) => [record.payloadSize, record.payload.length > 0 ? record.payload[0] : null]),
      [
        [4096, 1],
        [4096, 2],
        [0, null],
      ],
    );
    await group.close();
  });

  it("write-ahead keeps the data: recovery replays it", async () => {
    const { group, volume } = await groupWithVolume("write-ahead");
    await writeSome(group, volume);
    const logged = await records(group);
    assert.deepEqual(
      logged.map((record) => [record.kind, record.payloadSize]),
      [
        [RecordKind.write, 4096],
        [RecordKind.write, 8192],
        [RecordKind.zero, 0],
      ],
    );
    await group.close();
  });

  it("the codec takes the flag only on a write record without a payload", () => {
    const fields = { kind: RecordKind.write, flags: RecordFlag.dataOmitted, volumeId: 1, offset: 0, length: 4096, lsn: 1n, generation: 1n, logId: 7n, timestampMs: 0, previousChecksum: 0 };
    const { record: encoded } = recordEncode(fields, undefined);
    const decoded = recordDecode(encoded);
    assert.equal(decoded.length, 4096);
    assert.equal(decoded.payloadSize, 0);
    assert.throws(() => recordEncode(fields, Buffer.alloc(4096)), /contradict/);
    assert.throws(() => recordEncode({ ...fields, kind: RecordKind.zero }, undefined), /contradict/);
    // a zero record carrying the flag, forged: the decoder refuses it
    const { record: zero } = recordEncode({ ...fields, kind: RecordKind.zero, flags: 0 }, undefined);
    zero.writeUInt16LE(RecordFlag.dataOmitted, 12);
    assert.throws(
      () => recordHeaderDecode(zero),
      (error: unknown) => logCorruptReason(error) === "field", // fields are checked before the checksum
    );
  });
});
