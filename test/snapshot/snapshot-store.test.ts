// Unit tests of the snapshot store's costs and limits, on simulated disks: a chunk is preserved
// once however many snapshots need it, deleting frees exactly what nobody else reads, a full
// store refuses before anything is written and invalidates nothing, a refresh keeps children,
// and the fresh-chunk cache stays within its page budget.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, it } from "node:test";
import { applyChange } from "../../src/group/apply-change.js";
import { RecordKind } from "../../src/log/record.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { FreshChunks } from "../../src/snapshot/fresh-chunks.js";
import { SnapshotStore } from "../../src/snapshot/snapshot-store.js";
import { Volume } from "../../src/volume/volume.js";

const chunkSize = 4096;
const chunks = 64;
const dirs: string[] = [];

async function openStore(slots = 4096): Promise<{ store: SnapshotStore; volume: Volume; storeDisk: SimDisk }> {
  const dir = mkdtempSync(join(tmpdir(), "lockstep-snapshot-store-"));
  dirs.push(dir);
  const volume = new Volume(1, "vol", new SimDisk("volume", chunks * chunkSize), chunks * chunkSize, () => 0);
  const storeDisk = new SimDisk("store", 0);
  const store = await SnapshotStore.open(volume, storeDisk, dir, { chunkSize, storeSizeMax: slots * chunkSize, nowMs: () => 0 });
  return { store, volume, storeDisk };
}

function write(volume: Volume, chunk: number, fill: number, length = 512): Promise<void> {
  return applyChange(volume, RecordKind.write, 0, chunk * chunkSize, length, Buffer.alloc(length, fill), false);
}

async function readImage(store: SnapshotStore, name: string): Promise<Buffer> {
  const target = Buffer.alloc(chunks * chunkSize);
  await store.read(name, 0, target);
  return target;
}

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe("snapshot store", () => {
  it("preserves a chunk once, whether 1 or 32 snapshots need it", async () => {
    const counts: number[] = [];
    for (const snapshots of [1, 32]) {
      const { store, volume } = await openStore();
      for (let index = 0; index < snapshots; index += 1) {
        await write(volume, 0, index + 1); // a round of writes before each snapshot (one chunk)
        await store.create({ name: `s${index}`, from: null, writable: false, lsn: BigInt(index) });
      }
      const before = store.stats.preservedChunks;
      for (let chunk = 0; chunk < chunks; chunk += 1) await write(volume, chunk, 0xee);
      for (let chunk = 0; chunk < chunks; chunk += 1) await write(volume, chunk, 0xef); // again: nothing more
      counts.push(store.stats.preservedChunks - before);
      const first = await readImage(store, "s0");
      assert.equal(first[0], 1);
      assert.equal(first[chunkSize], 0);
      await store.close();
    }
    assert.deepEqual(counts, [chunks, chunks]);
  });

  it("frees exactly the chunks no other snapshot reads, and all of them at the end", async () => {
    const { store, volume } = await openStore();
    await store.create({ name: "a", from: null, writable: false, lsn: 1n });
    for (let chunk = 0; chunk < 8; chunk += 1) await write(volume, chunk, 1);
    await store.create({ name: "b", from: null, writable: false, lsn: 2n });
    for (let chunk = 0; chunk < 16; chunk += 1) await write(volume, chunk, 2);
    assert.equal(store.usage().usedBytes, 24 * chunkSize); // a: 8 (zeros, before 1); b: 16 (8 ones, 8 zeros)
    await store.delete("b", false, 10n);
    assert.equal(store.usage().usedBytes, 16 * chunkSize, "a still reads the zeros of chunks 0-15");
    assert.ok((await readImage(store, "a")).every((byte) => byte === 0));
    await store.delete("a", false, 11n);
    assert.equal(store.usage().usedBytes, 0);
    await store.close();
  });

  it("a full store refuses the change before it is written, and the snapshot stays whole", async () => {
    const { store, volume } = await openStore(4);
    for (let chunk = 0; chunk < 8; chunk += 1) await write(volume, chunk, 7, chunkSize);
    await store.create({ name: "s", from: null, writable: false, lsn: 1n });
    for (let chunk = 0; chunk < 4; chunk += 1) await write(volume, chunk, 8);
    await assert.rejects(write(volume, 4, 9), { code: "SNAPSHOT_STORE_FULL" });
    await assert.rejects(store.create({ name: "w", from: "s", writable: true, lsn: 2n }).then(() => store.write("w", 0, Buffer.alloc(512, 1), 512, false)), { code: "SNAPSHOT_STORE_FULL" });
    const chunk4 = Buffer.alloc(chunkSize);
    await volume.read(chunk4, 4 * chunkSize);
    assert.ok(chunk4.every((byte) => byte === 7), "the refused write left the volume alone");
    const image = await readImage(store, "s");
    assert.ok(image.subarray(0, 8 * chunkSize).every((byte) => byte === 7));
    assert.equal(store.usage().full, true);
    assert.equal(store.stats.storeFullErrors, 2);
    await write(volume, 0, 10); // already preserved: needs no room
    await store.close();
  });

  it("refresh gives a snapshot its parent's content now and leaves its children as they were", async () => {
    const { store, volume } = await openStore();
    await write(volume, 0, 1);
    await store.create({ name: "w", from: null, writable: true, lsn: 1n });
    await store.write("w", 0, Buffer.alloc(512, 2), 512, false);
    await store.create({ name: "child", from: "w", writable: false, lsn: 2n });
    await write(volume, 0, 3);
    await store.refresh("w", true, 10n);
    assert.equal((await readImage(store, "w"))[0], 3);
    assert.equal((await readImage(store, "child"))[0], 2);
    assert.deepEqual(store.diff("w", null).totalBytes, 0);
    assert.ok(store.diff("child", "w").totalBytes >= 512);
    await store.close();
  });

  it("the fresh-chunk cache keeps at most its page budget", () => {
    const fresh = new FreshChunks(2);
    fresh.add(0);
    fresh.add(40_000);
    fresh.add(80_000); // a third page: the oldest goes
    assert.equal(fresh.bytes, 2 * 4096);
    assert.equal(fresh.has(0), false);
    assert.equal(fresh.has(80_000), true);
  });
});
