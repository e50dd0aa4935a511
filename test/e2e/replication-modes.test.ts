// Replication end to end, as the user contract shows it: `lockstep demo --secondaries 2` in
// each mode, fio with --verify against the primary, `drain`, then `qemu-img compare` of the
// primary's raw image with each secondary's (and of their NBD exports), and `verify` clean.
// The secondaries' exports are read-only.

import assert from "node:assert/strict";
import { after, describe, it } from "node:test";
import { join } from "node:path";
import { cleanup, lockstep, run, runOk, tempDir } from "./harness.js";
import { startDemo, stopDemo } from "./demo-process.js";
import { protocolVersionMax } from "../../src/replication/handshake.js";

describe("replication in each mode (demo --secondaries 2)", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(cleanup));

  for (const mode of ["sync", "async", "periodic"] as const) {
    it(`${mode}: fio --verify on the primary, drain, every secondary identical`, async () => {
      const dir = tempDir(`repl-${mode}`);
      dirs.push(dir);
      const fioDir = tempDir(`repl-fio-${mode}`);
      dirs.push(fioDir);
      const { child, ready } = await startDemo(dir, ["--size", "64MiB", "--secondaries", "2", "--mode", mode, "--interval", "200ms"]);
      try {
        assert.equal(ready.mode, mode);
        const names = Object.keys(ready.nodes).sort();
        assert.deepEqual(names, ["primary", "secondary1", "secondary2"]);
        for (const name of ["secondary1", "secondary2"]) {
          assert.equal(ready.nodes[name]!.role, "secondary");
          assert.ok(ready.nodes[name]!.volumes.disk0, `${name} lists its replica of disk0`);
        }
        const primary = ready.nodes.primary!;
        // Writes, then reads everything back and checks it (fio's verify phase), on the primary.
        const fio = await runOk("fio", ["--name=replicated", "--ioengine=nbd", `--uri=${primary.nbd}`, "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=16M", "--verify=crc32c", "--verify_fatal=1", "--output-format=json"], { cwd: fioDir, timeoutMs: 240_000 });
        assert.doesNotMatch(fio.stderr, /verify: bad/);
        // Zeroes and trims travel through the log too.
        await runOk("qemu-io", ["-f", "raw", primary.nbd, "-c", "write -z 1M 256k", "-c", "discard 4M 512k", "-c", "write -P 0x5a 60M 1M"]);
        const drained = await lockstep(["--node", primary.node, "drain", "--timeout", "120s"]);
        assert.equal(drained.code, 0, drained.stderr);
        // Both ends speak version 2: the records frames leave the records to their own checksums.
        const linkStatus = JSON.parse((await lockstep(["--node", primary.node, "--json", "status"])).stdout) as { groups: { links: { protocolVersion: number | null }[] }[] };
        assert.deepEqual(linkStatus.groups[0]!.links.map((link) => link.protocolVersion), [protocolVersionMax, protocolVersionMax]);
        for (const name of ["secondary1", "secondary2"]) {
          const secondary = ready.nodes[name]!;
          await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", primary.volumes.disk0!, secondary.volumes.disk0!]);
          await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", primary.nbd, secondary.nbd]);
          const refused = await run("qemu-io", ["-f", "raw", secondary.nbd, "-c", "write -P 0x11 0 4k"]);
          assert.match(refused.stdout + refused.stderr, /Permission denied|Operation not permitted|read-only/i, "a secondary's export refuses writes");
        }
        const verified = await lockstep(["--node", primary.node, "--json", "verify"]);
        assert.equal(verified.code, 0, verified.stderr);
        const report = JSON.parse(verified.stdout) as { consistent: boolean; groups: { links: { peer: string; bytesCompared: number; differingBytes: number }[] }[] };
        assert.equal(report.consistent, true);
        assert.equal(report.groups[0]!.links.length, 2);
        for (const link of report.groups[0]!.links) {
          assert.equal(link.bytesCompared, 64 * 1024 * 1024);
          assert.equal(link.differingBytes, 0);
        }
      } finally {
        await stopDemo(child);
      }
    });
  }

  it("volumes created, resized and deleted on the primary follow on every secondary, in write order", async () => {
    const dir = tempDir("repl-volumes");
    dirs.push(dir);
    const { child, ready } = await startDemo(dir, ["--size", "64MiB", "--secondaries", "2", "--mode", "async", "--interval", "200ms"]);
    try {
      const primary = ready.nodes.primary!;
      const created = await lockstep(["--node", primary.node, "volume", "create", "disk1", "--group", "demo", "--size", "32MiB"]);
      assert.equal(created.code, 0, created.stderr);
      const disk1 = primary.nbd.replace("/disk0?", "/disk1?");
      await runOk("qemu-io", ["-f", "raw", disk1, "-c", "write -P 0x71 0 2M", "-c", "write -P 0x72 30M 2M"]);
      const grown = await lockstep(["--node", primary.node, "volume", "resize", "disk0", "96MiB"]);
      assert.equal(grown.code, 0, grown.stderr);
      await runOk("qemu-io", ["-f", "raw", primary.nbd, "-c", "write -P 0x73 90M 1M"]); // only exists after the grow
      assert.equal((await lockstep(["--node", primary.node, "drain"])).code, 0);
      for (const name of ["secondary1", "secondary2"]) {
        const secondary = ready.nodes[name]!;
        const listing = JSON.parse((await lockstep(["--node", secondary.node, "--json", "volume", "list"])).stdout) as { volumes: { name: string; size: number; path: string }[] };
        const sizes = Object.fromEntries(listing.volumes.map((volume) => [volume.name, volume.size]));
        assert.deepEqual(sizes, { disk0: 96 * 1024 * 1024, disk1: 32 * 1024 * 1024 });
        for (const volume of ["disk0", "disk1"]) {
          await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", join(primary.node, "volumes", `${volume}.img`), listing.volumes.find((entry) => entry.name === volume)!.path]);
        }
        // The attach and the grow came as operation records, at their points of the stream.
        const status = JSON.parse((await lockstep(["--node", secondary.node, "--json", "status"])).stdout) as { groups: { stats: { appliedOperations: number } }[] };
        assert.ok(status.groups[0]!.stats.appliedOperations >= 2, `${name} applied the attach and the resize records`);
        // A secondary's volumes change only through its primary.
        const refused = await lockstep(["--node", secondary.node, "volume", "resize", "disk0", "128MiB"]);
        assert.match(refused.stderr, /^error ROLE_CONFLICT: /m);
      }
      assert.equal((await lockstep(["--node", primary.node, "volume", "delete", "disk1"])).code, 0);
      await runOk("qemu-io", ["-f", "raw", primary.nbd, "-c", "write -P 0x74 0 4k"]);
      assert.equal((await lockstep(["--node", primary.node, "drain"])).code, 0);
      const after = JSON.parse((await lockstep(["--node", ready.nodes.secondary1!.node, "--json", "volume", "list"])).stdout) as { volumes: { name: string }[] };
      assert.deepEqual(after.volumes.map((volume) => volume.name), ["disk0"]);
      assert.equal((await lockstep(["--node", primary.node, "verify"])).code, 0);
    } finally {
      await stopDemo(child);
    }
  });

  it("verify finds a region changed behind the replica's back, and says how much a repair sends", async () => {
    const dir = tempDir("repl-verify");
    dirs.push(dir);
    const { child, ready } = await startDemo(dir, ["--size", "64MiB", "--secondaries", "2", "--mode", "async", "--interval", "200ms"]);
    try {
      const primary = ready.nodes.primary!;
      await runOk("qemu-io", ["-f", "raw", primary.nbd, "-c", "write -P 0x21 0 8M"]);
      assert.equal((await lockstep(["--node", primary.node, "drain"])).code, 0);
      // Damage one byte of secondary2's image directly (as a disk fault would).
      const { openSync, writeSync, closeSync } = await import("node:fs");
      const fd = openSync(ready.nodes.secondary2!.volumes.disk0!, "r+");
      writeSync(fd, Buffer.from([0x99]), 0, 1, 3 * 1024 * 1024 + 17);
      closeSync(fd);
      const verified = await lockstep(["--node", primary.node, "--json", "verify"]);
      assert.equal(verified.code, 1, "verify exits non-zero when replicas differ");
      assert.match(verified.stderr, /^error VERIFY_DIFFERS: /m);
      const report = JSON.parse(verified.stdout) as { consistent: boolean; groups: { links: { peer: string; differingBytes: number; differing: { volume: string; offset: number; length: number }[] }[] }[] };
      assert.equal(report.consistent, false);
      const links = Object.fromEntries(report.groups[0]!.links.map((link) => [link.peer, link]));
      assert.equal(links.secondary1!.differingBytes, 0);
      assert.equal(links.secondary2!.differingBytes, 1024 * 1024, "one 1 MiB region differs");
      assert.deepEqual(links.secondary2!.differing, [{ volume: "disk0", offset: 3 * 1024 * 1024, length: 1024 * 1024 }]);
    } finally {
      await stopDemo(child);
    }
  });
});
