// One `lockstep serve` process as the bench drives it: its config file, the process, its
// admin API (for figures that need timing finer than a CLI start, ~0.5 s of Node here) and
// its CLI (for everything an operator would type).
//
// Shared by the lockstep targets (target-lockstep.ts) and the replicated ones
// (target-replicated.ts, node-pair.ts). The process is ended by PID (process-tree.ts).

import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { childStart, childStop, commandCheck, logTail, sleep, type ChildHandle } from "./process-tree.js";
import { TargetUnavailableError, type TargetContext } from "./target.js";
import { serveNodeFlags } from "../src/cli/node-flags.js";

const apiReadyTimeoutMs = 30_000;
const apiRequestTimeoutMs = 60_000;
const cliTimeoutMsDefault = 120_000;
const pollIntervalMs = 100;
const stateFileCountMax = 1_000;

export type Durability = "activity-map" | "write-ahead";

export interface GroupConfig {
  readonly name: string;
  readonly role: "primary" | "secondary";
  readonly logSize: string; // as the config takes it, e.g. "1GiB"
  readonly durability: Durability;
  readonly snapshots?: { readonly chunkSize: string; readonly storeSize: string }; // default: the node's defaults
}

export interface NodeConfig {
  readonly name: string;
  readonly group: GroupConfig;
  readonly replicationListen: boolean; // listen on 127.0.0.1:0 for links (a secondary)
}

function configText(config: NodeConfig, dataDir: string, socketPath: string): string {
  return [
    "node:",
    `  name: ${config.name}`,
    `  dataDir: ${JSON.stringify(dataDir)}`,
    "api:",
    "  listen: 127.0.0.1:0",
    "nbd:",
    `  socket: ${JSON.stringify(socketPath)}`,
    ...(config.replicationListen ? ["replication:", "  listen: 127.0.0.1:0"] : []),
    "groups:",
    `  - name: ${config.group.name}`,
    ...(config.group.role === "secondary" ? ["    role: secondary"] : []),
    `    logSize: ${config.group.logSize}`,
    `    durability: ${config.group.durability}`,
    ...(config.group.snapshots === undefined ? [] : [
      "    snapshots:", `      chunkSize: ${config.group.snapshots.chunkSize}`, `      storeSize: ${config.group.snapshots.storeSize}`,
    ]),
    "",
  ].join("\n");
}

/** Regular files under dir (the node's log, maps, metadata, its own images), for the page cache reset. */
export function filesUnder(dir: string): string[] {
  const files: string[] = [];
  const pending = [dir];
  while (pending.length > 0 && files.length < stateFileCountMax) {
    const current = pending.pop() as string;
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) pending.push(path);
      else if (entry.isFile() && statSync(path).size > 0) files.push(path);
    }
  }
  return files;
}

async function apiReadyWait(dataDir: string, server: ChildHandle): Promise<string> {
  const apiPath = join(dataDir, "api.json");
  const deadline = Date.now() + apiReadyTimeoutMs;
  while (Date.now() < deadline) {
    if (server.process.exitCode !== null || server.process.signalCode !== null) {
      throw new Error(`lockstep serve exited (${server.process.exitCode ?? server.process.signalCode}) before ready:\n${logTail(server.logPath)}`);
    }
    if (existsSync(apiPath)) {
      try {
        const api = JSON.parse(readFileSync(apiPath, "utf8")) as { url?: unknown };
        if (typeof api.url === "string") return api.url;
      } catch {
        // written but not complete yet
      }
    }
    await sleep(pollIntervalMs);
  }
  throw new Error(`lockstep serve: no ${apiPath} after ${apiReadyTimeoutMs} ms:\n${logTail(server.logPath)}`);
}

export class LockstepNode {
  private constructor(
    readonly name: string,
    readonly dataDir: string,
    readonly socketPath: string,
    private serverValue: ChildHandle,
    private readonly serveArgs: readonly string[],
    private readonly logPath: string,
    private readonly repoRoot: string,
    readonly env: NodeJS.ProcessEnv,
    private apiUrl: string,
    private readonly apiToken: string,
  ) {}

  /** Writes the config under dir, starts `lockstep serve` and waits for its admin API. */
  static async start(context: TargetContext, dir: string, config: NodeConfig): Promise<LockstepNode> {
    const binPath = lockstepBinPath(context.repoRoot);
    const dataDir = join(dir, "node");
    mkdirSync(dataDir, { recursive: true });
    const socketPath = join(dataDir, "nbd.sock");
    const configPath = join(dir, "lockstep.yaml");
    writeFileSync(configPath, configText(config, dataDir, socketPath));
    const env = lockstepEnv(context);
    // LOCKSTEP_BENCH_SERVE_NODE_ARGS: Node flags for the servers only, e.g. "--cpu-prof
    // --cpu-prof-dir=/tmp/prof" (Node refuses --cpu-prof in NODE_OPTIONS).
    const nodeArgs = (process.env.LOCKSTEP_BENCH_SERVE_NODE_ARGS ?? "").split(" ").filter((arg) => arg !== "");
    const serveArgs = [...serveNodeFlags, ...nodeArgs, binPath, "serve", "--config", configPath];
    const logPath = join(dir, "lockstep.log");
    const server = childStart(process.execPath, serveArgs, { cwd: context.repoRoot, env, logPath });
    try {
      const apiUrl = await apiReadyWait(dataDir, server);
      const apiToken = readFileSync(join(dataDir, "api.token"), "utf8").trim();
      return new LockstepNode(config.name, dataDir, socketPath, server, serveArgs, logPath, context.repoRoot, env, apiUrl, apiToken);
    } catch (error) {
      await childStop(server);
      throw error;
    }
  }

  get server(): ChildHandle {
    return this.serverValue;
  }

  get pid(): number {
    return this.serverValue.pid;
  }

  /** Stops the process (SIGTERM: a clean stop, which checkpoints) and starts it again on the same directory. */
  async restart(): Promise<void> {
    await childStop(this.serverValue);
    rmSync(join(this.dataDir, "api.json"), { force: true });
    this.serverValue = childStart(process.execPath, this.serveArgs, { cwd: this.repoRoot, env: this.env, logPath: this.logPath });
    this.apiUrl = await apiReadyWait(this.dataDir, this.serverValue);
  }

  uri(volumeName: string): string {
    return `nbd+unix:///${volumeName}?socket=${this.socketPath}`;
  }

  /** `lockstep --node DIR ARGS…`; its stdout. Throws with stderr unless it exits 0 in time. */
  cli(args: readonly string[], timeoutMs = cliTimeoutMsDefault): Promise<string> {
    const binPath = lockstepBinPath(this.repoRoot);
    return commandCheck(process.execPath, [binPath, "--node", this.dataDir, ...args], { timeoutMs, cwd: this.repoRoot, env: this.env });
  }

  /** One admin API request (what the CLI sends), for polls and timings. */
  async api<T>(method: "GET" | "POST" | "DELETE", path: string, body?: unknown, timeoutMs = apiRequestTimeoutMs): Promise<T> {
    const response = await fetch(`${this.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.apiToken}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${this.name}: ${method} ${path}: HTTP ${response.status} ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }

  stateFiles(): string[] {
    return filesUnder(this.dataDir);
  }

  stop(): Promise<void> {
    return childStop(this.serverValue);
  }
}

export function lockstepBinPath(repoRoot: string): string {
  const binPath = join(repoRoot, "bin", "lockstep.js");
  if (!existsSync(binPath)) throw new TargetUnavailableError(`${binPath} does not exist: the lockstep CLI is not built yet`);
  return binPath;
}

/** UV_USE_IO_URING as --uv-io-uring asks; otherwise as the bench's environment has it. */
export function lockstepEnv(context: TargetContext): NodeJS.ProcessEnv {
  const env = { ...process.env };
  if (context.uvIoUring === "on") env.UV_USE_IO_URING = "1";
  if (context.uvIoUring === "off") env.UV_USE_IO_URING = "0";
  return env;
}

export function uvNote(env: NodeJS.ProcessEnv): string {
  return env.UV_USE_IO_URING === undefined ? "" : `UV_USE_IO_URING=${env.UV_USE_IO_URING} `;
}
