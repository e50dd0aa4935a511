// Disk errors reach the client as NBD errors, show in status, and the node keeps serving:
// a volume image on a tiny tmpfs runs out of space (ENOSPC) under qemu-io, while a second
// volume on the ordinary disk keeps working. Needs root for the tmpfs mount (CI runs as root).

import assert from "node:assert/strict";
import { mkdirSync, statfsSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, run, runOk, tempDir, TestNode } from "./harness.js";

describe("a full disk under a volume", () => {
  let dir: string;
  let mount: string;
  let node: TestNode;

  before(async () => {
    dir = tempDir("diskfull");
    mount = join(dir, "small");
    mkdirSync(mount);
    await runOk("mount", ["-t", "tmpfs", "-o", "size=4M", "tmpfs", mount]);
    node = new TestNode(dir);
    await node.start();
    await node.createVolume("small", "64MiB", ["--path", join(mount, "small.img")]);
    await node.createVolume("healthy", "16MiB");
  });

  after(async () => {
    await node.stop();
    await run("umount", [mount]);
    cleanup(dir);
  });

  it("gets ENOSPC, shows it in status, and keeps serving the other volume", async () => {
    const full = await run("qemu-io", ["-f", "raw", node.uri("small"), "-c", "write -P 0x5a 0 16M"]);
    assert.match(full.stdout + full.stderr, /No space left on device/, `qemu-io output: ${full.stdout}${full.stderr}`);
    const shown = await node.cli(["status", "--json"]);
    const volumes = (JSON.parse(shown.stdout) as { volumes: { name: string; errors: number; lastError: { code: string } | null }[] }).volumes;
    const small = volumes.find((volume) => volume.name === "small")!;
    assert.ok(small.errors > 0, "the error is counted");
    assert.equal(small.lastError?.code, "DISK_FULL");
    const human = await node.cli(["status"]);
    assert.match(human.stdout, /volume small: last error DISK_FULL/);
    await runOk("qemu-io", ["-f", "raw", node.uri("healthy"), "-c", "write -P 0x77 0 1M", "-c", "read -P 0x77 0 1M"]);
    const small4k = await runOk("qemu-io", ["-f", "raw", node.uri("small"), "-c", "read 0 4k"]);
    assert.match(small4k.stdout, /read 4096\/4096 bytes/, "reads of the full volume still work");
  });

  // The failed write's record is in the log (a secondary would apply it), so the group holds it
  // and re-applies it: the volume refuses writes meanwhile, and once there is room again the
  // image holds what the log says and the volume takes writes again.
  it("holds the logged write the disk refused, and re-applies it once there is room", async () => {
    const groupOf = async () => {
      const status = JSON.parse((await node.cli(["status", "--json"])).stdout) as { groups: { volumes: string[]; unapplied: { lsn: string; attempts: number; givenUp: boolean; error: string }[] }[] };
      return status.groups.find((group) => group.volumes.includes("small"))!;
    };
    const held = (await groupOf()).unapplied;
    assert.equal(held.length, 1, `one held change: ${JSON.stringify(held)}`);
    assert.match(held[0]!.error, /disk is full/);
    const refused = await run("qemu-io", ["-f", "raw", node.uri("small"), "-c", "write -P 0x11 32M 4k"]);
    assert.match(refused.stdout + refused.stderr, /No space left on device/, "writes behind it are refused with its error");
    await runOk("mount", ["-o", "remount,size=128M", mount]);
    const started = Date.now();
    while ((await groupOf()).unapplied.length > 0) {
      assert.ok(Date.now() - started < 9_000, "re-applied within the retries");
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await runOk("qemu-io", ["-f", "raw", node.uri("small"), "-c", "read -P 0x5a 0 16M"]); // what the log says
    await runOk("qemu-io", ["-f", "raw", node.uri("small"), "-c", "write -P 0x11 32M 4k", "-c", "read -P 0x11 32M 4k"]);
  });
});

// The group log gets all its blocks when it is made, so a disk without room for it refuses it at
// start (DISK_FULL), instead of the log failing at some write in service.
describe("a disk without room for the group log", () => {
  let dir: string;
  let mount: string;
  let node: TestNode;

  before(async () => {
    dir = tempDir("logfull");
    mount = join(dir, "small");
    mkdirSync(mount);
    await runOk("mount", ["-t", "tmpfs", "-o", "size=64M", "tmpfs", mount]);
    node = new TestNode(mount, { logSize: "128MiB" });
  });

  after(async () => {
    await node.stop();
    await run("umount", [mount]);
    cleanup(dir);
  });

  it("refuses the log at start with DISK_FULL, and makes it once there is room", async () => {
    await assert.rejects(node.start(), /DISK_FULL/);
    const used = statfsSync(mount);
    assert.ok((used.blocks - used.bfree) * used.bsize < 1024 * 1024, "the half-made log file is gone");
    await runOk("mount", ["-o", "remount,size=256M", mount]);
    await node.start();
    const log = statSync(join(node.dataDir, "groups", "g", "log"));
    assert.equal(log.blocks * 512, 128 * 1024 * 1024, "every block of the log is allocated");
    await node.createVolume("disk", "16MiB");
    await runOk("qemu-io", ["-f", "raw", node.uri("disk"), "-c", "write -P 0x3c 0 1M", "-c", "read -P 0x3c 0 1M"]);
  });
});
