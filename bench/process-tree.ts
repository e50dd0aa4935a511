// Child processes of the benchmark, and what /proc says about them.
//
// Every process the bench starts goes through `childStart` or `commandRun`, is recorded in
// one registry, and is ended by its PID (SIGTERM, then SIGKILL after a bound) — never by
// name. A server may fork helpers of its own, so CPU and RSS are summed over the whole
// process tree under the PID we started, and `childStop` ends those descendants by PID too.

import { spawn, type ChildProcess } from "node:child_process";
import { openSync, closeSync, readdirSync, readFileSync } from "node:fs";

export const clockTicksPerSecond = 100; // USER_HZ; checked against `getconf CLK_TCK` at start
const stopGraceMsMax = 10_000;

const childrenLive = new Map<number, ChildProcess>();

export interface ChildHandle {
  readonly pid: number;
  readonly process: ChildProcess;
  readonly logPath: string;
  readonly exited: Promise<number | null>;
}

/** Starts a long-running child with stdout and stderr sent to logPath. */
export function childStart(
  command: string,
  args: readonly string[],
  options: { logPath: string; cwd?: string; env?: NodeJS.ProcessEnv },
): ChildHandle {
  const logFd = openSync(options.logPath, "a");
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ["ignore", logFd, logFd],
    });
  } finally {
    closeSync(logFd);
  }
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? (signal === null ? null : -1)));
    child.once("error", () => resolve(-1));
  });
  if (child.pid === undefined) throw new Error(`cannot start ${command}: spawn failed`);
  childrenLive.set(child.pid, child);
  void exited.then(() => childrenLive.delete(child.pid as number));
  return { pid: child.pid, process: child, logPath: options.logPath, exited };
}

/** Ends a child and its descendants by PID: SIGTERM, then SIGKILL after a bound. */
export async function childStop(handle: ChildHandle): Promise<void> {
  const descendants = processTreePids(handle.pid).filter((pid) => pid !== handle.pid);
  if (handle.process.exitCode === null && handle.process.signalCode === null) {
    signalSend(handle.pid, "SIGTERM");
    const stopped = await Promise.race([
      handle.exited.then(() => true),
      sleep(stopGraceMsMax).then(() => false),
    ]);
    if (!stopped) {
      signalSend(handle.pid, "SIGKILL");
      await Promise.race([handle.exited, sleep(stopGraceMsMax)]);
    }
  }
  for (const pid of descendants) signalSend(pid, "SIGKILL"); // orphans left by the server
}

/** Last resort on SIGINT/SIGTERM of the bench itself: no awaiting, just kill by PID. */
export function childrenKillAll(): void {
  for (const pid of childrenLive.keys()) {
    for (const descendant of processTreePids(pid)) signalSend(descendant, "SIGKILL");
  }
}

export interface CommandResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/** Runs a command to completion; killed by PID with SIGKILL past timeoutMs. */
export function commandRun(
  command: string,
  args: readonly string[],
  options: { timeoutMs: number; cwd?: string; env?: NodeJS.ProcessEnv; onStart?: (pid: number) => void },
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let timedOut = false;
    child.stdout.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on("data", (chunk: Buffer) => stderr.push(chunk));
    child.once("error", (error) => {
      clearTimeout(timer);
      if (child.pid !== undefined) childrenLive.delete(child.pid);
      reject(new Error(`cannot run ${command}: ${error.message}`));
    });
    if (child.pid !== undefined) {
      childrenLive.set(child.pid, child);
      options.onStart?.(child.pid);
    }
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) signalSend(child.pid, "SIGKILL");
    }, options.timeoutMs);
    child.once("close", (code) => {
      clearTimeout(timer);
      if (child.pid !== undefined) childrenLive.delete(child.pid);
      resolve({
        code,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
        timedOut,
      });
    });
  });
}

/** Runs a command and throws, with its stderr, unless it exits 0 in time. */
export async function commandCheck(
  command: string,
  args: readonly string[],
  options: { timeoutMs: number; cwd?: string; env?: NodeJS.ProcessEnv },
): Promise<string> {
  const result = await commandRun(command, args, options);
  if (result.timedOut) {
    throw new Error(`${command} ${args.join(" ")}: timed out after ${options.timeoutMs} ms`);
  }
  if (result.code !== 0) {
    const detail = (result.stderr || result.stdout).trim().split("\n").slice(-10).join("\n");
    throw new Error(`${command} ${args.join(" ")}: exit ${result.code}\n${detail}`);
  }
  return result.stdout;
}

interface ProcessStat {
  readonly parentPid: number;
  readonly cpuTicks: number; // utime + stime + cutime + cstime
}

function processStatRead(pid: number, path = `/proc/${pid}/stat`): ProcessStat | null {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return null; // exited between listing and reading
  }
  // The command name (field 2) may hold spaces and parentheses: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); field n is fields[n - 3].
  const parentPid = Number(fields[1]);
  const cpuTicks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  return { parentPid, cpuTicks };
}

/** rootPid and all its live descendants. */
export function processTreePids(rootPid: number): number[] {
  if (processStatRead(rootPid) === null) return [];
  const childrenOf = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = processStatRead(Number(entry));
    if (stat === null) continue;
    const siblings = childrenOf.get(stat.parentPid) ?? [];
    siblings.push(Number(entry));
    childrenOf.set(stat.parentPid, siblings);
  }
  const tree: number[] = [];
  const pending = [rootPid];
  while (pending.length > 0) {
    const pid = pending.pop() as number;
    tree.push(pid);
    pending.push(...(childrenOf.get(pid) ?? []));
  }
  return tree;
}

/** CPU seconds (user + system) used so far by the tree, reaped children included. */
export function processTreeCpuSeconds(rootPid: number): number {
  let ticks = 0;
  for (const pid of processTreePids(rootPid)) ticks += processStatRead(pid)?.cpuTicks ?? 0;
  return ticks / clockTicksPerSecond;
}

/**
 * CPU seconds used so far by the process's first thread: a Node.js server's event loop (its
 * worker threads, the thread pool and the garbage collector's helpers are the other threads).
 * Null when the process is gone.
 */
export function mainThreadCpuSeconds(pid: number): number | null {
  const stat = processStatRead(pid, `/proc/${pid}/task/${pid}/stat`);
  return stat === null ? null : stat.cpuTicks / clockTicksPerSecond;
}

/** Resident set size of the tree in bytes (sum of VmRSS). */
export function processTreeRssBytes(rootPid: number): number {
  let bytes = 0;
  for (const pid of processTreePids(rootPid)) {
    try {
      const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (match !== null) bytes += Number(match[1]) * 1024;
    } catch {
      // exited between listing and reading
    }
  }
  return bytes;
}

function signalSend(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The last lines of a server's log, for an error message. */
export function logTail(logPath: string, lines = 15): string {
  try {
    return readFileSync(logPath, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}
