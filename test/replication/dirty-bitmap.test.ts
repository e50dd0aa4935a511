// The dirty-region bitmap: marking rounds outward to regions, runs() merges adjacent regions,
// cuts pieces and clips at the volume's end, region sizes keep huge volumes at ≤ 2 MiB of
// bits, resizes re-map conservatively, the encoding round-trips and any damage is a typed
// LOG_CORRUPT (never another exception, never an allocation a damaged header asked for), and
// save/load replace the file atomically. A property test checks runs() against a model.

import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { dirtyBitmapBitsMax, dirtyRegionBytesMin, volumeSizeMax, volumesPerGroupMax } from "../../src/constants.js";
import { OperatingError } from "../../src/errors.js";
import { crc32c } from "../../src/io/crc32c.js";
import {
  DirtyBitmap,
  type DirtyRun,
  dirtyBitmapEncodedSizeMax,
  dirtyBitmapLoad,
  dirtyBitmapSave,
  dirtyRegionBytes,
} from "../../src/replication/dirty-bitmap.js";
import { replicationRegionDataSizeMax } from "../../src/replication/limits.js";
import { allocationSizes } from "../allocations.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const region = dirtyRegionBytesMin;

function runsOf(bitmap: DirtyBitmap, pieceBytesMax?: number): DirtyRun[] {
  return [...bitmap.runs(pieceBytesMax)];
}

function expectCorrupt(action: () => unknown, reason?: string): void {
  assert.throws(action, (error: unknown) => {
    assert.ok(error instanceof OperatingError, `not an OperatingError: ${String(error)}`);
    assert.equal(error.code, "LOG_CORRUPT");
    const actual = typeof error.detail === "string" ? "" : String(error.detail.reason);
    assert.ok(actual.startsWith("dirty-bitmap-"), actual);
    if (reason !== undefined) assert.equal(actual, `dirty-bitmap-${reason}`);
    return true;
  });
}

// Rewrites the checksum after a deliberate change, so the decoder's later checks are reached.
function resealed(encoded: Buffer): Buffer {
  encoded.writeUInt32LE(crc32c(encoded.subarray(4)), 0);
  return encoded;
}

describe("dirty bitmap", () => {
  it("rounds marks outward to regions and merges adjacent dirty regions", () => {
    const bitmap = DirtyBitmap.create([{ id: 1, size: 1 * GiB }]);
    assert.ok(bitmap.empty);
    bitmap.mark(1, region + 1, 1); // inside region 1
    bitmap.mark(1, 2 * region - 512, 1024); // regions 1 and 2
    bitmap.mark(1, 10 * region, 0); // nothing
    bitmap.mark(1, 5 * region, region); // exactly region 5
    assert.deepEqual(runsOf(bitmap), [
      { volumeId: 1, offset: region, length: 2 * region },
      { volumeId: 1, offset: 5 * region, length: region },
    ]);
    assert.equal(bitmap.dirtyBytes, 3 * region);
    assert.equal(bitmap.empty, false);
  });

  it("splits a long run into pieces of at most pieceBytesMax, and orders volumes by id", () => {
    const bitmap = DirtyBitmap.create([
      { id: 7, size: 64 * MiB },
      { id: 3, size: 64 * MiB },
    ]);
    bitmap.mark(7, 0, 1);
    bitmap.mark(3, 1 * MiB, 10 * MiB);
    assert.deepEqual(runsOf(bitmap), [
      { volumeId: 3, offset: 1 * MiB, length: 4 * MiB },
      { volumeId: 3, offset: 5 * MiB, length: 4 * MiB },
      { volumeId: 3, offset: 9 * MiB, length: 2 * MiB },
      { volumeId: 7, offset: 0, length: region },
    ]);
    // A piece size that is not a whole number of regions.
    const pieces = runsOf(bitmap, 3 * region + 512);
    assert.ok(pieces.every((piece) => piece.length <= 3 * region + 512));
    assert.equal(
      pieces.filter((piece) => piece.volumeId === 3).reduce((sum, piece) => sum + piece.length, 0),
      10 * MiB,
    );
  });

  it("clips the last region at the volume's end", () => {
    const size = 5 * region + 4096;
    const bitmap = DirtyBitmap.create([{ id: 1, size }]);
    bitmap.mark(1, size - 512, 512);
    assert.deepEqual(runsOf(bitmap), [{ volumeId: 1, offset: 5 * region, length: 4096 }]);
    assert.equal(bitmap.dirtyBytes, 4096);
    bitmap.markAll(1);
    assert.deepEqual(runsOf(bitmap, 1 * GiB), [{ volumeId: 1, offset: 0, length: size }]);
    assert.equal(bitmap.dirtyBytes, size);
    // Clearing up to the end clears the short last region too.
    bitmap.clearRegion(1, 5 * region, 4096);
    assert.deepEqual(runsOf(bitmap, 1 * GiB), [{ volumeId: 1, offset: 0, length: 5 * region }]);
  });

  it("clears only whole regions inside the range", () => {
    const bitmap = DirtyBitmap.create([{ id: 1, size: 16 * region }]);
    bitmap.markAll(1);
    bitmap.clearRegion(1, region + 512, 3 * region); // regions 2 and 3 wholly inside
    assert.deepEqual(runsOf(bitmap, 1 * GiB), [
      { volumeId: 1, offset: 0, length: 2 * region },
      { volumeId: 1, offset: 4 * region, length: 12 * region },
    ]);
    bitmap.clearRegion(1, 6 * region, region - 512); // no whole region
    assert.equal(bitmap.dirtyBytes, 14 * region);
    bitmap.clear();
    assert.ok(bitmap.empty);
    assert.equal(bitmap.dirtyBytes, 0);
    assert.deepEqual(runsOf(bitmap), []);
  });

  it("asserts on an unknown volume or a range past the end (bugs, not faults)", () => {
    const bitmap = DirtyBitmap.create([{ id: 1, size: 1 * MiB }]);
    assert.throws(() => bitmap.mark(2, 0, 512), { name: "AssertionError" });
    assert.throws(() => bitmap.mark(1, 1 * MiB - 512, 1024), { name: "AssertionError" });
    assert.throws(() => bitmap.removeVolume(2), { name: "AssertionError" });
    assert.throws(() => DirtyBitmap.create([{ id: 1, size: 100 }]), { name: "AssertionError" });
  });

  it("keeps a huge volume's bitmap at 2 MiB or less", () => {
    assert.equal(dirtyRegionBytes(0), dirtyRegionBytesMin);
    assert.equal(dirtyRegionBytes(1024 * GiB), dirtyRegionBytesMin); // 1 TiB: exactly 2^24 regions
    assert.equal(dirtyRegionBytes(1024 * GiB + 512), 2 * dirtyRegionBytesMin);
    assert.equal(dirtyRegionBytes(volumeSizeMax), 64 * MiB); // 1 PiB
    const bitmap = DirtyBitmap.create([{ id: 1, size: volumeSizeMax }]);
    assert.equal(bitmap.regionBytesOf(1), 64 * MiB);
    const encoded = bitmap.encode();
    assert.ok(encoded.length <= 2 * MiB + 48, `${encoded.length} bytes`);
    assert.ok(volumeSizeMax / bitmap.regionBytesOf(1) <= dirtyBitmapBitsMax);
    // The last byte of a 1 PiB volume: one 64 MiB region, cut into 4 MiB pieces.
    bitmap.mark(1, volumeSizeMax - 512, 512);
    const pieces = runsOf(bitmap);
    assert.equal(pieces.length, 16);
    assert.deepEqual(pieces[0], { volumeId: 1, offset: volumeSizeMax - 64 * MiB, length: replicationRegionDataSizeMax });
    assert.equal(bitmap.dirtyBytes, 64 * MiB);
    bitmap.markAll(1);
    assert.equal(bitmap.dirtyBytes, volumeSizeMax);
  });

  it("grows and shrinks a volume, dropping bits past the end and re-mapping on a new region size", () => {
    const bitmap = DirtyBitmap.create([{ id: 1, size: 10 * region }]);
    bitmap.mark(1, 2 * region, 1);
    bitmap.mark(1, 9 * region, region);
    bitmap.setVolume(1, 20 * region); // grow: same region size, new space clean
    assert.deepEqual(runsOf(bitmap), [
      { volumeId: 1, offset: 2 * region, length: region },
      { volumeId: 1, offset: 9 * region, length: region },
    ]);
    bitmap.setVolume(1, 5 * region); // shrink: region 9 is gone
    assert.deepEqual(runsOf(bitmap), [{ volumeId: 1, offset: 2 * region, length: region }]);
    bitmap.setVolume(1, 9 * region); // grow again: region 9 stays clean
    assert.equal(bitmap.dirtyBytes, region);

    // Past 1 TiB regions double: a new region is dirty where it overlaps a dirty old one.
    bitmap.setVolume(1, 1024 * GiB);
    bitmap.mark(1, 3 * region, 1);
    bitmap.setVolume(1, 2048 * GiB);
    assert.equal(bitmap.regionBytesOf(1), 2 * region);
    assert.deepEqual(runsOf(bitmap), [{ volumeId: 1, offset: 2 * region, length: 2 * region }]);
    bitmap.setVolume(1, 1024 * GiB); // back to 64 KiB regions: both halves stay dirty
    assert.deepEqual(runsOf(bitmap), [{ volumeId: 1, offset: 2 * region, length: 2 * region }]);

    bitmap.setVolume(2, 1 * MiB);
    bitmap.markAll(2);
    bitmap.removeVolume(1);
    assert.deepEqual(bitmap.volumeIds, [2]);
    assert.deepEqual(runsOf(bitmap), [{ volumeId: 2, offset: 0, length: 1 * MiB }]);
  });

  it("round-trips its encoding", () => {
    const bitmap = DirtyBitmap.create([
      { id: 2, size: 100 * MiB + 512 },
      { id: 1, size: 0 },
      { id: 9, size: 3 * GiB },
    ]);
    bitmap.mark(2, 100 * MiB, 512);
    bitmap.mark(2, 7 * MiB, 3 * MiB);
    bitmap.mark(9, 2 * GiB, 1);
    const encoded = bitmap.encode();
    const decoded = DirtyBitmap.decode(encoded);
    assert.deepEqual(decoded.volumeIds, [1, 2, 9]);
    assert.deepEqual(runsOf(decoded), runsOf(bitmap));
    assert.equal(decoded.dirtyBytes, bitmap.dirtyBytes);
    assert.ok(decoded.encode().equals(encoded), "canonical");
    assert.ok(DirtyBitmap.decode(DirtyBitmap.create([]).encode()).empty);
  });

  it("refuses a damaged encoding with a typed error", () => {
    const bitmap = DirtyBitmap.create([{ id: 4, size: 10 * MiB }]);
    bitmap.mark(4, 5 * MiB, 1);
    const encoded = bitmap.encode();
    for (const at of [0, 4, 9, 12, 17, 24, 30, 40, encoded.length - 1]) {
      const damaged = Buffer.from(encoded);
      damaged[at]! ^= 0x10;
      expectCorrupt(() => DirtyBitmap.decode(damaged));
    }
    const flipped = Buffer.from(encoded);
    flipped[encoded.length - 1]! ^= 1;
    expectCorrupt(() => DirtyBitmap.decode(flipped), "checksum");
    for (const length of [0, 3, 23, 24, 47, encoded.length - 1]) {
      expectCorrupt(() => DirtyBitmap.decode(encoded.subarray(0, length)), "length");
    }
    expectCorrupt(() => DirtyBitmap.decode(Buffer.concat([encoded, Buffer.alloc(1)])), "length");
  });

  it("checks every field, not just the checksum", () => {
    const bitmap = DirtyBitmap.create([
      { id: 4, size: 10 * region + 512 },
      { id: 5, size: 1 * MiB },
    ]);
    const encoded = bitmap.encode();
    const change = (edit: (copy: Buffer) => void): Buffer => {
      const copy = Buffer.from(encoded);
      edit(copy);
      return resealed(copy);
    };
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt32LE(0x12345678, 4))), "magic");
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt16LE(2, 8))), "version");
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt16LE(1, 10))), "reserved");
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt32LE(volumesPerGroupMax + 1, 12))), "volume-count");
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt32LE(3, 12))), "length");
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt32LE(4, 24 + 24))), "volume"); // ids not ascending
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt32LE(2 * region, 24 + 4))), "volume"); // region size
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeBigUInt64LE(10n * BigInt(region) + 100n, 24 + 8))), "volume"); // not sectors
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeBigUInt64LE(2n ** 60n, 24 + 8))), "volume"); // too large
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => copy.writeUInt32LE(12, 24 + 16))), "volume"); // bit count
    expectCorrupt(() => DirtyBitmap.decode(change((copy) => (copy[24 + 48 + 1] = 0x80))), "volume"); // a bit past the end
  });

  it("allocates nothing a damaged header asks for before checking it", () => {
    const huge = Buffer.alloc(24);
    huge.writeUInt32LE(0x4244534c, 4);
    huge.writeUInt16LE(1, 8);
    huge.writeUInt32LE(volumesPerGroupMax, 12);
    huge.writeUInt32LE(24, 16);
    resealed(huge);
    const sizes = allocationSizes(() => expectCorrupt(() => DirtyBitmap.decode(huge), "length"));
    assert.ok(sizes.every((size) => size <= 64), `allocations: ${sizes.join(", ")}`);
    // A volume entry that claims 1 PiB in a buffer that holds no bits for it.
    const entry = Buffer.alloc(48);
    entry.set(huge);
    entry.writeUInt32LE(1, 12);
    entry.writeUInt32LE(48, 16);
    entry.writeUInt32LE(64 * MiB, 24 + 4);
    entry.writeBigUInt64LE(BigInt(volumeSizeMax), 24 + 8);
    entry.writeUInt32LE(dirtyBitmapBitsMax, 24 + 16);
    resealed(entry);
    const entrySizes = allocationSizes(() => expectCorrupt(() => DirtyBitmap.decode(entry), "length"));
    assert.ok(entrySizes.every((size) => size <= 64), `allocations: ${entrySizes.join(", ")}`);
  });

  it("never throws anything but a typed error for arbitrary damage", () => {
    const bitmap = DirtyBitmap.create([
      { id: 1, size: 3 * MiB },
      { id: 2, size: 512 },
    ]);
    bitmap.mark(1, 1 * MiB, 5);
    const encoded = bitmap.encode();
    fc.assert(
      fc.property(fc.integer({ min: 0, max: encoded.length - 1 }), fc.integer({ min: 1, max: 255 }), fc.boolean(), (at, xor, reseal) => {
        const damaged = Buffer.from(encoded);
        damaged[at]! ^= xor;
        if (reseal && at >= 4) resealed(damaged);
        try {
          const decoded = DirtyBitmap.decode(damaged);
          // Only a change to the bits themselves can decode; then it re-encodes to the same bytes.
          assert.ok(decoded.encode().equals(damaged));
        } catch (error) {
          assert.ok(error instanceof OperatingError && error.code === "LOG_CORRUPT", String(error));
        }
      }),
      { numRuns: 500 },
    );
  });

  it("runs() covers exactly the marked bytes rounded out to regions (property)", () => {
    const volumeArbitrary = fc.record({
      id: fc.integer({ min: 0, max: 20 }),
      size: fc.integer({ min: 0, max: 40 * 128 }).map((sectors) => sectors * 512),
    });
    fc.assert(
      fc.property(
        fc.uniqueArray(volumeArbitrary, { minLength: 1, maxLength: 4, selector: (volume) => volume.id }),
        fc.array(fc.tuple(fc.nat(), fc.nat(), fc.nat()), { maxLength: 30 }),
        fc.integer({ min: 1, max: 3 * 128 }).map((sectors) => sectors * 512),
        (volumes, marks, pieceBytesMax) => {
          const bitmap = DirtyBitmap.create(volumes);
          const model = new Map(volumes.map((volume) => [volume.id, new Set<number>()]));
          for (const [volumeChoice, offsetChoice, lengthChoice] of marks) {
            const volume = volumes[volumeChoice % volumes.length]!;
            const offset = volume.size === 0 ? 0 : offsetChoice % volume.size;
            const length = lengthChoice % (volume.size - offset + 1);
            bitmap.mark(volume.id, offset, length);
            if (length === 0) continue;
            for (let index = Math.floor(offset / region); index * region < offset + length; index++) model.get(volume.id)!.add(index);
          }
          const runs = runsOf(bitmap, pieceBytesMax);
          // Covered bytes, per volume, in order and apart.
          const covered = new Map<number, Set<number>>();
          let previous: DirtyRun | undefined;
          for (const run of runs) {
            assert.ok(run.length > 0 && run.length <= pieceBytesMax, `piece ${run.length}`);
            assert.ok(run.offset % 512 === 0 && run.length % 512 === 0);
            if (previous !== undefined && previous.volumeId === run.volumeId) assert.ok(previous.offset + previous.length <= run.offset);
            if (previous !== undefined) assert.ok(previous.volumeId <= run.volumeId);
            const set = covered.get(run.volumeId) ?? new Set<number>();
            for (let at = run.offset; at < run.offset + run.length; at += 512) set.add(at);
            covered.set(run.volumeId, set);
            previous = run;
          }
          let expectedBytes = 0;
          for (const volume of volumes) {
            const expected = new Set<number>();
            for (const index of model.get(volume.id)!) {
              for (let at = index * region; at < Math.min((index + 1) * region, volume.size); at += 512) expected.add(at);
            }
            expectedBytes += expected.size * 512;
            assert.deepEqual([...(covered.get(volume.id) ?? [])].sort((a, b) => a - b), [...expected].sort((a, b) => a - b));
          }
          assert.equal(bitmap.dirtyBytes, expectedBytes);
          assert.equal(bitmap.empty, expectedBytes === 0);
          // With pieces large enough, adjacent dirty regions come as one run.
          for (const [left, right] of runsOf(bitmap, 1 * GiB).map((run, index, all) => [run, all[index + 1]] as const)) {
            if (right !== undefined && left.volumeId === right.volumeId) assert.ok(left.offset + left.length < right.offset, "merged");
          }
          assert.deepEqual(runsOf(DirtyBitmap.decode(bitmap.encode()), pieceBytesMax), runs);
        },
      ),
      { numRuns: 300 },
    );
  });

  describe("on disk", () => {
    let directory = "";
    before(async () => {
      directory = await mkdtemp(join(tmpdir(), "lockstep-dirty-"));
    });
    after(async () => {
      await rm(directory, { recursive: true, force: true });
    });

    it("saves and loads atomically, and a missing file is null", async () => {
      const path = join(directory, "link-a.dirty");
      assert.equal(await dirtyBitmapLoad(path), null);
      const bitmap = DirtyBitmap.create([{ id: 1, size: 1 * GiB }]);
      bitmap.mark(1, 123 * MiB, 1);
      await dirtyBitmapSave(path, bitmap);
      bitmap.mark(1, 0, 1);
      await dirtyBitmapSave(path, bitmap); // replaces the first
      const loaded = await dirtyBitmapLoad(path);
      assert.ok(loaded !== null);
      assert.deepEqual(runsOf(loaded), runsOf(bitmap));
      assert.deepEqual(await readdir(directory), ["link-a.dirty"], "no temporary file left behind");
    });

    it("reports a damaged or oversized file as LOG_CORRUPT", async () => {
      const path = join(directory, "link-b.dirty");
      const encoded = DirtyBitmap.create([{ id: 1, size: 1 * MiB }]).encode();
      encoded[encoded.length - 1]! ^= 0xff;
      await writeFile(path, encoded);
      await assert.rejects(dirtyBitmapLoad(path), (error: unknown) => error instanceof OperatingError && error.code === "LOG_CORRUPT");
      await writeFile(path, Buffer.alloc(0));
      await assert.rejects(dirtyBitmapLoad(path), (error: unknown) => error instanceof OperatingError && error.code === "LOG_CORRUPT");
      const { truncate } = await import("node:fs/promises");
      await truncate(path, dirtyBitmapEncodedSizeMax + 1); // sparse: no real space used
      await assert.rejects(dirtyBitmapLoad(path), (error: unknown) => error instanceof OperatingError && error.code === "LOG_CORRUPT");
    });

    it("fails a save into a missing directory with a typed error", async () => {
      const bitmap = DirtyBitmap.create([]);
      await assert.rejects(dirtyBitmapSave(join(directory, "missing", "x.dirty"), bitmap), (error: unknown) => error instanceof OperatingError && error.code === "DISK_IO");
    });
  });
});
