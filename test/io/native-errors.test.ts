// Errors from the native addon carry the errno's name in `code` for every errno, as node:fs
// errors do, so that fromSystemError types them the same way (a native EDQUOT is DISK_FULL,
// not DISK_IO).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, constants, openSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fromSystemError } from "../../src/errors.js";
import { nativeFs } from "../../src/io/native.js";
import { NodeBlockFile } from "../../src/io/node-block-file.js";

// Runs `use` with a descriptor of a new FIFO (every fallocate on it fails with ESPIPE).
async function onFifo(use: (fd: number) => Promise<void>): Promise<void> {
  const directory = await mkdtemp(join(tmpdir(), "lockstep-native-errors-"));
  const path = join(directory, "fifo");
  execFileSync("mkfifo", [path]);
  const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
  try {
    await use(fd);
  } finally {
    closeSync(fd);
    await rm(directory, { recursive: true, force: true });
  }
}

describe("native errors", () => {
  it("name any errno: fallocate on a FIFO fails with ESPIPE", async () => {
    await onFifo(async (fd) => {
      await assert.rejects(nativeFs.fallocate(fd, "punch", 0, 4096), (error: NodeJS.ErrnoException) => {
        assert.equal(error.code, "ESPIPE");
        assert.equal(error.syscall, "fallocate");
        assert.match(error.message, /^fallocate ESPIPE: /);
        return true;
      });
    });
  });

  it("name the syscall of every range job: fallocate's allocate mode on a FIFO", async () => {
    // The allocate mode was added after the table of syscall names; an index past the table
    // crashed the process (found by the e2e test of a disk without room for the log).
    await onFifo(async (fd) => {
      await assert.rejects(nativeFs.fallocate(fd, "allocate", 0, 4096), (error: NodeJS.ErrnoException) => {
        assert.equal(error.code, "ESPIPE");
        assert.equal(error.syscall, "fallocate");
        return true;
      });
    });
  });

  it("type as node:fs errors do", () => {
    const quota = Object.assign(new Error("pwrite EDQUOT: Disk quota exceeded"), { code: "EDQUOT" });
    assert.equal(fromSystemError(quota, "write").code, "DISK_FULL");
  });
});

describe("reserving a file's space", () => {
  it("allocates every block, grows the file and keeps what it held", async () => {
    const directory = await mkdtemp(join(tmpdir(), "lockstep-reserve-"));
    const path = join(directory, "file");
    try {
      const file = await NodeBlockFile.open(path, { create: 4096 });
      await file.write([Buffer.alloc(4096, 0x5a)], 0);
      await file.reserve(1024 * 1024);
      assert.equal(await file.size(), 1024 * 1024);
      const held = Buffer.alloc(8192);
      await file.read(held, 0);
      assert.ok(held.subarray(0, 4096).every((byte) => byte === 0x5a), "the data it held");
      assert.ok(held.subarray(4096).every((byte) => byte === 0), "zeroes past it");
      assert.ok(statSync(path).blocks * 512 >= 1024 * 1024, `allocated: ${statSync(path).blocks} blocks`);
      await file.close();
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
