// Replication between two network namespaces joined by a veth pair: the primary and the
// secondary see each other only through that link, as two hosts would. The link is cut
// (interface down) and restored while writes go on. Needs root (ip netns), as CI has; it
// fails loudly without it.

import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, run, runOk, TestNode, tempDir } from "./harness.js";

const suffix = String(process.pid % 100_000);
const nsPrimary = `lsa${suffix}`;
const nsSecondary = `lsb${suffix}`;
const subnet = `10.${77 + (process.pid % 100)}.${process.pid % 250}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function ip(...args: string[]): Promise<void> {
  await runOk("ip", args);
}

describe("replication across network namespaces", () => {
  const dir = tempDir("netns");
  const fioDir = tempDir("netns-fio");
  const nodes: TestNode[] = [];

  before(async () => {
    await ip("netns", "add", nsPrimary);
    await ip("netns", "add", nsSecondary);
    await ip("link", "add", `va${suffix}`, "type", "veth", "peer", "name", `vb${suffix}`);
    await ip("link", "set", `va${suffix}`, "netns", nsPrimary);
    await ip("link", "set", `vb${suffix}`, "netns", nsSecondary);
    await ip("-n", nsPrimary, "addr", "add", `${subnet}.1/24`, "dev", `va${suffix}`);
    await ip("-n", nsSecondary, "addr", "add", `${subnet}.2/24`, "dev", `vb${suffix}`);
    for (const [ns, dev] of [[nsPrimary, `va${suffix}`], [nsSecondary, `vb${suffix}`]] as const) {
      await ip("-n", ns, "link", "set", "lo", "up");
      await ip("-n", ns, "link", "set", dev, "up");
    }
  });

  after(async () => {
    for (const node of nodes) await node.stop();
    await run("ip", ["netns", "del", nsPrimary]);
    await run("ip", ["netns", "del", nsSecondary]);
    cleanup(dir);
    cleanup(fioDir);
  });

  it("streams over the veth link, survives the link going down and up, and converges", async () => {
    mkdirSync(join(dir, "a"));
    mkdirSync(join(dir, "b"));
    const primary = new TestNode(join(dir, "a"), { name: "site-a", netns: nsPrimary });
    const secondary = new TestNode(join(dir, "b"), { name: "site-b", netns: nsSecondary, role: "secondary", replicationHost: `${subnet}.2`, replicationPort: 7400 });
    nodes.push(primary, secondary);
    await primary.start();
    await secondary.start();
    await primary.createVolume("disk0", "32MiB");
    const credential = join(dir, "site-b.link");
    const added = await primary.cli(["link", "add", "g", "site-b", `${subnet}.2:7400`, "--mode", "sync", "--credential-out", credential]);
    assert.equal(added.code, 0, added.stderr);
    assert.equal((await secondary.cli(["link", "accept", "--file", credential])).code, 0);
    assert.equal((await primary.cli(["link", "progress", "g", "site-b", "--timeout", "60s"])).code, 0);
    // Unix sockets are not namespaced: clients on this host reach the primary's export.
    await runOk("qemu-io", ["-f", "raw", primary.uri("disk0"), "-c", "write -P 0x41 0 4M"]);
    const writing = run("fio", ["--name=netns", "--ioengine=nbd", `--uri=${primary.uri("disk0")}`, "--rw=randwrite", "--bs=4k", "--iodepth=8", "--size=32M", "--time_based", "--runtime=6"], { cwd: fioDir, timeoutMs: 60_000 });
    await sleep(1500);
    await ip("-n", nsSecondary, "link", "set", `vb${suffix}`, "down");
    await sleep(2500); // writes go on: a sync link that is down does not block them
    await ip("-n", nsSecondary, "link", "set", `vb${suffix}`, "up");
    const fio = await writing;
    assert.equal(fio.code, 0, fio.stderr);
    const drained = await primary.cli(["drain", "--timeout", "90s"]);
    assert.equal(drained.code, 0, `${drained.stderr}\n${primary.logTail()}`);
    await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", join(primary.dataDir, "volumes", "disk0.img"), join(secondary.dataDir, "volumes", "disk0.img")]);
    const verified = await primary.cli(["--json", "verify"]);
    assert.equal(verified.code, 0, verified.stderr);
    const links = JSON.parse((await primary.cli(["--json", "link", "list"])).stdout) as { links: { stats: { connects: number; regionBytesSent: number } }[] };
    assert.ok(links.links[0]!.stats.connects >= 1);
  });
});
