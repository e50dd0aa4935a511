// Allocated regions for an initial sync: on a real sparse file the regions cover what was
// written and skip the hole between; queries come in bounded batches; extents are merged,
// rounded to sectors and clipped; a platform that cannot tell makes the whole volume count.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { BlockFile, Extent } from "../../src/io/block-file.js";
import { NodeBlockFile } from "../../src/io/node-block-file.js";
import { allocatedRegions } from "../../src/volume/allocated-regions.js";
import { SparseSimDisk } from "./sparse-sim-disk.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function covers(regions: readonly Extent[], offset: number, length: number): boolean {
  return regions.some((region) => region.offset <= offset && offset + length <= region.offset + region.length);
}

function total(regions: readonly Extent[]): number {
  return regions.reduce((sum, region) => sum + region.length, 0);
}

// A BlockFile that answers dataExtents from a fixed list (everything else unused here).
function fixedExtents(extents: readonly Extent[] | null): BlockFile & { queries: number[] } {
  const queries: number[] = [];
  const file = {
    queries,
    dataExtents(offset: number, length: number, extentsMax: number): Extent[] | null {
      queries.push(offset);
      if (extents === null) return null;
      return extents.filter((extent) => extent.offset + extent.length > offset && extent.offset < offset + length).slice(0, extentsMax);
    },
  };
  return file as unknown as BlockFile & { queries: number[] };
}

describe("allocated regions", () => {
  let directory = "";
  before(async () => {
    directory = await mkdtemp(join(tmpdir(), "lockstep-allocated-"));
  });
  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it("covers the written ranges of a real sparse file and skips the hole", async () => {
    const size = 4 * GiB;
    const file = await NodeBlockFile.open(join(directory, "sparse.img"), { create: size });
    try {
      const data = Buffer.alloc(64 * KiB, 0xa5);
      await file.write([data], 1 * MiB);
      await file.write([data], 3 * GiB + 128 * KiB);
      await file.datasync();
      const probe = file.dataExtents(0, size, 16);
      if (probe === null || probe.length === 0) {
        // The file system here cannot report holes: then everything counts, as documented.
        assert.deepEqual([...allocatedRegions(file, size)], [{ offset: 0, length: size }]);
        return;
      }
      const regions = [...allocatedRegions(file, size)];
      assert.ok(covers(regions, 1 * MiB, data.length), JSON.stringify(regions));
      assert.ok(covers(regions, 3 * GiB + 128 * KiB, data.length), JSON.stringify(regions));
      assert.ok(!covers(regions, 1 * GiB, 4096), "the hole between is skipped");
      assert.ok(total(regions) <= 16 * MiB, `${total(regions)} bytes allocated`);
      // One extent per query gives the same answer.
      assert.deepEqual([...allocatedRegions(file, size, 1)], regions);
    } finally {
      await file.close();
    }
  });

  it("queries in bounded batches and yields the extents in order", async () => {
    const disk = new SparseSimDisk("disk", 16 * MiB);
    const writes = Array.from({ length: 50 }, (_, index) => index * 8 * 4096); // 50 blocks, 28 KiB apart
    for (const offset of writes) await disk.write([Buffer.alloc(4096, 1)], offset);
    disk.allocationQueries = 0;
    const regions = [...allocatedRegions(disk, 16 * MiB, 7)];
    assert.deepEqual(
      regions,
      writes.map((offset) => ({ offset, length: 4096 })),
    );
    assert.equal(disk.allocationQueries, 8, "seven full batches of 7, then one short one");
  });

  it("merges adjacent extents, rounds to sectors and clips at the end", () => {
    const file = fixedExtents([
      { offset: 100, length: 100 }, // → [0, 512)
      { offset: 512, length: 1000 }, // touches the first once rounded → merged up to 1536
      { offset: 4096, length: 4096 },
      { offset: 8192, length: 4096 }, // adjacent to the previous
      { offset: 20_000, length: 100_000 }, // clipped at the volume's end
    ]);
    const regions = [...allocatedRegions(file, 65_536, 2)];
    assert.deepEqual(regions, [
      { offset: 0, length: 1536 },
      { offset: 4096, length: 8192 },
      { offset: 19_968, length: 65_536 - 19_968 },
    ]);
  });

  it("counts the whole volume as allocated when the platform cannot tell", () => {
    assert.deepEqual([...allocatedRegions(fixedExtents(null), 10 * MiB)], [{ offset: 0, length: 10 * MiB }]);
    assert.deepEqual([...allocatedRegions(fixedExtents(null), 0)], []);
    // Unknown after a first batch: the rest counts.
    let calls = 0;
    const file = {
      dataExtents: (_offset: number, _length: number, extentsMax: number) => (calls++ === 0 ? Array.from({ length: extentsMax }, (_, index) => ({ offset: index * 8192, length: 4096 })) : null),
    } as unknown as BlockFile;
    const regions = [...allocatedRegions(file, 1 * MiB, 2)];
    assert.deepEqual(regions, [
      { offset: 0, length: 4096 },
      { offset: 8192, length: 1 * MiB - 8192 },
    ]);
  });

  it("yields nothing for a volume that is all hole", async () => {
    const disk = new SparseSimDisk("empty", 1 * MiB);
    assert.deepEqual([...allocatedRegions(disk, 1 * MiB)], []);
  });
});
