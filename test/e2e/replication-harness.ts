// End-to-end replication harness: a primary TestNode and secondaries, each its own `lockstep
// serve` process, linked the way an operator links them (`link add` on the primary with its
// token, `link accept` on the secondary with its own), optionally through a FaultProxy per link.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { FaultProxy } from "../tools/fault-proxy.js";
import { type NodeOptions, runOk, TestNode } from "./harness.js";

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

// The replica's consistency, straight from its admin API (faster than a CLI process per sample).
export async function replicaState(node: TestNode): Promise<{ consistent: boolean; resyncs: number }> {
  const token = readFileSync(join(node.dataDir, "api.token"), "utf8").trim();
  const response = await fetch(`${node.api!.url}/v1/status`, { headers: { authorization: `Bearer ${token}` } });
  const status = (await response.json()) as { groups: { consistent: boolean; stats: { resyncs: number } }[] };
  return { consistent: status.groups[0]!.consistent, resyncs: status.groups[0]!.stats.resyncs };
}

export interface LinkView {
  peer: string;
  state: string;
  consistent: boolean;
  mode: string;
  appliedLsn: string;
  headLsn: string;
  lastError: string | null;
  bitmap: { coveredLsn: string; dirtyBytes: number } | null;
  stats: { regionBytesSent: number; recordBytesSent: number; overflows: number; resyncsCompleted: number; connects: number };
}

export class Cluster {
  readonly primary: TestNode;
  readonly secondaries: TestNode[] = [];
  readonly proxies = new Map<string, FaultProxy>();
  private readonly ports = new Map<string, number>();

  constructor(
    readonly dir: string,
    primaryOptions: NodeOptions = {},
  ) {
    mkdirSync(join(dir, "primary"), { recursive: true });
    this.primary = new TestNode(join(dir, "primary"), { logLevel: "info", ...primaryOptions, name: "primary" });
  }

  static async start(dir: string, secondaries: number, primaryOptions: NodeOptions = {}, secondaryOptions: NodeOptions = {}): Promise<Cluster> {
    const cluster = new Cluster(dir, primaryOptions);
    for (let index = 1; index <= secondaries; index++) {
      const name = `secondary${index}`;
      const port = await freePort();
      cluster.ports.set(name, port);
      mkdirSync(join(dir, name), { recursive: true });
      cluster.secondaries.push(new TestNode(join(dir, name), { logLevel: "info", ...secondaryOptions, name, role: "secondary", replicationPort: port }));
    }
    await Promise.all([cluster.primary, ...cluster.secondaries].map((node) => node.start()));
    return cluster;
  }

  replicationPort(name: string): number {
    return this.ports.get(name)!;
  }

  secondary(name: string): TestNode {
    const node = this.secondaries.find((candidate) => candidate.options.name === name);
    assert.ok(node, `no secondary ${name}`);
    return node;
  }

  // link add on the primary, link accept on the secondary; through a fault proxy if asked.
  async link(name: string, mode: "sync" | "async" | "periodic", options: { proxy?: boolean; seed?: number; interval?: string; overflow?: "bitmap" | "stall" } = {}): Promise<void> {
    let port = this.ports.get(name)!;
    if (options.proxy) {
      const proxy = await FaultProxy.start({ targetHost: "127.0.0.1", targetPort: port, seed: options.seed ?? 1 });
      this.proxies.set(name, proxy);
      port = proxy.port;
    }
    const credential = join(this.dir, `${name}.link`);
    const extra = [...(options.interval ? ["--interval", options.interval] : []), ...(options.overflow ? ["--overflow", options.overflow] : [])];
    const added = await this.primary.cli(["link", "add", "g", name, `127.0.0.1:${port}`, "--mode", mode, "--credential-out", credential, ...extra]);
    assert.equal(added.code, 0, added.stderr);
    const accepted = await this.secondary(name).cli(["link", "accept", "--file", credential]);
    assert.equal(accepted.code, 0, accepted.stderr);
  }

  async links(): Promise<LinkView[]> {
    const result = await this.primary.cli(["--json", "link", "list"]);
    assert.equal(result.code, 0, result.stderr);
    return (JSON.parse(result.stdout) as { links: LinkView[] }).links;
  }

  // Waits until every link streams with a consistent peer.
  async waitConsistent(msMax = 60_000): Promise<void> {
    const deadline = Date.now() + msMax;
    for (;;) {
      const links = await this.links();
      if (links.every((link) => link.consistent && link.state === "streaming")) return;
      if (Date.now() > deadline) {
        const tails = this.secondaries.map((node) => `--- ${node.options.name}\n${node.logTail()}`).join("\n");
        throw new Error(`links not consistent in ${msMax} ms: ${JSON.stringify(links)}\n--- primary\n${this.primary.logTail()}\n${tails}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async drain(timeout = "120s"): Promise<void> {
    const result = await this.primary.cli(["drain", "--timeout", timeout]);
    assert.equal(result.code, 0, `drain: ${result.stderr}\n${this.primary.logTail()}`);
  }

  // qemu-img compare of the primary's image and every secondary's.
  async compareImages(volume: string): Promise<void> {
    const primaryPath = join(this.primary.dataDir, "volumes", `${volume}.img`);
    for (const secondary of this.secondaries) {
      await runOk("qemu-img", ["compare", "-f", "raw", "-F", "raw", primaryPath, join(secondary.dataDir, "volumes", `${volume}.img`)]);
    }
  }

  async verify(): Promise<{ consistent: boolean; groups: { links: { peer: string; differingBytes: number; bytesCompared: number }[] }[] }> {
    const result = await this.primary.cli(["--json", "verify"]);
    return JSON.parse(result.stdout) as Awaited<ReturnType<Cluster["verify"]>>;
  }

  imagePath(node: TestNode, volume: string): string {
    return join(node.dataDir, "volumes", `${volume}.img`);
  }

  async stop(): Promise<void> {
    for (const proxy of this.proxies.values()) await proxy.close();
    await Promise.all([this.primary, ...this.secondaries].map((node) => node.stop()));
  }
}
