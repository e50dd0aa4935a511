// A group snapshot is one consistent point across volumes, on both sites. One write-order
// workload spans three volumes (prefix-workload.py with three exports: one numbering of the
// writes over all of them, each write acknowledged before the next is issued), and while it
// runs the primary takes `snapshot create --group g --name tN` three times. Each group
// snapshot's three images, read together, must equal the state after exactly one prefix of the
// writes, on the primary and on the secondary (their twins), and the same prefix on both.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { checkPrefix } from "../tools/prefix-checker.js";
import { PrefixWorkload } from "../tools/prefix-workload.js";
import { cleanup, runOk, tempDir, type TestNode } from "./harness.js";
import { Cluster } from "./replication-harness.js";

const volumes = ["v0", "v1", "v2"];
const blocksPerVolume = 1024; // 4 MiB of each volume
const blocks = blocksPerVolume * volumes.length;
const seed = 4242;

async function groupImage(node: TestNode, snapshot: string, dir: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const volume of volumes) {
    const path = join(dir, `${node.options.name}-${volume}@${snapshot}.img`);
    await runOk("nbdcopy", [node.uri(`${volume}@${snapshot}`), path]);
    parts.push(readFileSync(path).subarray(0, blocksPerVolume * 4096));
  }
  return Buffer.concat(parts);
}

describe("a snapshot of a whole group", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(cleanup));

  it("is one consistent point of a workload spanning three volumes, on both sites", async () => {
    const dir = tempDir("group-snapshot");
    dirs.push(dir);
    const cluster = await Cluster.start(dir, 1, { logSize: "128MiB" });
    try {
      for (const volume of volumes) await cluster.primary.createVolume(volume, "8MiB");
      await cluster.link("secondary1", "async");
      await cluster.waitConsistent();
      const workload = new PrefixWorkload({ uri: volumes.map((volume) => cluster.primary.uri(volume)).join(","), blocks, seconds: 30, seed, progressPath: join(dir, "progress.json") });
      const names = ["t1", "t2", "t3"];
      for (const name of names) {
        await new Promise((resolve) => setTimeout(resolve, 800));
        const created = await cluster.primary.cli(["--json", "snapshot", "create", "--group", "g", "--name", name]);
        assert.equal(created.code, 0, created.stderr);
        assert.equal((JSON.parse(created.stdout) as { snapshots: unknown[] }).snapshots.length, 3);
      }
      const result = await workload.stop();
      assert.equal(result.code, 0, result.stderr);
      const issued = workload.progress()!.issued;
      await cluster.drain();
      const secondary = cluster.secondary("secondary1");
      let previous = 0;
      for (const name of names) {
        const onPrimary = checkPrefix(await groupImage(cluster.primary, name, dir), seed, blocks, issued);
        assert.ok(onPrimary.ok, `${name} on the primary: ${onPrimary.reason}`);
        assert.equal(onPrimary.prefixMin, onPrimary.prefixMax, `${name}: exactly one point`);
        const onSecondary = checkPrefix(await groupImage(secondary, name, dir), seed, blocks, issued);
        assert.ok(onSecondary.ok, `${name} on the secondary: ${onSecondary.reason}`);
        assert.equal(onSecondary.prefixMax, onPrimary.prefixMax, `${name}: the same point on both sites`);
        assert.ok(onPrimary.prefixMax > previous, `${name} is later than the one before (${onPrimary.prefixMax} > ${previous})`);
        process.stdout.write(`# group snapshot ${name}: writes 1..${onPrimary.prefixMax} of ${issued}, on both sites\n`);
        previous = onPrimary.prefixMax;
      }
    } finally {
      await cluster.stop();
    }
  });
});
