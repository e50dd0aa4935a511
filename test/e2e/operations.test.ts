// Operations in lockstep, end to end: `lockstep demo --secondaries 1` in each mode, fio
// writing to both volumes throughout, while the primary takes a snapshot, a writable snapshot
// of it (written to through NBD), a snapshot of that, a group snapshot of both volumes, refreshes one, grows a volume,
// restores the volume from a snapshot (no data crosses the link: the secondary restores from
// its own twin) and deletes one. After `drain`, every snapshot export
// on the primary and its twin on the secondary are identical (`qemu-img compare`), so are the
// volumes, and each operation's record was a few hundred bytes on the link whatever the
// volume's size (the bytes are printed).

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { start } from "../child-process.js";
import { cleanup, lockstep, run, runOk, tempDir } from "./harness.js";
import { startDemo, stopDemo } from "./demo-process.js";

interface Cost {
  lsn: string;
  pauseMs: number;
  recordBytes: number;
  links: { peer: string; bytes: number; inBand: boolean }[];
}

function exportUri(socket: string, name: string): string {
  return `nbd+unix:///${name}?socket=${socket}`;
}

describe("operations travel in the replication stream (demo --secondaries 1)", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(cleanup));

  for (const mode of ["sync", "async", "periodic"] as const) {
    it(`${mode}: every snapshot twin and every volume equal after drain, a few hundred bytes per operation`, async () => {
      const dir = tempDir(`ops-${mode}`);
      dirs.push(dir);
      const { child, ready } = await startDemo(dir, ["--size", "64MiB", "--volumes", "2", "--secondaries", "1", "--mode", mode, "--interval", "300ms"]);
      const primary = ready.nodes.primary!;
      const secondary = ready.nodes.secondary1!;
      const primarySocket = primary.nbd.split("socket=")[1]!;
      const secondarySocket = secondary.nbd.split("socket=")[1]!;
      const writers = ["disk0", "disk1"].map((volume) =>
        start("fio", ["--name=w", "--ioengine=nbd", `--uri=${exportUri(primarySocket, volume)}`, "--rw=randwrite", "--bs=4k", "--iodepth=8", "--size=64m", "--time_based", "--runtime=60", "--rate_iops=2000"]));
      const costs: { operation: string; cost: Cost }[] = [];
      const operate = async (label: string, args: readonly string[], pick: (json: Record<string, unknown>) => Cost = (json) => json as unknown as Cost) => {
        const result = await lockstep(["--node", primary.node, "--json", ...args]);
        assert.equal(result.code, 0, `${label}: ${result.stderr}`);
        costs.push({ operation: label, cost: pick(JSON.parse(result.stdout)) });
        await new Promise((resolve) => setTimeout(resolve, 300)); // writes go on between operations
      };
      try {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        const snapshotCost = (json: Record<string, unknown>) => json.snapshot as Cost;
        await operate("snapshot create disk0@s1", ["snapshot", "create", "disk0@s1"], snapshotCost);
        await operate("snapshot create disk0@w1 --from disk0@s1 --writable", ["snapshot", "create", "disk0@w1", "--from", "disk0@s1", "--writable"], snapshotCost);
        // writes to the writable snapshot travel as records too, to its twin
        await runOk("fio", ["--name=w1", "--ioengine=nbd", `--uri=${exportUri(primarySocket, "disk0@w1")}`, "--rw=randwrite", "--bs=16k", "--iodepth=4", "--size=64m", "--io_size=4m", "--verify=crc32c"]);
        await runOk("qemu-io", ["-f", "raw", exportUri(primarySocket, "disk0@w1"), "-c", "write -z 8M 1M", "-c", "discard 12M 512k"]);
        await operate("snapshot create disk0@s2 --from disk0@w1", ["snapshot", "create", "disk0@s2", "--from", "disk0@w1"], snapshotCost);
        await runOk("qemu-io", ["-f", "raw", exportUri(primarySocket, "disk0@w1"), "-c", "write -P 0x5c 0 2M"]); // after s2: s2 keeps what it had
        await operate("snapshot create --group demo --name g1", ["snapshot", "create", "--group", "demo", "--name", "g1"]);
        await operate("snapshot refresh disk0@s1", ["snapshot", "refresh", "disk0@s1"], snapshotCost);
        const grown = await lockstep(["--node", primary.node, "volume", "resize", "disk1", "80MiB"]);
        assert.equal(grown.code, 0, grown.stderr);
        await operate("snapshot restore disk0@s2", ["snapshot", "restore", "disk0@s2"]);
        await operate("snapshot sync disk0@s1 disk0@w1", ["snapshot", "sync", "disk0@s1", "disk0@w1"]);
        await operate("snapshot create disk0@after", ["snapshot", "create", "disk0@after"], snapshotCost);
        await operate("snapshot delete disk1@g1", ["snapshot", "delete", "disk1@g1"]);
        for (const writer of writers) writer.child.kill("SIGTERM");
        await Promise.all(writers.map((writer) => writer.finished));
        const drained = await lockstep(["--node", primary.node, "drain", "--timeout", "120s"]);
        assert.equal(drained.code, 0, drained.stderr);

        // An async or periodic link that fell onto its bitmap under load (the machine is shared)
        // carries no record for the operations meanwhile, says so, and rebuilds the twins at the
        // end of its resync: the comparisons below still hold. Most operations travel in band.
        let inBand = 0;
        for (const { operation, cost } of costs) {
          console.log(`${mode}: ${operation}: record ${cost.recordBytes} bytes at LSN ${cost.lsn}, writes paused ${cost.pauseMs} ms, sent ${cost.links.map((link) => (link.inBand ? `${link.bytes} bytes to ${link.peer}` : `nothing to ${link.peer} (on its bitmap)`)).join(", ")}`);
          assert.ok(cost.recordBytes < 1024, `${operation}: one small record`);
          const [link] = cost.links;
          assert.equal(cost.links.length, 1);
          assert.equal(link!.peer, "secondary1");
          if (link!.inBand) {
            assert.equal(link!.bytes, cost.recordBytes, `${operation}: the record is all that crosses the link`);
            inBand += 1;
          } else {
            assert.notEqual(mode, "sync", `${operation}: a sync link never folds while streaming`);
            assert.equal(link!.bytes, 0);
          }
        }
        assert.ok(inBand * 2 > costs.length, `${inBand} of ${costs.length} operations in band`);

        const listed = (node: string) => lockstep(["--node", node, "--json", "snapshot", "list"]).then((result) => (JSON.parse(result.stdout) as { snapshots: { name: string; parent: string; writable: boolean; size: number }[] }).snapshots);
        const onPrimary = await listed(primary.node);
        const onSecondary = await listed(secondary.node);
        assert.deepEqual(onSecondary.map((entry) => [entry.name, entry.parent, entry.writable, entry.size]), onPrimary.map((entry) => [entry.name, entry.parent, entry.writable, entry.size]));
        assert.deepEqual(onPrimary.map((entry) => entry.name).sort(), ["disk0@after", "disk0@g1", "disk0@s1", "disk0@s2", "disk0@w1"]);
        for (const { name } of onPrimary) {
          await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", exportUri(primarySocket, name), exportUri(secondarySocket, name)]);
        }
        for (const volume of ["disk0", "disk1"]) {
          await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", primary.volumes[volume]!, secondary.volumes[volume]!]);
        }
        // verify compares every twin too, by hashes
        const verify = async () => {
          const result = await lockstep(["--node", primary.node, "--json", "verify"]);
          return JSON.parse(result.stdout) as { consistent: boolean; groups: { links: { bytesCompared: number; differing: { volume: string }[] }[] }[] };
        };
        const clean = await verify();
        assert.equal(clean.consistent, true);
        const snapshotBytes = onPrimary.reduce((total, entry) => total + entry.size, 0);
        assert.equal(clean.groups[0]!.links[0]!.bytesCompared, 64 * 2 ** 20 + 80 * 2 ** 20 + snapshotBytes, "both volumes and every snapshot were compared");
        if (mode === "async") {
          // damage every chunk of the secondary's store for disk0: its twins now differ, the volume not
          const { openSync, fstatSync, writeSync, closeSync } = await import("node:fs");
          const fd = openSync(`${secondary.node}/snapshots/1/store`, "r+");
          const size = fstatSync(fd).size;
          for (let at = 0; at < size; at += 4096) writeSync(fd, Buffer.alloc(512, 0xdd), 0, 512, at);
          closeSync(fd);
          const damaged = await verify();
          assert.equal(damaged.consistent, false);
          const images = new Set(damaged.groups[0]!.links[0]!.differing.map((entry) => entry.volume));
          assert.ok([...images].some((image) => image.startsWith("disk0@")), `verify names the damaged twins: ${[...images]}`);
          assert.ok(!images.has("disk0") && !images.has("disk1"), "and not the volumes");
        }
        const refused = await run("qemu-io", ["-f", "raw", exportUri(secondarySocket, "disk0@w1"), "-c", "write -P 0x11 0 4k"]);
        assert.match(refused.stdout + refused.stderr, /Permission denied|Operation not permitted|read-only/i, "a twin on the secondary is read-only");
        const status = JSON.parse((await lockstep(["--node", secondary.node, "--json", "status"])).stdout) as { groups: { stats: { appliedOperations: number; appliedSnapshotChanges: number } }[] };
        assert.equal(status.groups[0]!.stats.appliedOperations, costs.length + 1, "every snapshot operation, and the resize of disk1, came as a record");
        assert.ok(status.groups[0]!.stats.appliedSnapshotChanges >= 3, "the writes to disk0@w1 reached its twin as records");
      } finally {
        for (const writer of writers) writer.child.kill("SIGKILL");
        await stopDemo(child);
      }
    });
  }
});
