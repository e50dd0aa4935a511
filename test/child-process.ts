// Running a child process from a test: output captured, bounded in time, and killed by PID
// when the test process exits, also when a test fails.

import { spawn, type ChildProcess } from "node:child_process";

export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export const children = new Set<ChildProcess>();

function killAll(): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
}
process.on("exit", killAll);

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

// Starts a command (killed after timeoutMs, and when the test process exits), capturing its
// output; `finished` settles when it has exited. For a child a test signals while it runs.
export function start(command: string, args: readonly string[], options: RunOptions = {}): { child: ChildProcess; finished: Promise<RunResult> } {
  const child = spawn(command, args, { stdio: ["pipe", "pipe", "pipe"], env: options.env ?? process.env, cwd: options.cwd });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
  const finished = new Promise<RunResult>((resolve, reject) => {
    child.on("error", (error) => {
      clearTimeout(timer);
      children.delete(child);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
  child.stdin!.on("error", () => undefined); // a child that exits without reading its input
  child.stdin!.end(options.input ?? "");
  return { child, finished };
}

// Runs a command to completion (bounded by timeoutMs), capturing output.
export function run(command: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return start(command, args, options).finished;
}
