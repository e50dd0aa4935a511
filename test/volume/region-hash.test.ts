// Region hashes for verify: identical images hash alike, one flipped byte makes exactly its
// region differ, a hole hashes like explicit zeros (and is not read), a size mismatch counts
// the tail as differing, slices with fromRegion/regionsMax add up to the whole, and a real
// sparse file agrees with a fully written one.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { allocationQueryExtentsMax, verifyRegionBytes, verifyRegionsPerCallMax } from "../../src/constants.js";
import { NodeBlockFile } from "../../src/io/node-block-file.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { hashesDiffer, regionCount, regionDigestBytes, regionHashes } from "../../src/volume/region-hash.js";
import { SparseSimDisk } from "./sparse-sim-disk.js";

const KiB = 1024;
const MiB = 1024 * KiB;

async function diskWith(content: Buffer, sparse = false): Promise<SimDisk> {
  const disk = sparse ? new SparseSimDisk("sparse", content.length) : new SimDisk("disk", content.length);
  await disk.write([content], 0);
  await disk.datasync();
  return disk;
}

function randomContent(size: number, seed: number): Buffer {
  return new Random(seed).fill(Buffer.alloc(size));
}

describe("region hashes", () => {
  it("are equal for identical images and name exactly the region of a flipped byte", async () => {
    const size = 5 * MiB + 512 * KiB; // a short last region
    const content = randomContent(size, 1);
    const left = await regionHashes(await diskWith(content), size);
    assert.equal(left.length, regionCount(size, verifyRegionBytes) * regionDigestBytes);
    assert.equal(left.length, 6 * 16);
    const same = await regionHashes(await diskWith(Buffer.from(content)), size);
    assert.ok(left.equals(same));
    assert.deepEqual(hashesDiffer(left, same, verifyRegionBytes, size), { regions: [], differingBytes: 0 });

    for (const at of [0, 3 * MiB + 17, size - 1]) {
      const changed = Buffer.from(content);
      changed[at]! ^= 0x01;
      const right = await regionHashes(await diskWith(changed), size);
      const region = Math.floor(at / verifyRegionBytes) * verifyRegionBytes;
      const length = Math.min(verifyRegionBytes, size - region);
      assert.deepEqual(hashesDiffer(left, right, verifyRegionBytes, size), { regions: [{ offset: region, length }], differingBytes: length });
    }
  });

  it("digests are SHA-256 of the region, truncated, also for regions larger than the read buffer", async () => {
    const size = 7 * MiB;
    const regionBytes = 3 * MiB; // three reads of 1 MiB per region
    const content = randomContent(size, 2);
    const digests = await regionHashes(await diskWith(content), size, { regionBytes });
    assert.equal(digests.length, 3 * 16);
    for (let index = 0; index < 3; index++) {
      const expected = createHash("sha256")
        .update(content.subarray(index * regionBytes, Math.min(size, (index + 1) * regionBytes)))
        .digest()
        .subarray(0, 16);
      assert.ok(digests.subarray(index * 16, index * 16 + 16).equals(expected), `region ${index}`);
    }
  });

  it("hashes a hole like explicit zeros, without reading it", async () => {
    const size = 8 * MiB + 4096;
    const content = Buffer.alloc(size);
    content.fill(7, 2 * MiB + 100, 2 * MiB + 200);
    const sparse = new SparseSimDisk("sparse", size);
    await sparse.write([content.subarray(2 * MiB, 3 * MiB)], 2 * MiB); // only region 2 allocated
    const zeros = await diskWith(content); // everything written (SimDisk reports all as data)
    sparse.readCount = 0;
    const fromHoles = await regionHashes(sparse, size);
    assert.equal(sparse.readCount, 1, "only the allocated region was read");
    assert.ok(fromHoles.equals(await regionHashes(zeros, size)));
    // A hole and a zero region of a different length do not match: the last region is short.
    assert.ok(!fromHoles.subarray(0, 16).equals(fromHoles.subarray(8 * 16, 9 * 16)));
    assert.ok(fromHoles.subarray(0, 16).equals(fromHoles.subarray(16, 32)));
  });

  it("reads everything when the platform cannot tell where the holes are", async () => {
    const sparse = new SparseSimDisk("unknown", 4 * MiB);
    sparse.allocationKnown = false;
    const digests = await regionHashes(sparse, 4 * MiB);
    assert.equal(sparse.readCount, 4);
    assert.ok(digests.equals(await regionHashes(new SimDisk("zeros", 4 * MiB), 4 * MiB)));
  });

  it("finds holes across many allocation batches", async () => {
    const regionBytes = 4096;
    const regions = 3 * allocationQueryExtentsMax;
    const size = regions * regionBytes;
    const content = Buffer.alloc(size);
    const sparse = new SparseSimDisk("fragmented", size);
    for (let index = 0; index < regions; index += 2) {
      content.fill(index & 0xff, index * regionBytes, index * regionBytes + 10);
      await sparse.write([content.subarray(index * regionBytes, (index + 1) * regionBytes)], index * regionBytes);
    }
    sparse.readCount = 0;
    const digests = await regionHashes(sparse, size, { regionBytes });
    assert.equal(sparse.readCount, regions / 2);
    assert.ok(sparse.allocationQueries >= 2 && sparse.allocationQueries <= 4, `${sparse.allocationQueries} queries`);
    assert.ok(digests.equals(await regionHashes(await diskWith(content), size, { regionBytes })));
  });

  it("counts the tail of the larger volume as differing", async () => {
    const content = randomContent(5 * MiB, 3);
    const large = await regionHashes(await diskWith(content), 5 * MiB);
    const small = await regionHashes(await diskWith(content.subarray(0, 3 * MiB + 512 * KiB)), 3 * MiB + 512 * KiB);
    assert.equal(small.length, 4 * 16);
    const difference = hashesDiffer(small, large, verifyRegionBytes, 5 * MiB);
    // Region 3 holds 512 KiB on one side and 1 MiB on the other; regions 4 exists on one side only.
    assert.deepEqual(difference, { regions: [{ offset: 3 * MiB, length: 2 * MiB }], differingBytes: 2 * MiB });
    assert.deepEqual(hashesDiffer(large, small, verifyRegionBytes, 5 * MiB), difference, "symmetric");
  });

  it("merges adjacent differing regions and honours fromRegion", () => {
    const a = Buffer.alloc(6 * 16);
    const b = Buffer.from(a);
    for (const index of [1, 2, 4]) b[index * 16 + 3] = 1;
    const difference = hashesDiffer(a, b, 1 * MiB, 20 * MiB, 10);
    assert.deepEqual(difference, {
      regions: [
        { offset: 11 * MiB, length: 2 * MiB },
        { offset: 14 * MiB, length: 1 * MiB },
      ],
      differingBytes: 3 * MiB,
    });
    assert.throws(() => hashesDiffer(a, b, 1 * MiB, 5 * MiB), { name: "AssertionError" });
  });

  it("slices with fromRegion and regionsMax add up to the whole", async () => {
    const size = 9 * MiB + 512;
    const disk = await diskWith(randomContent(size, 4));
    const whole = await regionHashes(disk, size);
    const parts: Buffer[] = [];
    for (let fromRegion = 0; ; ) {
      const part = await regionHashes(disk, size, { fromRegion, regionsMax: 4 });
      if (part.length === 0) break;
      parts.push(part);
      fromRegion += part.length / 16;
    }
    assert.deepEqual(
      parts.map((part) => part.length / 16),
      [4, 4, 2],
    );
    assert.ok(Buffer.concat(parts).equals(whole));
    assert.equal((await regionHashes(disk, 0)).length, 0);
    await assert.rejects(regionHashes(disk, size, { regionsMax: verifyRegionsPerCallMax + 1 }), { name: "AssertionError" });
  });

  describe("on a real sparse file", () => {
    let directory = "";
    before(async () => {
      directory = await mkdtemp(join(tmpdir(), "lockstep-verify-"));
    });
    after(async () => {
      await rm(directory, { recursive: true, force: true });
    });

    it("agrees with a fully written copy", async () => {
      const size = 64 * MiB;
      const data = randomContent(256 * KiB, 5);
      const sparse = await NodeBlockFile.open(join(directory, "sparse.img"), { create: size });
      const full = await NodeBlockFile.open(join(directory, "full.img"), { create: size });
      try {
        await sparse.write([data], 40 * MiB + 4096);
        await sparse.datasync();
        const zeros = Buffer.alloc(1 * MiB);
        for (let offset = 0; offset < size; offset += zeros.length) await full.write([zeros], offset);
        await full.write([data], 40 * MiB + 4096);
        await full.datasync();
        const left = await regionHashes(sparse, size);
        const right = await regionHashes(full, size);
        assert.deepEqual(hashesDiffer(left, right, verifyRegionBytes, size), { regions: [], differingBytes: 0 });
        await full.write([Buffer.from([1])], 63 * MiB + 5);
        const changed = await regionHashes(full, size);
        assert.deepEqual(hashesDiffer(left, changed, verifyRegionBytes, size).regions, [{ offset: 63 * MiB, length: 1 * MiB }]);
      } finally {
        await sparse.close();
        await full.close();
      }
    });
  });

  it("hashes a large sparse volume without reading its holes", async () => {
    const size = 64 * MiB;
    const sparse = new SparseSimDisk("large", size);
    await sparse.write([Buffer.alloc(4096, 9)], 32 * MiB);
    sparse.readCount = 0;
    const digests = await regionHashes(sparse, size);
    assert.equal(digests.length, 64 * 16);
    assert.equal(sparse.readCount, 1);
  });
});
