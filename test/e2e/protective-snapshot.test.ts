// The protective snapshot (DESIGN.md §6): a secondary that was a consistent image snapshots
// itself before a bitmap resync makes its volumes inconsistent, serves that snapshot to its
// readers until the resync completes, and then removes it. The resync is frozen half way (the
// link's fault proxy stalls) to look at the secondary while it is inconsistent.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { cleanup, runOk, sha256File, tempDir } from "./harness.js";
import { Cluster } from "./replication-harness.js";

interface ReplicaView {
  consistent: boolean;
  resyncing: boolean;
  protectedVolumes: string[];
}

async function replicaStatus(dataDir: string): Promise<ReplicaView> {
  const api = JSON.parse(readFileSync(join(dataDir, "api.json"), "utf8")) as { url: string };
  const token = readFileSync(join(dataDir, "api.token"), "utf8").trim();
  const response = await fetch(`${api.url}/v1/status`, { headers: { authorization: `Bearer ${token}` } });
  const status = (await response.json()) as { groups: ReplicaView[] };
  return status.groups[0]!;
}

describe("the protective snapshot during a resync", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(cleanup));

  it("serves the last consistent image while the resync runs, and goes when it completes", async () => {
    const dir = tempDir("protect");
    dirs.push(dir);
    const cluster = await Cluster.start(dir, 1, { logSize: "128MiB" });
    try {
      const secondary = cluster.secondary("secondary1");
      await cluster.primary.createVolume("disk0", "128MiB");
      await cluster.link("secondary1", "async", { proxy: true });
      await cluster.waitConsistent();
      await runOk("qemu-io", ["-f", "raw", "-c", "write -P 0x31 0 128M", cluster.primary.uri("disk0")]);
      await cluster.drain();
      const consistentImage = await sha256File(await copy(secondary.uri("disk0"), join(dir, "before.img")));

      assert.equal((await cluster.primary.cli(["link", "pause", "g", "secondary1"])).code, 0);
      // more than the 128 MiB log holds: the paused link folds into its bitmap
      await runOk("fio", ["--name=overflow", "--ioengine=nbd", `--uri=${cluster.primary.uri("disk0")}`, "--rw=write", "--bs=1m", "--iodepth=4", "--size=128M", "--io_size=256M", "--buffer_pattern=0x77"], { timeoutMs: 240_000 });
      const [link] = await cluster.links();
      assert.ok(link!.bitmap !== null, "the link is on its bitmap");

      assert.equal((await cluster.primary.cli(["link", "resume", "g", "secondary1"])).code, 0);
      const proxy = cluster.proxies.get("secondary1")!;
      const deadline = Date.now() + 60_000;
      for (;;) {
        const status = await replicaStatus(secondary.dataDir);
        if (status.resyncing) {
          proxy.stall(); // freeze the resync half way
          break;
        }
        assert.ok(Date.now() < deadline, "the resync did not start");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await new Promise((resolve) => setTimeout(resolve, 300)); // what was in flight lands
      const during = await replicaStatus(secondary.dataDir);
      assert.equal(during.consistent, false, "the resync had not completed when it was frozen");
      assert.deepEqual(during.protectedVolumes, ["disk0"]);
      const served = await sha256File(await copy(secondary.uri("disk0"), join(dir, "during.img")));
      assert.equal(served, consistentImage, "readers get the last consistent image, not a half-resynced one");
      const takeover = await secondary.cli(["takeover", "g"]);
      assert.match(takeover.stderr, /^error REPLICA_INCONSISTENT: /m, "and a takeover is still refused");

      proxy.unstall();
      await cluster.waitConsistent(120_000);
      await cluster.drain();
      await cluster.compareImages("disk0");
      const afterwards = await replicaStatus(secondary.dataDir);
      assert.deepEqual([afterwards.consistent, afterwards.protectedVolumes], [true, []]);
      const snapshots = JSON.parse((await secondary.cli(["--json", "snapshot", "list"])).stdout) as { snapshots: unknown[] };
      assert.deepEqual(snapshots.snapshots, [], "the protective snapshot is gone");
    } finally {
      await cluster.stop();
    }
  });
});

async function copy(uri: string, path: string): Promise<string> {
  await runOk("nbdcopy", [uri, path]);
  return path;
}
