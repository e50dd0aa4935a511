// A volume on a block device (a loop device over a temp file, made by the test; needs root,
// as CI has): adopted with --path, written and verified with real clients, trimmed with
// BLKDISCARD, and refused a resize with a typed error. The device is detached in the end.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, run, runOk, sha256File, tempDir, TestNode } from "./harness.js";

describe("a volume on a block device", () => {
  let dir: string;
  let device = "";
  let node: TestNode;

  before(async () => {
    dir = tempDir("blockdev");
    const backing = join(dir, "backing.img");
    writeFileSync(backing, Buffer.alloc(0));
    await runOk("truncate", ["-s", "64M", backing]);
    device = (await runOk("losetup", ["--find", "--show", backing])).stdout.trim();
    assert.match(device, /^\/dev\/loop\d+$/);
    node = new TestNode(dir);
    await node.start();
  });

  after(async () => {
    await node.stop();
    if (device !== "") await run("losetup", ["-d", device]);
    cleanup(dir);
  });

  it("serves it to real clients, trims it, and refuses to resize it", async () => {
    const created = await node.cli(["volume", "create", "blk", "--group", "g", "--path", device, "--json"]);
    assert.equal(created.code, 0, created.stderr);
    assert.equal((JSON.parse(created.stdout) as { volume: { size: number } }).volume.size, 64 * 1024 * 1024, "the size comes from the device");
    const uri = node.uri("blk");
    await runOk("fio", ["--name=blk", "--ioengine=nbd", `--uri=${uri}`, "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=32m", "--verify=crc32c", "--verify_fatal=1"], { timeoutMs: 180_000, cwd: dir });
    await runOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x6b 40M 4M", "-c", "discard 48M 4M", "-c", "flush"]);
    const read = await runOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x6b 40M 4M", "-c", "read -P 0 48M 4M"]);
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
    const copy = join(dir, "copy.img");
    await runOk("nbdcopy", [uri, copy]);
    assert.equal(await sha256File(copy), await sha256File(device), "the device holds exactly what the export serves");
    const resize = await node.cli(["volume", "resize", "blk", "128MiB"]);
    assert.equal(resize.code, 1);
    assert.match(resize.stderr, /^error NOT_SUPPORTED: .*block device/);
  });
});
