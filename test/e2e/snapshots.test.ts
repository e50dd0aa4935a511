// Snapshots end to end, through real clients, in both durability modes:
//   fio writes → snapshot → sha256 of the snapshot export (nbdcopy) and a copy of the volume
//   taken at that moment → more fio writes → kill -9 mid-write → restart → the snapshot export
//   has the same sha256 and `qemu-img compare` finds it identical to the copy → restore → the
//   volume equals the copy. Then a writable snapshot of the snapshot, the tree, diff, and the
//   refusals (unknown names, duplicates, children, restore across volumes, NBD writes to a
//   read-only snapshot get EPERM) and a full snapshot store (ENOSPC; the snapshot and every
//   acknowledged write survive).

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { start } from "../child-process.js";
import { cleanup, run, runOk, sha256File, tempDir, TestNode } from "./harness.js";

const python = "/usr/bin/python3"; // Debian's, where python3-libnbd installs

async function copyOf(node: TestNode, exportName: string, path: string): Promise<string> {
  await runOk("nbdcopy", [node.uri(exportName), path]);
  return sha256File(path);
}

async function fio(node: TestNode, exportName: string, extra: readonly string[]): Promise<void> {
  await runOk("fio", ["--name=w", "--ioengine=nbd", `--uri=${node.uri(exportName)}`, "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=64m", "--randrepeat=0", ...extra], { timeoutMs: 120_000 });
}

// A write through libnbd with the client's own checks off, so the server must refuse it.
async function nbdWriteErrno(node: TestNode, exportName: string): Promise<string> {
  const script = [
    "import nbd, sys",
    "h = nbd.NBD()",
    "h.set_strict_mode(0)",
    `h.connect_uri(${JSON.stringify(node.uri(exportName))})`,
    "try:",
    "    h.pwrite(b'x' * 4096, 0)",
    "    print('written')",
    "except nbd.Error as e:",
    "    import errno",
    "    print(errno.errorcode.get(e.errno, str(e.errno)))",
  ].join("\n");
  return (await runOk(python, ["-c", script])).stdout.trim();
}

async function failsWith(node: TestNode, args: readonly string[], code: string): Promise<void> {
  const result = await node.cli(args);
  assert.notEqual(result.code, 0, `${args.join(" ")} must fail`);
  assert.match(result.stderr, new RegExp(`^error ${code}:`), `${args.join(" ")}: ${result.stderr}`);
}

for (const durability of ["activity-map", "write-ahead"] as const) {
  describe(`snapshots end to end (${durability})`, () => {
    let dir: string;
    let node: TestNode;
    let snapshotSha: string;
    let atSnapshot: string;

    before(async () => {
      dir = tempDir(`snapshots-${durability}`);
      node = new TestNode(dir, { durability });
      await node.start();
      await node.createVolume("vol", "64MiB");
      await node.createVolume("other", "16MiB");
    });

    after(async () => {
      await node.stop();
      cleanup(dir);
    });

    it("a snapshot equals the volume at the moment it was taken", async () => {
      await fio(node, "vol", ["--io_size=24m", "--verify=crc32c", "--end_fsync=1"]);
      const created = await node.cli(["snapshot", "create", "vol@snap1", "--json"]);
      assert.equal(created.code, 0, created.stderr);
      const info = JSON.parse(created.stdout).snapshot;
      assert.equal(info.name, "vol@snap1");
      assert.equal(info.writable, false);
      atSnapshot = join(dir, "at-snapshot.img");
      const volumeSha = await copyOf(node, "vol", atSnapshot); // no writes since the snapshot
      snapshotSha = await copyOf(node, "vol@snap1", join(dir, "snap1.img"));
      assert.equal(snapshotSha, volumeSha);
    });

    it("more writes and a kill -9 leave the snapshot's content unchanged", async () => {
      await fio(node, "vol", ["--io_size=16m", "--end_fsync=1"]);
      const writing = start("fio", ["--name=w", "--ioengine=nbd", `--uri=${node.uri("vol")}`, "--rw=randwrite", "--bs=64k", "--iodepth=8", "--size=64m", "--time_based", "--runtime=30", "--fsync=8"]);
      await new Promise((resolve) => setTimeout(resolve, 700 + Math.random() * 800));
      await node.kill();
      await writing.finished;
      await node.start();
      assert.notEqual(await copyOf(node, "vol", join(dir, "after.img")), snapshotSha, "the volume did change");
      assert.equal(await copyOf(node, "vol@snap1", join(dir, "snap1-again.img")), snapshotSha);
      const compare = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", node.uri("vol@snap1"), atSnapshot]);
      assert.equal(compare.code, 0, `qemu-img compare: ${compare.stdout}${compare.stderr}`);
      const map = await runOk("nbdinfo", ["--map", node.uri("vol@snap1")]);
      assert.match(map.stdout, /data/);
    });

    it("diff lists the regions written since, and restore makes the volume equal the snapshot again", async () => {
      const listed = await node.cli(["snapshot", "diff", "vol@snap1", "vol", "--json"]);
      assert.equal(listed.code, 0, listed.stderr);
      const result = JSON.parse(listed.stdout);
      assert.ok(result.totalBytes > 0 && result.regions.length > 0);
      const restored = await node.cli(["snapshot", "restore", "vol@snap1", "--json"]);
      assert.equal(restored.code, 0, restored.stderr);
      assert.ok(JSON.parse(restored.stdout).bytesWritten <= result.totalBytes, "restore writes only what differs");
      const compare = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", node.uri("vol"), atSnapshot]);
      assert.equal(compare.code, 0, `qemu-img compare: ${compare.stdout}${compare.stderr}`);
      // (diff works from metadata: a chunk written back by the restore still counts as differing)
      const human = await node.cli(["snapshot", "diff", "vol@snap1", "vol@snap1"]);
      assert.match(human.stdout, /^total: 0 bytes/m);
    });

    it("a writable snapshot of the snapshot takes writes without touching its origin or the volume", async () => {
      assert.equal((await node.cli(["snapshot", "create", "vol@test", "--from", "vol@snap1", "--writable"])).code, 0);
      await fio(node, "vol@test", ["--io_size=8m", "--verify=crc32c", "--end_fsync=1"]);
      assert.equal(await copyOf(node, "vol@snap1", join(dir, "snap1-third.img")), snapshotSha);
      const compare = await run("qemu-img", ["compare", "-f", "raw", "-F", "raw", node.uri("vol"), atSnapshot]);
      assert.equal(compare.code, 0, "the volume is untouched by its snapshot's writes");
      const tree = JSON.parse((await node.cli(["snapshot", "list", "vol", "--json"])).stdout).snapshots;
      assert.deepEqual(tree.map((entry: { name: string; parent: string; depth: number }) => [entry.name, entry.parent, entry.depth]), [["vol@snap1", "vol", 1], ["vol@test", "vol@snap1", 2]]);
      const human = await node.cli(["snapshot", "list"]);
      assert.match(human.stdout, /\n {2}vol@test +vol@snap1 +rw/);
    });

    it("bad requests get clear, typed errors, and read-only snapshots refuse NBD writes with EPERM", async () => {
      await failsWith(node, ["snapshot", "create", "vol@snap1"], "SNAPSHOT_EXISTS");
      await failsWith(node, ["snapshot", "create", "vol@x", "--from", "vol@nope"], "SNAPSHOT_NOT_FOUND");
      await failsWith(node, ["snapshot", "create", "nope@x"], "VOLUME_NOT_FOUND");
      await failsWith(node, ["snapshot", "create", "vol@bad/name"], "REQUEST_INVALID");
      await failsWith(node, ["snapshot", "delete", "vol@nope"], "SNAPSHOT_NOT_FOUND");
      await failsWith(node, ["snapshot", "delete", "vol@snap1"], "SNAPSHOT_HAS_CHILDREN");
      await failsWith(node, ["snapshot", "restore", "vol@snap1", "--volume", "other"], "SNAPSHOT_CROSS_VOLUME");
      await failsWith(node, ["snapshot", "diff", "vol@snap1", "other"], "SNAPSHOT_CROSS_VOLUME");
      await failsWith(node, ["snapshot", "create", "vol@x", "--from", "other"], "SNAPSHOT_CROSS_VOLUME");
      assert.equal(await nbdWriteErrno(node, "vol@snap1"), "EPERM");
      assert.equal(await nbdWriteErrno(node, "vol@test"), "written");
      assert.equal(await copyOf(node, "vol@snap1", join(dir, "snap1-fourth.img")), snapshotSha, "refusals changed nothing");
      const deleted = await node.cli(["snapshot", "delete", "vol@snap1", "--recursive", "--json"]);
      assert.equal(deleted.code, 0, deleted.stderr);
      assert.deepEqual(new Set(JSON.parse(deleted.stdout).deleted), new Set(["vol@test", "vol@snap1"]));
      const status = JSON.parse((await node.cli(["status", "--json"])).stdout);
      const usage = status.volumes.find((volume: { name: string }) => volume.name === "vol").snapshots;
      assert.equal(usage.snapshots, 0);
      assert.equal(usage.usedBytes, 0, "deleting every snapshot frees every chunk");
    });
  });
}

describe("a full snapshot store", () => {
  let dir: string;
  let node: TestNode;

  before(async () => {
    dir = tempDir("snapshot-full");
    node = new TestNode(dir, { snapshots: { chunkSize: "64KiB", storeSize: "1MiB" } });
    await node.start();
    await node.createVolume("vol", "16MiB");
  });

  after(async () => {
    await node.stop();
    cleanup(dir);
  });

  it("refuses the write that would need more (ENOSPC), keeps the snapshot and every acknowledged write, and says so in status", async () => {
    await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x11 0 4M", node.uri("vol")]);
    assert.equal((await node.cli(["snapshot", "create", "vol@s"])).code, 0);
    const before = await copyOf(node, "vol@s", join(dir, "s.img"));
    await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x22 0 1M", node.uri("vol")]); // 16 chunks: the whole store
    const refused = await run("qemu-io", ["-f", "raw", "-c", "write -P 0x33 2M 64k", node.uri("vol")]);
    assert.match(refused.stdout + refused.stderr, /No space left on device/);
    await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x44 0 64k", node.uri("vol")]); // preserved already: no room needed
    await runOk("qemu-io", ["-f", "raw", "-r", "-c", "read -P 0x44 0 64k", "-c", "read -P 0x22 64k 960k", "-c", "read -P 0x11 1M 3M", node.uri("vol")]);
    assert.equal(await copyOf(node, "vol@s", join(dir, "s-again.img")), before, "the snapshot is never invalidated");
    const status = JSON.parse((await node.cli(["status", "--json"])).stdout);
    const usage = status.volumes[0].snapshots;
    assert.equal(usage.full, true);
    assert.equal(usage.stats.storeFullErrors, 1);
    assert.equal(usage.usedBytes, 1024 * 1024);
  });
});
