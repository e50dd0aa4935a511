// kill -9 between logging an operation and performing it, on either node, and right after
// performing it (src/crash-point.ts): each time, recovery performs the operation exactly once
// — the snapshot exists once, redo does not fail on it, and after `drain` the primary's
// snapshot and its twin on the secondary are identical.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { cleanup, runOk, tempDir, type TestNode } from "./harness.js";
import { Cluster } from "./replication-harness.js";

async function snapshotNames(node: TestNode): Promise<string[]> {
  const result = await node.cli(["--json", "snapshot", "list"]);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { snapshots: { name: string }[] }).snapshots.map((entry) => entry.name).sort();
}

async function waitExited(node: TestNode): Promise<void> {
  const child = node.child!;
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => child.once("exit", resolve));
}

describe("kill -9 around an operation: performed exactly once", () => {
  let dir: string;
  let cluster: Cluster;
  let secondary: TestNode;

  before(async () => {
    dir = tempDir("op-crash");
    cluster = await Cluster.start(dir, 1, { logSize: "128MiB" });
    secondary = cluster.secondary("secondary1");
    await cluster.primary.createVolume("disk0", "32MiB");
    await cluster.link("secondary1", "async");
    await cluster.waitConsistent();
  });

  after(async () => {
    await cluster.stop();
    cleanup(dir);
  });

  const expected: string[] = [];
  let pattern = 0x40;

  const crashCase = (where: "primary" | "secondary", point: string) =>
    it(`${where} killed at ${point}`, async () => {
      const node = where === "primary" ? cluster.primary : secondary;
      const name = `s-${point}`;
      pattern += 1;
      await runOk("qemu-io", ["-f", "raw", "-c", `write -P ${pattern} 0 4M`, cluster.primary.uri("disk0")]);
      await cluster.drain();
      await node.stop();
      await node.start({ env: { LOCKSTEP_CRASH_POINT: point } });
      if (where === "secondary") await cluster.waitConsistent();
      const created = await cluster.primary.cli(["snapshot", "create", `disk0@${name}`]);
      if (where === "primary") assert.notEqual(created.code, 0, "the primary died before answering");
      else assert.equal(created.code, 0, created.stderr);
      await waitExited(node);
      assert.equal(node.child!.signalCode, "SIGKILL", `${where} died at the crash point`);
      await node.start();
      await runOk("qemu-io", ["-f", "raw", "-c", `write -P ${pattern + 0x20} 0 1M`, cluster.primary.uri("disk0")]); // writes after it
      await cluster.waitConsistent(120_000);
      await cluster.drain();
      expected.push(`disk0@${name}`);
      assert.deepEqual(await snapshotNames(cluster.primary), [...expected].sort());
      assert.deepEqual(await snapshotNames(secondary), [...expected].sort());
      for (const snapshot of expected) await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", cluster.primary.uri(snapshot), secondary.uri(snapshot)]);
      await runOk("qemu-io", ["-f", "raw", "-r", "-c", `read -P ${pattern} 0 4M`, cluster.primary.uri(`disk0@${name}`)]); // taken after the first write, before the second
      await cluster.compareImages("disk0");
    });

  crashCase("primary", "operation-logged");
  crashCase("primary", "operation-performed");
  crashCase("secondary", "replica-operation-received");
  crashCase("secondary", "replica-operation-performed");
});
