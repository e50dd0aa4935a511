// End-to-end harness: starts real `lockstep serve` processes in temp directories, runs real
// clients (qemu-io, qemu-img, nbdcopy, nbdinfo, nbdsh, fio) against them, and stops every
// process it started by PID, also when a test fails.

import { spawn, type ChildProcess } from "node:child_process";
import { children, run, type RunResult } from "../child-process.js";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { fileURLToPath } from "node:url";
import { serveNodeFlags } from "../../src/cli/node-flags.js";

export const projectRoot = fileURLToPath(new URL("../../../", import.meta.url));
export const lockstepBin = join(projectRoot, "bin", "lockstep.js");
export { run, type RunResult };

// After a file's tests (and its own `after` hooks, which stop its nodes): what still holds the
// process open (a leaked socket, timer or child) is printed, so a leak is visible in the
// output; scripts/test.js then lets the file exit anyway (--test-force-exit). Only under the
// test runner (`node --test` sets NODE_TEST_CONTEXT in the file's process): a program that
// borrows the harness (npm run chaos) would otherwise print an empty TAP report at its end.
if (process.env.NODE_TEST_CONTEXT !== undefined) after(async () => {
  await new Promise((resolve) => setTimeout(resolve, 500));
  // the process's own stdio are handles too (pipes under the test runner): not a leak
  const handles = (process as unknown as { _getActiveHandles(): object[] })._getActiveHandles();
  const open = handles.filter((handle) => handle !== process.stdout && handle !== process.stderr && handle !== process.stdin && !(handle instanceof Object && handle.constructor.name === "Timeout"));
  if (open.length > 0 || children.size > 0) {
    const describe = (handle: object): string => (handle.constructor.name === "Socket" ? `Socket(${(handle as { remoteAddress?: string; _pipeName?: string }).remoteAddress ?? (handle as { _pipeName?: string })._pipeName ?? "?"})` : handle.constructor.name);
    console.error(`# still open after the tests: ${open.map(describe).join(", ") || "no handles"}; children: ${[...children].map((child) => `${child.spawnfile} (${child.pid})`).join(", ") || "none"}`);
  }
});

export async function runOk(command: string, args: readonly string[], options: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited ${result.code ?? result.signal}\nstdout: ${result.stdout.slice(-2000)}\nstderr: ${result.stderr.slice(-2000)}`);
  }
  return result;
}

export function lockstep(args: readonly string[], options: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  return run(process.execPath, [lockstepBin, ...args], options);
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `ls-${prefix}-`));
}

export async function sha256File(path: string, length?: number): Promise<string> {
  const hash = createHash("sha256");
  const stream = createReadStream(path, length === undefined ? {} : { start: 0, end: length - 1 });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

// A file's size and modification time: changes whenever the file is written (cheaper than a
// sha256 when it must be checked often).
export function fileStamp(path: string): string {
  const stat = statSync(path, { bigint: true });
  return `${stat.size}/${stat.mtimeNs}`;
}

// A process's resident memory (Linux /proc), in bytes.
export function residentBytes(pid: number): number {
  const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match === null ? Number.NaN : Number(match[1]) * 1024;
}

export interface NodeOptions {
  readonly durability?: "activity-map" | "write-ahead";
  readonly logSize?: string;
  readonly tcp?: boolean;
  readonly name?: string; // default "test"
  readonly role?: "primary" | "secondary"; // of group g
  readonly replicationPort?: number; // where a secondary listens for its primary
  readonly replicationHost?: string; // default 127.0.0.1
  readonly netns?: string; // run the node (and its CLI calls) in this network namespace
  readonly logLevel?: string; // default warn (LOCKSTEP_TEST_LOG_LEVEL overrides)
  readonly snapshots?: { readonly chunkSize?: string; readonly storeSize?: string };
  readonly protection?: { readonly destructive: "apply" | "delay" | "refuse"; readonly delaySeconds?: number };
  readonly env?: Record<string, string>; // extra environment of every start (e.g. LOCKSTEP_PLANTED_BUG)
}

export interface StartOptions {
  readonly env?: Record<string, string>; // extra environment of this start only (e.g. LOCKSTEP_CRASH_POINT)
}

// One lockstep node in its own directory; start()/kill()/stop() by PID.
export class TestNode {
  readonly dataDir: string;
  readonly socket: string;
  readonly configPath: string;
  child: ChildProcess | null = null;
  api: { url: string; pid: number; nbd: { tcp?: string } } | null = null;

  constructor(
    readonly dir: string,
    readonly options: NodeOptions = {},
  ) {
    this.dataDir = join(dir, "node");
    this.socket = join(dir, "nbd.sock");
    this.configPath = join(dir, "config.yaml");
    writeFileSync(
      this.configPath,
      [
        "node:",
        `  name: ${options.name ?? "test"}`,
        `  dataDir: ${this.dataDir}`,
        "api:",
        "  listen: 127.0.0.1:0",
        "nbd:",
        `  socket: ${this.socket}`,
        ...(options.tcp ? ["  listen: 127.0.0.1:0"] : []),
        ...(options.replicationPort !== undefined ? ["replication:", `  listen: ${options.replicationHost ?? "127.0.0.1"}:${options.replicationPort}`] : []),
        "groups:",
        "  - name: g",
        `    role: ${options.role ?? "primary"}`,
        `    logSize: ${options.logSize ?? "128MiB"}`,
        `    durability: ${options.durability ?? "activity-map"}`,
        ...(options.snapshots === undefined
          ? []
          : ["    snapshots:", ...(options.snapshots.chunkSize ? [`      chunkSize: ${options.snapshots.chunkSize}`] : []), ...(options.snapshots.storeSize ? [`      storeSize: ${options.snapshots.storeSize}`] : [])]),
        ...(options.protection === undefined ? [] : ["    protection:", `      destructive: ${options.protection.destructive}`, `      delaySeconds: ${options.protection.delaySeconds ?? 0}`]),
        "log:",
        `  level: ${process.env.LOCKSTEP_TEST_LOG_LEVEL ?? options.logLevel ?? "warn"}`,
        "",
      ].join("\n"),
    );
  }

  get pid(): number {
    return this.child!.pid!;
  }

  uri(exportName: string): string {
    return `nbd+unix:///${exportName}?socket=${this.socket}`;
  }

  async start(startOptions: StartOptions = {}): Promise<void> {
    rmSync(join(this.dataDir, "api.json"), { force: true });
    const logFd = openSync(join(this.dir, "node.log"), "a");
    const command = [process.execPath, ...serveNodeFlags, lockstepBin, "serve", "--config", this.configPath];
    // `ip netns exec` execs the node in place: the child's PID is the node's.
    const [file, ...args] = this.options.netns === undefined ? command : ["ip", "netns", "exec", this.options.netns, ...command];
    const child = spawn(file!, args, { stdio: ["ignore", "ignore", logFd], env: { ...process.env, ...this.options.env, ...startOptions.env } });
    closeSync(logFd);
    children.add(child);
    child.on("exit", () => children.delete(child));
    this.child = child;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`node exited during start: ${this.logTail()}`);
      const path = join(this.dataDir, "api.json");
      if (existsSync(path)) {
        try {
          const api = JSON.parse(readFileSync(path, "utf8"));
          if (api.pid === child.pid) {
            this.api = api;
            return;
          }
        } catch {
          // being written
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`node not ready in 30 s: ${this.logTail()}`);
  }

  logTail(): string {
    try {
      return readFileSync(join(this.dir, "node.log"), "utf8").slice(-3000);
    } catch {
      return "(no log)";
    }
  }

  cli(args: readonly string[]): Promise<RunResult> {
    if (this.options.netns !== undefined) return run("ip", ["netns", "exec", this.options.netns, process.execPath, lockstepBin, "--node", this.dataDir, ...args]);
    return lockstep(["--node", this.dataDir, ...args]);
  }

  async createVolume(name: string, size: string, extra: readonly string[] = []): Promise<string> {
    const result = await this.cli(["volume", "create", name, "--group", "g", "--size", size, "--json", ...extra]);
    if (result.code !== 0) throw new Error(`volume create failed: ${result.stderr}`);
    return (JSON.parse(result.stdout) as { volume: { path: string } }).volume.path;
  }

  private waitExit(): Promise<void> {
    const child = this.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => child.once("exit", () => resolve()));
  }

  async kill(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) process.kill(this.pid, "SIGKILL");
    await this.waitExit();
  }

  async stop(): Promise<number | null> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null) process.kill(this.pid, "SIGTERM");
    const timer = setTimeout(() => this.child?.kill("SIGKILL"), 20_000);
    await this.waitExit();
    clearTimeout(timer);
    return this.child?.exitCode ?? null;
  }
}

export function cleanup(dir: string): void {
  if (process.env.LOCKSTEP_KEEP_TEST_DIRS === "1") return; // for a post-mortem of a failed run
  rmSync(dir, { recursive: true, force: true });
}
