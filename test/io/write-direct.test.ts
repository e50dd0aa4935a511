// Writes around the page cache (BlockFileOptions.bypassCache: O_DIRECT through the native
// addon's writeDirect, a group log's batches): an aligned write of directWriteBytesMin or more,
// of any list of buffers, goes direct, an unaligned or smaller one through the cache, and however they interleave and overlap, reads
// (cached or not) and the file on disk show the writes in the order they were made. Bad
// arguments to writeDirect are a TypeError before anything is written.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { directWriteBytesMin, NodeBlockFile } from "../../src/io/node-block-file.js";
import { nativeFs } from "../../src/io/native.js";
import { Random } from "../../src/sim/random.js";

const align = nativeFs.directAlignBytes;

// `total` bytes cut into pieces of random sizes (odd ones too), each its own buffer.
function pieces(random: Random, total: number): Buffer[] {
  const list: Buffer[] = [];
  for (let left = total; left > 0; ) {
    const size = Math.min(left, 1 + random.below(random.below(4) === 0 ? 300_000 : 9000));
    list.push(random.fill(Buffer.alloc(size)));
    left -= size;
  }
  return list;
}

describe("writes around the page cache on a real file", () => {
  let directory = "";
  before(async () => {
    directory = await mkdtemp(join(tmpdir(), "lockstep-direct-"));
  });
  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it("large aligned writes go direct, others through the cache, and the file is the writes in order", async () => {
    const size = 4 * 1024 * 1024;
    const path = join(directory, "log");
    const file = await NodeBlockFile.open(path, { create: size, bypassCache: true, writesOffLoop: true });
    assert.ok(file.bypassesCache, "the test directory's file system refuses O_DIRECT");
    const expected = Buffer.alloc(size);
    const random = new Random(21);
    let aligned = 0;
    for (let round = 0; round < 200; round++) {
      const kind = random.below(3); // 0, 1: whole blocks; 2: any range
      // whole blocks: from 4 KiB to 3 MiB (more than the addon's 1 MiB chunk)
      const length = kind < 2 ? align * (1 + random.below(random.below(4) === 0 ? 768 : 64)) : 1 + random.below(20_000);
      const position = kind < 2 ? align * random.below((size - length) / align + 1) : random.below(size - length + 1);
      const direct = kind < 2 && length >= directWriteBytesMin;
      const sources = pieces(random, length);
      const directBefore = file.directWrites;
      assert.equal(await file.write(sources, position), direct, `round ${round}: write() says which way it went`);
      assert.equal(file.directWrites - directBefore, direct ? 1 : 0, `round ${round}: went the way write() said`);
      Buffer.concat(sources).copy(expected, position);
      if (direct) aligned += 1;
      // a read of a range just written (through the cache) sees it, whichever way it went
      const probe = Buffer.alloc(Math.min(length, 8192));
      await file.read(probe, position);
      assert.ok(probe.equals(expected.subarray(position, position + probe.length)), `round ${round}: a read after the write differs`);
    }
    assert.ok(aligned >= 20, `only ${aligned} writes large enough to go direct`);
    assert.equal(file.directWrites, aligned);
    await file.datasync();
    const whole = Buffer.alloc(size);
    await file.read(whole, 0);
    assert.ok(whole.equals(expected), "a read of the whole file differs from the writes in order");
    await file.close();
    assert.ok((await readFile(path)).equals(expected), "the file differs from the writes in order");
  });

  it("a file opened without bypassCache writes nothing direct", async () => {
    const file = await NodeBlockFile.open(join(directory, "image"), { create: directWriteBytesMin });
    assert.equal(file.bypassesCache, false);
    assert.equal(await file.write([Buffer.alloc(directWriteBytesMin, 3)], 0), false);
    assert.equal(file.directWrites, 0);
    await file.close();
  });

  it("writeDirect refuses bad arguments with a TypeError, writing nothing", async () => {
    const path = join(directory, "refused");
    const file = await NodeBlockFile.open(path, { create: 2 * align, bypassCache: true });
    const block = Buffer.alloc(align, 1);
    assert.throws(() => nativeFs.writeDirect(file.fd, [block], 512), TypeError); // position not aligned
    assert.throws(() => nativeFs.writeDirect(file.fd, [block.subarray(1)], 0), TypeError); // length not aligned
    assert.throws(() => nativeFs.writeDirect(file.fd, [], 0), TypeError); // nothing to write
    assert.throws(() => nativeFs.writeDirect(file.fd, [block], -align), TypeError);
    assert.throws(() => nativeFs.writeDirect(file.fd, ["text" as unknown as Buffer], 0), TypeError);
    assert.throws(() => nativeFs.writeDirect(file.fd, Array.from({ length: 1025 }, () => block.subarray(0, 4)), 0), TypeError);
    await file.close();
    assert.ok((await readFile(path)).equals(Buffer.alloc(2 * align)), "a refused write wrote something");
  });
});
