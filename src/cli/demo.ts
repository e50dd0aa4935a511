// `lockstep demo`: a local cluster on loopback, each node its own `lockstep serve` process
// with its own directory under DIR: a primary and --secondaries N secondaries of group `demo`,
// linked in --mode. Its first stdout line is the ready JSON (DESIGN.md §7), printed once every
// secondary is consistent. Run again on an existing DIR, it restarts the same nodes on their
// data (crash recovery included, the same replication ports); it never wipes data.
// SIGINT/SIGTERM stop every process it started.
//
// Links are set up as an operator would: `link add` on the primary with its token writes the
// secondary's credential into the secondary's directory, `link accept` on the secondary with
// the secondary's token installs it.

import { spawn, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { existsSync, openSync, closeSync, promises as fsp, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import { OperatingError } from "../errors.js";
import { nodeFiles, type ApiInfo } from "../node/node-files.js";
import { callApi, type NodeTarget } from "./client.js";
import { serveNodeFlags } from "./node-flags.js";

export interface DemoOptions {
  readonly dir: string;
  readonly size: number;
  readonly volumes: number;
  readonly durability: "activity-map" | "write-ahead";
  readonly secondaries: number;
  readonly mode: "sync" | "async" | "periodic";
  readonly intervalMs: number;
}

const readyMsMax = 60_000;
const unixSocketPathMax = 107;

const binPath = fileURLToPath(new URL("../../../bin/lockstep.js", import.meta.url));

interface DemoNode {
  readonly name: string;
  readonly dir: string;
  readonly child: ChildProcess;
  info: ApiInfo | null;
}

// A free loopback port, chosen once and kept in the node's config (the primary's link names it).
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function writeConfigOnce(nodeDir: string, name: string, role: "primary" | "secondary", options: DemoOptions): Promise<string> {
  const path = join(nodeDir, "config.yaml");
  if (existsSync(path)) return path; // a restart keeps the node's own config
  const config = {
    node: { name, dataDir: "." },
    api: { listen: "127.0.0.1:0" },
    nbd: { socket: "nbd.sock" },
    ...(role === "secondary" ? { replication: { listen: `127.0.0.1:${await freePort()}` } } : {}),
    groups: [{ name: "demo", role, logSize: "256MiB", durability: options.durability }],
  };
  await fsp.writeFile(path, toYaml(config), { mode: 0o600 });
  return path;
}

function replicationPort(configPath: string): number {
  const config = parseYaml(readFileSync(configPath, "utf8")) as { replication?: { listen?: string } };
  const port = Number(/:(\d+)$/.exec(config.replication?.listen ?? "")?.[1]);
  if (!Number.isInteger(port) || port <= 0) throw new OperatingError("CONFIG_INVALID", `${configPath}: no replication.listen port`);
  return port;
}

function startNode(name: string, dir: string, configPath: string): DemoNode {
  const logFd = openSync(join(dir, "node.log"), "a", 0o600);
  // stdin is a pipe the node watches (--exit-with-parent): if this demo dies, so do its nodes.
  const child = spawn(process.execPath, [...serveNodeFlags, binPath, "serve", "--config", configPath, "--exit-with-parent"], { stdio: ["pipe", "ignore", logFd], detached: false });
  closeSync(logFd);
  return { name, dir, child, info: null };
}

async function waitReady(node: DemoNode): Promise<ApiInfo> {
  const deadline = Date.now() + readyMsMax;
  while (Date.now() < deadline) {
    if (node.child.exitCode !== null || node.child.signalCode !== null) {
      throw new OperatingError("INTERNAL", `node ${node.name} exited during start-up (code ${node.child.exitCode ?? node.child.signalCode}); see ${join(node.dir, "node.log")}`);
    }
    try {
      const info = JSON.parse(readFileSync(nodeFiles.api(node.dir), "utf8")) as ApiInfo;
      if (info.pid === node.child.pid) return info;
    } catch {
      // not ready yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new OperatingError("INTERNAL", `node ${node.name} was not ready within ${readyMsMax} ms; see ${join(node.dir, "node.log")}`);
}

function stopAll(nodes: readonly DemoNode[]): Promise<void> {
  return Promise.all(
    nodes.map(
      (node) =>
        new Promise<void>((done) => {
          if (node.child.exitCode !== null || node.child.signalCode !== null) return done();
          const force = setTimeout(() => node.child.kill("SIGKILL"), 15_000);
          node.child.once("exit", () => {
            clearTimeout(force);
            done();
          });
          node.child.kill("SIGTERM");
        }),
    ),
  ).then(() => undefined);
}

function targetOf(node: DemoNode): NodeTarget {
  return { url: node.info!.url, token: readFileSync(nodeFiles.token(node.dir), "utf8").trim() };
}

async function ensureVolumes(primary: DemoNode, options: DemoOptions): Promise<Record<string, string>> {
  const target = targetOf(primary);
  const listing = (await callApi(target, "GET", "/v1/volumes")) as { volumes: { name: string; path: string }[] };
  const paths: Record<string, string> = Object.fromEntries(listing.volumes.map((volume) => [volume.name, volume.path]));
  for (let index = 0; index < options.volumes; index++) {
    const name = `disk${index}`;
    if (paths[name] !== undefined) continue;
    const created = (await callApi(target, "POST", "/v1/volumes", { name, group: "demo", size: options.size })) as { volume: { path: string } };
    paths[name] = created.volume.path;
  }
  return paths;
}

// One step on each side, each with that node's own token.
async function ensureLink(primary: DemoNode, secondary: DemoNode, configPath: string, options: DemoOptions): Promise<void> {
  const { links } = (await callApi(targetOf(primary), "GET", "/v1/links")) as { links: { peer: string }[] };
  if (links.some((link) => link.peer === secondary.name)) return;
  const body = { peer: secondary.name, address: `127.0.0.1:${replicationPort(configPath)}`, mode: options.mode, intervalMs: options.mode === "periodic" ? options.intervalMs : undefined };
  const { credential } = (await callApi(targetOf(primary), "POST", "/v1/groups/demo/links", body)) as { credential: string };
  await fsp.writeFile(join(secondary.dir, "link-credential.json"), credential, { mode: 0o600 });
  await callApi(targetOf(secondary), "POST", "/v1/links/accept", { credential });
}

async function waitConsistent(primary: DemoNode, names: readonly string[]): Promise<void> {
  const deadline = Date.now() + readyMsMax;
  for (;;) {
    const { links } = (await callApi(targetOf(primary), "GET", "/v1/links")) as { links: { peer: string; state: string; consistent: boolean; lastError: string | null }[] };
    const waiting = links.filter((link) => names.includes(link.peer) && !(link.consistent && link.state === "streaming"));
    if (waiting.length === 0) return;
    if (Date.now() > deadline) {
      throw new OperatingError("TIMEOUT", `secondaries not in sync after ${readyMsMax} ms: ${waiting.map((link) => `${link.peer} ${link.state} (${link.lastError ?? "no error"})`).join(", ")}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function nodeView(node: DemoNode, role: string, volumes: Record<string, string>): Record<string, unknown> {
  const socket = join(node.dir, "nbd.sock");
  return { role, pid: node.child.pid, node: node.dir, api: node.info!.url, socket, nbd: `nbd+unix:///disk0?socket=${socket}`, volumes };
}

export async function demo(options: DemoOptions): Promise<number> {
  const dir = resolve(options.dir);
  const names = ["primary", ...Array.from({ length: options.secondaries }, (_, index) => `secondary${index + 1}`)];
  const longest = join(dir, names[names.length - 1]!, "nbd.sock");
  if (longest.length > unixSocketPathMax) {
    throw new OperatingError("USAGE", `--dir ${dir} is too long for a unix socket path (max ${unixSocketPathMax} bytes)`);
  }
  const nodes: DemoNode[] = [];
  const configs = new Map<string, string>();
  for (const [index, name] of names.entries()) {
    const nodeDir = join(dir, name);
    await fsp.mkdir(nodeDir, { recursive: true, mode: 0o700 });
    configs.set(name, await writeConfigOnce(nodeDir, name, index === 0 ? "primary" : "secondary", options));
    await fsp.rm(nodeFiles.api(nodeDir), { force: true }); // a stale one from a killed run
    nodes.push(startNode(name, nodeDir, configs.get(name)!));
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await stopAll(nodes);
    process.exit(0);
  };
  process.on("SIGINT", () => void stop());
  process.on("SIGTERM", () => void stop());
  try {
    for (const node of nodes) node.info = await waitReady(node);
    const [primary, ...secondaries] = nodes as [DemoNode, ...DemoNode[]];
    const paths = await ensureVolumes(primary, options);
    for (const secondary of secondaries) await ensureLink(primary, secondary, configs.get(secondary.name)!, options);
    await waitConsistent(primary, secondaries.map((secondary) => secondary.name));
    const view: Record<string, unknown> = { primary: nodeView(primary, "primary", paths) };
    for (const secondary of secondaries) {
      const listing = (await callApi(targetOf(secondary), "GET", "/v1/volumes")) as { volumes: { name: string; path: string }[] };
      view[secondary.name] = nodeView(secondary, "secondary", Object.fromEntries(listing.volumes.map((volume) => [volume.name, volume.path])));
    }
    process.stdout.write(`${JSON.stringify({ ready: true, dir, mode: options.secondaries > 0 ? options.mode : undefined, nodes: view })}\n`);
  } catch (error) {
    await stopAll(nodes);
    throw error;
  }
  // Runs until a signal, or until a node dies.
  const code = await new Promise<number>((resolveExit) => {
    for (const node of nodes) {
      node.child.once("exit", (exitCode, signal) => {
        if (stopping) return;
        process.stderr.write(`error INTERNAL: node ${node.name} exited (${exitCode ?? signal}); see ${join(node.dir, "node.log")}\n`);
        void stopAll(nodes).then(() => resolveExit(1));
      });
    }
  });
  return code;
}
