// A secondary's own protection against destructive operations that arrive in-band (a primary
// that is compromised, or wrong): `delay` holds a snapshot delete for delaySeconds (status
// shows what is held) and then performs it; `refuse` keeps a deleted snapshot's twin under
// another name (the primary may reuse the name) and stops the applier at a restore, saying
// why, until the policy changes; after which the replica catches up and matches again.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { cleanup, runOk, tempDir, type TestNode } from "./harness.js";
import { Cluster } from "./replication-harness.js";

interface ReplicaView {
  appliedLsn: string;
  failure: string | null;
  protection: { destructive: string; held: { lsn: string; operations: string[] } | null; retainedTwins: number };
}

async function replicaView(node: TestNode): Promise<ReplicaView> {
  return (JSON.parse((await node.cli(["--json", "status"])).stdout) as { groups: ReplicaView[] }).groups[0]!;
}

async function snapshotNames(node: TestNode): Promise<string[]> {
  return (JSON.parse((await node.cli(["--json", "snapshot", "list"])).stdout) as { snapshots: { name: string }[] }).snapshots.map((entry) => entry.name).sort();
}

describe("a secondary's protection against destructive operations", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(cleanup));

  it("delay: a snapshot delete waits delaySeconds on the secondary, shown in status, then happens", async () => {
    const dir = tempDir("protect-delay");
    dirs.push(dir);
    const cluster = await Cluster.start(dir, 1, {}, { protection: { destructive: "delay", delaySeconds: 4 } });
    try {
      const secondary = cluster.secondary("secondary1");
      await cluster.primary.createVolume("disk0", "16MiB");
      await cluster.link("secondary1", "async");
      await cluster.waitConsistent();
      assert.equal((await cluster.primary.cli(["snapshot", "create", "disk0@s1"])).code, 0);
      await cluster.drain();
      assert.equal((await cluster.primary.cli(["snapshot", "delete", "disk0@s1"])).code, 0);
      const started = Date.now();
      let held: ReplicaView["protection"]["held"] = null;
      while (held === null && Date.now() - started < 3_000) held = (await replicaView(secondary)).protection.held;
      assert.ok(held !== null, "status shows the held delete");
      assert.match(held.operations[0]!, /snapshot\.delete volume 1 s1/);
      assert.deepEqual(await snapshotNames(secondary), ["disk0@s1"], "the twin is still there while held");
      await cluster.drain();
      assert.ok(Date.now() - started >= 3_000, "drain waited for the hold");
      assert.deepEqual(await snapshotNames(secondary), []);
      assert.equal((await replicaView(secondary)).protection.held, null);
    } finally {
      await cluster.stop();
    }
  });

  it("refuse: a deleted twin is kept under another name, a restore stops the applier until the policy changes", async () => {
    const dir = tempDir("protect-refuse");
    dirs.push(dir);
    const cluster = await Cluster.start(dir, 1, {}, { protection: { destructive: "refuse" } });
    try {
      const secondary = cluster.secondary("secondary1");
      await cluster.primary.createVolume("disk0", "16MiB");
      await cluster.link("secondary1", "async");
      await cluster.waitConsistent();
      await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x61 0 1M", cluster.primary.uri("disk0")]);
      assert.equal((await cluster.primary.cli(["snapshot", "create", "disk0@daily"])).code, 0);
      await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x62 0 1M", cluster.primary.uri("disk0")]);
      assert.equal((await cluster.primary.cli(["snapshot", "delete", "disk0@daily"])).code, 0);
      assert.equal((await cluster.primary.cli(["snapshot", "create", "disk0@daily"])).code, 0, "the name is free again on both sites");
      await cluster.drain();
      const names = await snapshotNames(secondary);
      assert.equal(names.length, 2);
      assert.ok(names.includes("disk0@daily"));
      const kept = names.find((name) => name.startsWith("disk0@~retained."))!;
      assert.ok(kept !== undefined, `the refused delete kept the twin: ${names}`);
      await runOk("qemu-io", ["-f", "raw", "-r", "-c", "read -P 0x61 0 1M", secondary.uri(kept)]); // the old content
      assert.equal((await replicaView(secondary)).protection.retainedTwins, 1);

      assert.equal((await cluster.primary.cli(["snapshot", "restore", "disk0@daily"])).code, 0);
      await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x63 2M 1M", cluster.primary.uri("disk0")]);
      let view = await replicaView(secondary);
      for (const started = Date.now(); view.failure === null && Date.now() - started < 10_000; view = await replicaView(secondary)) await new Promise((resolve) => setTimeout(resolve, 100));
      assert.match(view.failure ?? "", /OPERATION_REFUSED|protection policy/, "the applier stopped at the restore and says why");
      assert.match(view.protection.held?.operations[0] ?? "", /snapshot\.restore/);
      const drained = await cluster.primary.cli(["drain", "--timeout", "2s"]);
      assert.notEqual(drained.code, 0, "the secondary does not catch up past a refused restore");

      // the operator allows it: the secondary restarts with the default policy and catches up
      await secondary.stop();
      const { readFileSync, writeFileSync } = await import("node:fs");
      writeFileSync(secondary.configPath, readFileSync(secondary.configPath, "utf8").replace("destructive: refuse", "destructive: apply"));
      await secondary.start();
      await cluster.waitConsistent();
      await cluster.drain();
      await cluster.compareImages("disk0");
      await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", cluster.primary.uri("disk0@daily"), secondary.uri("disk0@daily")]);
    } finally {
      await cluster.stop();
    }
  });
});
