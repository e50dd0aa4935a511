// When the exact point is lost (DESIGN-NOTES.md §8): a link paused long enough to fold into
// its bitmap misses operations and writes to a writable snapshot. At the end of its resync the
// primary builds the peer's twins: missing ones are created, stale ones rebuilt, deleted ones
// removed, each shipping only the regions where the snapshot differs from its base. A new
// secondary gets every twin the same way. Judged by `qemu-img compare` of every vol@snap export
// against its twin, the snapshot trees, and verify.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { cleanup, runOk, tempDir, type TestNode } from "./harness.js";
import { Cluster } from "./replication-harness.js";

interface SnapshotView {
  name: string;
  parent: string | null;
  writable: boolean;
  size: number;
}

async function snapshots(node: TestNode): Promise<SnapshotView[]> {
  const result = await node.cli(["--json", "snapshot", "list"]);
  assert.equal(result.code, 0, result.stderr);
  return (JSON.parse(result.stdout) as { snapshots: SnapshotView[] }).snapshots
    .filter((snapshot) => !snapshot.name.includes("@~"))
    .map(({ name, parent, writable, size }) => ({ name, parent, writable, size }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

async function cli(node: TestNode, args: string[]): Promise<string> {
  const result = await node.cli(args);
  assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

// Every snapshot of the primary equals its twin on each secondary, and the trees are the same.
async function compareTwins(cluster: Cluster, secondaries: readonly TestNode[]): Promise<number> {
  const own = await snapshots(cluster.primary);
  for (const secondary of secondaries) {
    assert.deepEqual(await snapshots(secondary), own, `${secondary.options.name}'s snapshot tree is the primary's`);
    for (const snapshot of own) await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", cluster.primary.uri(snapshot.name), secondary.uri(snapshot.name)]);
    await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", cluster.imagePath(cluster.primary, "disk0"), cluster.imagePath(secondary, "disk0")]);
  }
  return own.length;
}

describe("twins built when the exact point was lost", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(cleanup));

  it("a link that missed operations on its bitmap creates, rebuilds and deletes twins after its resync; a new secondary gets them all", async () => {
    const dir = tempDir("twins");
    dirs.push(dir);
    const cluster = await Cluster.start(dir, 2, { logSize: "128MiB" });
    try {
      const { primary } = cluster;
      await primary.createVolume("disk0", "96MiB");
      await cluster.link("secondary1", "async");
      await cluster.waitConsistent();
      await runOk("qemu-io", ["-f", "raw", primary.uri("disk0"), "-c", "write -P 0x11 0 32M"]);
      await cli(primary, ["snapshot", "create", "disk0@base"]);
      await cli(primary, ["snapshot", "create", "disk0@old"]);
      await cli(primary, ["snapshot", "create", "disk0@kept"]);
      await runOk("qemu-io", ["-f", "raw", primary.uri("disk0"), "-c", "write -P 0x22 4M 4M"]);
      await cluster.drain();
      assert.equal((await snapshots(cluster.secondary("secondary1"))).length, 3, "the twins exist before the outage");

      // The outage: the link is paused and the primary writes more than its log holds.
      await cli(primary, ["link", "pause", "g", "secondary1"]);
      await cli(primary, ["snapshot", "delete", "disk0@old"]); // the peer must drop it
      await cli(primary, ["snapshot", "create", "disk0@missed"]); // the peer lacks it
      await cli(primary, ["snapshot", "create", "disk0@w", "--from", "disk0@base", "--writable"]);
      await runOk("qemu-io", ["-f", "raw", primary.uri("disk0@w"), "-c", "write -P 0x33 1M 2M", "-c", "write -z 20M 1M"]); // snapshot writes, missed
      await cli(primary, ["snapshot", "create", "disk0@ww", "--from", "disk0@w"]); // of a snapshot that is itself missing there
      await runOk("qemu-io", ["-f", "raw", primary.uri("disk0"), "-c", "write -P 0x44 40M 8M"]);
      await cli(primary, ["snapshot", "refresh", "disk0@base", "--from-volume"]); // the peer's twin is stale
      await runOk("fio", ["--name=overflow", "--ioengine=nbd", `--uri=${primary.uri("disk0")}`, "--rw=write", "--bs=1m", "--iodepth=4", "--offset=48M", "--size=48M", "--io_size=288M", "--buffer_pattern=0x55"], { timeoutMs: 240_000 });
      const [paused] = await cluster.links();
      assert.ok(paused!.bitmap !== null, "the link folded into its bitmap");

      await cli(primary, ["link", "resume", "g", "secondary1"]);
      await cluster.waitConsistent(120_000);
      await cluster.drain();
      const [link] = (await cluster.links()) as unknown as { lastTwinBuild: { built: number; kept: number; peerDeletes: number; regionBytes: number; bytesSent: number } | null; stats: { operationsMissed: number } }[];
      console.log(`# twin build after the outage: ${JSON.stringify(link!.lastTwinBuild)}; operations missed: ${link!.stats.operationsMissed}`);
      assert.ok(link!.stats.operationsMissed >= 5, "the link missed the operations and the snapshot writes");
      assert.ok(link!.lastTwinBuild !== null, "the resync built the twins");
      assert.equal(link!.lastTwinBuild!.peerDeletes, 1, "old went");
      assert.ok(link!.lastTwinBuild!.kept >= 1, "kept was kept, not shipped again");
      assert.ok(link!.lastTwinBuild!.built >= 4, "missed, w, ww and the refreshed base were built");
      // The twins differ from their bases by ~12 MiB of data (the rest of the differing regions
      // reads as zero there and costs a header): far less than the twins' content.
      assert.ok(link!.lastTwinBuild!.bytesSent < 24 * 2 ** 20, "only the regions where the twins differ from their bases were shipped");
      assert.match(await cli(primary, ["link", "list"]), /g\/secondary1: twins built at LSN \d+: \d+ built, \d+ kept, 1 deleted there; /, "link list reports the build");
      const compared = await compareTwins(cluster, [cluster.secondary("secondary1")]);
      assert.equal(compared, 5);

      // Operations naming the built twins go on in lockstep.
      await cli(primary, ["snapshot", "create", "disk0@after", "--from", "disk0@ww"]);
      await runOk("qemu-io", ["-f", "raw", primary.uri("disk0@w"), "-c", "write -P 0x66 0 1M"]);
      await cluster.drain();

      // A new secondary: the initial sync builds every twin.
      await cluster.link("secondary2", "async");
      await cluster.waitConsistent(120_000);
      await cluster.drain();
      assert.equal(await compareTwins(cluster, cluster.secondaries), 6);
      const verified = await cluster.verify();
      assert.equal(verified.consistent, true, JSON.stringify(verified));
      for (const peer of verified.groups[0]!.links) assert.equal(peer.differingBytes, 0, `${peer.peer}: twins and volumes hash equal`);
    } finally {
      await cluster.stop();
    }
  });
});
