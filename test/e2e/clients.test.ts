// Real clients against a real `lockstep serve` process: qemu-io patterns, fio with
// --verify=crc32c at QD16 over two connections, qemu-img compare of the raw image against
// what was written through NBD, nbdinfo --map after trims, nbdcopy of the export.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, run, runOk, sha256File, tempDir, TestNode } from "./harness.js";

// fio writes 384 MiB sequentially in 1 MiB requests at QD4 and reads them back with crc32c.
async function write384MiBVerified(uri: string, cwd: string): Promise<void> {
  const result = await runOk("fio", [
    "--name=wrap", "--ioengine=nbd", `--uri=${uri}`, "--rw=write", "--bs=1m", "--iodepth=4",
    "--size=384m", "--loops=1", "--verify=crc32c", "--verify_fatal=1", "--output-format=json",
  ], { timeoutMs: 300_000, cwd });
  const job = (JSON.parse(result.stdout.slice(result.stdout.indexOf("{"))) as { jobs: { error: number }[] }).jobs[0]!;
  assert.equal(job.error, 0);
}

describe("real NBD clients against lockstep", () => {
  let dir: string;
  let node: TestNode;
  let image: string;

  before(async () => {
    dir = tempDir("clients");
    node = new TestNode(dir);
    await node.start();
    image = await node.createVolume("disk0", "64MiB");
  });

  after(async () => {
    await node.stop();
    cleanup(dir);
  });

  it("qemu-io writes patterns and reads them back", async () => {
    const uri = node.uri("disk0");
    await runOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0xab 0 1M", "-c", "write -P 0xcd 4M 64k", "-c", "write -z 8M 1M"]);
    const read = await runOk("qemu-io", ["-f", "raw", uri, "-c", "read -P 0xab 0 1M", "-c", "read -P 0xcd 4M 64k", "-c", "read -P 0 8M 1M"]);
    assert.doesNotMatch(read.stdout + read.stderr, /Pattern verification failed|error/i);
    const wrong = await run("qemu-io", ["-f", "raw", uri, "-c", "read -P 0x11 0 4k"]);
    assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed/, "a wrong pattern must be detected (the check can fail)");
    // qemu-io waits for each reply before the next request: the node polled after them (nbd.pollMicros's default)
    const status = JSON.parse((await node.cli(["status", "--json"])).stdout) as { nbd: { poll: { micros: number; windows: number; turns: number } } };
    assert.equal(status.nbd.poll.micros, 50);
    assert.ok(status.nbd.poll.windows > 0, JSON.stringify(status.nbd.poll)); // (turns depend on timing)
  });

  it("fio randwrite QD16 over two connections verifies with crc32c", async () => {
    const result = await runOk("fio", [
      "--name=verify", "--ioengine=nbd", `--uri=${node.uri("disk0")}`, "--rw=randwrite", "--bs=4k", "--iodepth=16",
      "--numjobs=2", "--size=16m", "--offset_increment=24m", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
      "--output-format=json",
    ], { timeoutMs: 180_000, cwd: dir }); // fio leaves its verify state in the working directory
    const report = JSON.parse(result.stdout.slice(result.stdout.indexOf("{"))) as { jobs: { error: number; write: { io_bytes: number }; read: { io_bytes: number } }[] };
    assert.equal(report.jobs.length, 2);
    for (const job of report.jobs) {
      assert.equal(job.error, 0);
      assert.equal(job.write.io_bytes, 16 * 1024 * 1024);
      assert.equal(job.read.io_bytes, 16 * 1024 * 1024, "fio read everything back for verification");
    }
  });

  it("the raw image equals what was written through NBD (qemu-img compare)", async () => {
    const source = join(dir, "source.img");
    const content = Buffer.alloc(64 * 1024 * 1024);
    for (let at = 0; at < content.length; at += 4096) content.writeUInt32LE(((at / 4096 + 1) * 2654435761) >>> 0, at);
    writeFileSync(source, content);
    await runOk("nbdcopy", [source, node.uri("disk0")]);
    await runOk("qemu-io", ["-f", "raw", node.uri("disk0"), "-c", "flush"]);
    const compare = await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, image]);
    assert.match(compare.stdout, /Images are identical/);
    content[12345] ^= 0xff;
    writeFileSync(source, content);
    const differ = await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", source, image]).catch((error: Error) => error);
    assert.ok(differ instanceof Error, "qemu-img compare must notice a changed byte");
  });

  it("nbdinfo --map shows holes after trims", async () => {
    await runOk("qemu-io", ["-f", "raw", node.uri("disk0"), "-c", "discard 16M 8M", "-c", "write -z -u 32M 4M"]);
    const map = await runOk("nbdinfo", ["--map", "--json", node.uri("disk0")]);
    const extents = JSON.parse(map.stdout) as { offset: number; length: number; type: number; description: string }[];
    const hole = (offset: number) => extents.find((extent) => extent.offset <= offset && offset < extent.offset + extent.length);
    assert.equal(hole(16 * 1024 * 1024 + 4096)?.type, 3, "a trimmed range is a hole that reads as zero");
    assert.equal(hole(33 * 1024 * 1024)?.type, 3, "a zeroed (may-unmap) range is a hole");
    assert.equal(hole(0)?.type, 0, "written data is allocated");
    const zeros = await runOk("qemu-io", ["-f", "raw", node.uri("disk0"), "-c", "read -P 0 16M 8M"]);
    assert.doesNotMatch(zeros.stdout, /Pattern verification failed/);
  });

  // With no link, an activity-map log holds where each write went, not its data (DESIGN-NOTES
  // §1): 384 MiB of writes add a few hundred KiB of records, and no checkpoint is needed.
  it("with no link, the log records where writes went, not their data", async () => {
    await node.createVolume("big", "384MiB");
    await write384MiBVerified(node.uri("big"), dir);
    const status = JSON.parse((await node.cli(["status", "--json"])).stdout) as { groups: { logOmitsData: boolean; log: { usedBytes: number; headLsn: string } }[] };
    const group = status.groups[0]!;
    assert.equal(group.logOmitsData, true);
    assert.ok(Number(group.log.headLsn) >= 384, `every write has its record (head ${group.log.headLsn})`);
    assert.ok(group.log.usedBytes < 16 * 1024 * 1024, `the log holds no data: ${group.log.usedBytes} bytes used after 384 MiB of writes`);
  });

  // A write-ahead log holds every write's data: 384 MiB through a 128 MiB log wraps it, with
  // checkpoints making room, and fio verifies every block.
  it("writes several times a write-ahead log's size (wrap-around, checkpoints) and verifies", async () => {
    const walDir = tempDir("clients-wal");
    const wal = new TestNode(walDir, { durability: "write-ahead" });
    await wal.start();
    try {
      await wal.createVolume("big", "384MiB");
      await write384MiBVerified(wal.uri("big"), dir);
      const status = JSON.parse((await wal.cli(["status", "--json"])).stdout) as { groups: { logOmitsData: boolean; stats: { checkpoints: number; logFullErrors: number } }[] };
      const group = status.groups[0]!;
      assert.equal(group.logOmitsData, false);
      assert.ok(group.stats.checkpoints > 0, "the 128 MiB log was checkpointed to make room");
      assert.equal(group.stats.logFullErrors, 0);
    } finally {
      await wal.stop();
      cleanup(walDir);
    }
  });

  it("nbdcopy copies the export to a file equal to the image", async () => {
    const copy = join(dir, "copy.img");
    await runOk("nbdcopy", [node.uri("disk0"), copy]);
    assert.equal(await sha256File(copy), await sha256File(image));
  });
});
