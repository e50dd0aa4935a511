// NodeBlockFile.writeBatch (the native addon's writeBatch, one thread-pool job): each buffer
// lands at its own position, in order, so a later write over an earlier one wins as it would
// written one by one; bad arguments are a TypeError before anything is written, and a failed
// write rejects with the errno's code.

import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { OperatingError } from "../../src/errors.js";
import { NodeBlockFile } from "../../src/io/node-block-file.js";
import { nativeFs } from "../../src/io/native.js";
import { Random } from "../../src/sim/random.js";

describe("writeBatch on a real file", () => {
  let directory = "";
  before(async () => {
    directory = await mkdtemp(join(tmpdir(), "lockstep-batch-"));
  });
  after(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it("writes every buffer at its position in order: overlapping ones as if written one by one", async () => {
    const size = 256 * 1024;
    const path = join(directory, "image");
    const file = await NodeBlockFile.open(path, { create: size });
    const expected = Buffer.alloc(size);
    const random = new Random(5);
    for (let round = 0; round < 20; round++) {
      const sources: Buffer[] = [];
      const positions: number[] = [];
      const count = 1 + random.below(300);
      for (let index = 0; index < count; index++) {
        const length = 512 * (1 + random.below(16));
        const position = random.below(size - length + 1);
        const data = random.fill(Buffer.alloc(length));
        sources.push(data);
        positions.push(position);
        data.copy(expected, position); // one by one, in order
      }
      await file.writeBatch(sources, positions);
    }
    await file.close();
    assert.ok((await readFile(path)).equals(expected), "the file differs from the writes applied in order");
  });

  it("refuses bad arguments with a TypeError, writing nothing", async () => {
    const path = join(directory, "refused");
    const file = await NodeBlockFile.open(path, { create: 4096 });
    const one = Buffer.alloc(512, 1);
    assert.throws(() => nativeFs.writeBatch(file.fd, [one], []), TypeError); // one position each
    assert.throws(() => nativeFs.writeBatch(file.fd, [], []), TypeError); // nothing to write
    assert.throws(() => nativeFs.writeBatch(file.fd, [one], [-1]), TypeError);
    assert.throws(() => nativeFs.writeBatch(file.fd, ["text" as unknown as Buffer], [0]), TypeError);
    assert.throws(() => nativeFs.writeBatch(file.fd, Array.from({ length: 1025 }, () => one), Array.from({ length: 1025 }, () => 0)), TypeError);
    await file.close();
    assert.ok((await readFile(path)).equals(Buffer.alloc(4096)), "a refused batch wrote something");
  });

  it("a write that fails rejects with the errno's code (a descriptor open read-only: EBADF)", async () => {
    const path = join(directory, "read-only");
    await (await NodeBlockFile.open(path, { create: 4096 })).close();
    const file = await NodeBlockFile.open(path, { readOnly: true });
    await assert.rejects(file.writeBatch([Buffer.alloc(512, 1)], [0]), (error: OperatingError) => error.code === "DISK_IO" && typeof error.detail === "object" && error.detail.errno === "EBADF");
    await file.close();
    assert.ok((await readFile(path)).equals(Buffer.alloc(4096)));
  });
});
