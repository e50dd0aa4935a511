// Errors from the native addon carry the errno's name in `code` for every errno, as node:fs
// errors do, so that fromSystemError types them the same way (a native EDQUOT is DISK_FULL,
// not DISK_IO).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { fromSystemError } from "../../src/errors.js";
import { nativeFs } from "../../src/io/native.js";

describe("native errors", () => {
  it("name any errno: fallocate on a FIFO fails with ESPIPE", async () => {
    const directory = await mkdtemp(join(tmpdir(), "lockstep-native-errors-"));
    const path = join(directory, "fifo");
    execFileSync("mkfifo", [path]);
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    try {
      await assert.rejects(nativeFs.fallocate(fd, "punch", 0, 4096), (error: NodeJS.ErrnoException) => {
        assert.equal(error.code, "ESPIPE");
        assert.equal(error.syscall, "fallocate");
        assert.match(error.message, /^fallocate ESPIPE: /);
        return true;
      });
    } finally {
      closeSync(fd);
      await rm(directory, { recursive: true, force: true });
    }
  });

  it("type as node:fs errors do", () => {
    const quota = Object.assign(new Error("pwrite EDQUOT: Disk quota exceeded"), { code: "EDQUOT" });
    assert.equal(fromSystemError(quota, "write").code, "DISK_FULL");
  });
});
