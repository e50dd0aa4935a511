// EIO from a volume's disk reaches the NBD client (qemu-io) as EIO, is counted and shown in
// status, and the node keeps serving; the write whose record was logged is held and re-applied
// when the disk recovers, and writes succeed again. The node
// runs in-process with a file opener that can fail a volume's writes on demand.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { OperatingError } from "../../src/errors.js";
import { run } from "../child-process.js";
import type { BlockFile, BlockFileOpener } from "../../src/io/block-file.js";
import { NodeBlockFile } from "../../src/io/node-block-file.js";
import { silentLogger } from "../../src/logger.js";
import { parseConfig } from "../../src/node/config.js";
import { LockstepNode } from "../../src/node/node.js";

async function qemuIo(uri: string, ...commands: string[]): Promise<string> {
  const result = await run("qemu-io", ["-f", "raw", uri, ...commands.flatMap((command) => ["-c", command])]);
  return result.stdout + result.stderr;
}

describe("EIO on a volume", () => {
  let dir: string;
  let node: LockstepNode;
  let failing = false;
  let failingLog = false;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ls-eio-"));
    const opener: BlockFileOpener = {
      async open(path, options) {
        const file = await NodeBlockFile.open(path, options);
        const isLog = path.endsWith("/log");
        if (!path.endsWith(".img") && !isLog) return file;
        const faulty: BlockFile = Object.create(file) as BlockFile;
        faulty.write = async (sources, position, durable) => {
          if (isLog ? failingLog : failing) throw new OperatingError("DISK_IO", { what: `write ${path}`, errno: "EIO" });
          return file.write(sources, position, durable);
        };
        return faulty;
      },
    };
    const config = parseConfig(`node: { name: t, dataDir: data }\nnbd: { socket: nbd.sock }\ngroups: [{ name: g }]\n`, dir);
    node = await LockstepNode.start(config, { files: opener, nowMs: Date.now, logger: silentLogger });
    await node.createVolume({ name: "v", group: "g", size: 16 * 1024 * 1024 });
  });

  after(async () => {
    await node.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("reaches the client, shows in status, and clears when the disk recovers", async () => {
    const uri = `nbd+unix:///v?socket=${join(dir, "nbd.sock")}`;
    failing = true;
    const failed = await qemuIo(uri, "write -P 0x42 0 64k");
    assert.match(failed, /Input\/output error/);
    const volume = ((await node.status()).volumes as { name: string; errors: number; lastError: { code: string } | null }[])[0]!;
    assert.equal(volume.lastError?.code, "DISK_IO");
    assert.ok(volume.errors >= 1);
    // The failed write's record is in the log: the group holds it (writes to the volume get EIO
    // meanwhile) and re-applies it once the disk takes writes again.
    type Held = { unapplied: { lsn: string }[] };
    assert.equal(((await node.status()).groups as Held[])[0]!.unapplied.length, 1, "the logged write is held");
    const refused = await qemuIo(uri, "write -P 0x43 0 64k");
    assert.match(refused, /Input\/output error/, "writes behind it are refused");
    failing = false;
    const deadline = Date.now() + 5000;
    while (((await node.status()).groups as Held[])[0]!.unapplied.length > 0) {
      assert.ok(Date.now() < deadline, "re-applied once the disk recovers");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.doesNotMatch(await qemuIo(uri, "read -P 0x42 0 64k"), /error|failed/i, "the image holds what the log says");
    const healed = await qemuIo(uri, "write -P 0x43 0 64k", "read -P 0x43 0 64k");
    assert.doesNotMatch(healed, /error|failed/i);
  });

  it("a failed log refuses writes with EIO, keeps serving reads, and says so in status", async () => {
    const uri = `nbd+unix:///v?socket=${join(dir, "nbd.sock")}`;
    failingLog = true;
    // The write itself is acknowledged (activity-map mode does not wait for the log file; its
    // extent stays hot) and the FLUSH makes the image durable; the log's writer then fails.
    await qemuIo(uri, "write -P 0x44 0 64k", "flush");
    const deadline = Date.now() + 5000;
    let group = ((await node.status()).groups as { log: { state: string; failure: { code: string } | null } }[])[0]!;
    while (group.log.state !== "failed" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
      group = ((await node.status()).groups as typeof group[])[0]!;
    }
    assert.equal(group.log.state, "failed");
    assert.equal(group.log.failure?.code, "DISK_IO");
    const after = await qemuIo(uri, "write -P 0x45 64k 4k");
    assert.match(after, /Input\/output error/, "writes keep failing: no write is acknowledged without its record");
    const read = await qemuIo(uri, "read -P 0x44 0 64k");
    assert.doesNotMatch(read, /error|failed/i, "reads still work, and see the acknowledged write");
  });
});
