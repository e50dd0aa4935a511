// `lockstep demo`: a local cluster on loopback, each node its own `lockstep serve` process
// with its own directory under DIR. Its first stdout line is the ready JSON (DESIGN.md §7).
// Run again on an existing DIR, it restarts the same nodes on their data (crash recovery
// included); it never wipes data. SIGINT/SIGTERM stop every process it started.

import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, openSync, closeSync, promises as fsp, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { stringify as toYaml } from "yaml";
import { OperatingError } from "../errors.js";
import { nodeFiles, type ApiInfo } from "../node/node-files.js";
import { callApi, type NodeTarget } from "./client.js";

export interface DemoOptions {
  readonly dir: string;
  readonly size: number;
  readonly volumes: number;
  readonly durability: "activity-map" | "write-ahead";
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

async function writeConfigOnce(nodeDir: string, name: string, options: DemoOptions): Promise<string> {
  const path = join(nodeDir, "config.yaml");
  if (existsSync(path)) return path; // a restart keeps the node's own config
  const config = {
    node: { name, dataDir: "." },
    api: { listen: "127.0.0.1:0" },
    nbd: { socket: "nbd.sock" },
    groups: [{ name: "demo", logSize: "256MiB", durability: options.durability }],
  };
  await fsp.writeFile(path, toYaml(config), { mode: 0o600 });
  return path;
}

function startNode(name: string, dir: string, configPath: string): DemoNode {
  const logFd = openSync(join(dir, "node.log"), "a", 0o600);
  // stdin is a pipe the node watches (--exit-with-parent): if this demo dies, so do its nodes.
  const child = spawn(process.execPath, [binPath, "serve", "--config", configPath, "--exit-with-parent"], { stdio: ["pipe", "ignore", logFd], detached: false });
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

export async function demo(options: DemoOptions): Promise<number> {
  const dir = resolve(options.dir);
  const nodeDir = join(dir, "primary");
  if (join(nodeDir, "nbd.sock").length > unixSocketPathMax) {
    throw new OperatingError("USAGE", `--dir ${dir} is too long for a unix socket path (max ${unixSocketPathMax} bytes)`);
  }
  await fsp.mkdir(nodeDir, { recursive: true, mode: 0o700 });
  const configPath = await writeConfigOnce(nodeDir, "primary", options);
  await fsp.rm(nodeFiles.api(nodeDir), { force: true }); // a stale one from a killed run
  const nodes = [startNode("primary", nodeDir, configPath)];
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
    const primary = nodes[0]!;
    primary.info = await waitReady(primary);
    const target: NodeTarget = { url: primary.info.url, token: readFileSync(nodeFiles.token(nodeDir), "utf8").trim() };
    const listing = (await callApi(target, "GET", "/v1/volumes")) as { volumes: { name: string; path: string }[] };
    const paths: Record<string, string> = Object.fromEntries(listing.volumes.map((volume) => [volume.name, volume.path]));
    for (let index = 0; index < options.volumes; index++) {
      const name = `disk${index}`;
      if (paths[name] !== undefined) continue;
      const created = (await callApi(target, "POST", "/v1/volumes", { name, group: "demo", size: options.size })) as { volume: { path: string } };
      paths[name] = created.volume.path;
    }
    const socket = join(nodeDir, "nbd.sock");
    const ready = {
      ready: true,
      dir,
      nodes: {
        primary: {
          role: "primary",
          pid: primary.child.pid,
          node: nodeDir,
          api: primary.info.url,
          socket,
          nbd: `nbd+unix:///disk0?socket=${socket}`,
          volumes: paths,
        },
      },
    };
    process.stdout.write(`${JSON.stringify(ready)}\n`);
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
