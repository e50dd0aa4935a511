// Starts prefix-workload.py as a child process a test can signal: SIGSTOP/SIGCONT to take a
// point-in-time sample, SIGTERM to stop it cleanly. Registered with test/child-process.ts so
// it is killed by PID if the test process exits first.

import type { ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type RunResult, start } from "../child-process.js";
import { readProgress, type WorkloadProgress } from "./prefix-checker.js";

// This file runs from dist/test/tools/; the script stays in the source tree.
export const prefixWorkloadScript = fileURLToPath(new URL("../../../test/tools/prefix-workload.py", import.meta.url));
export const pythonWithLibnbd = "/usr/bin/python3"; // Debian's python3-libnbd is importable here only
export const workloadRunMsMax = 10 * 60 * 1000; // killed after this, whatever SECONDS said

export interface PrefixWorkloadOptions {
  uri: string;
  blocks: number;
  seconds: number;
  seed: number;
  progressPath: string;
  queueDepth?: number; // 1
  fuaPercent?: number; // 0: this share of the writes carries FUA
  flushEvery?: number; // 0: never; else a FLUSH after every this many writes, and one at a clean stop
  first?: number; // 1: the first write number (a workload continuing after a crash of its server)
}

export class PrefixWorkload {
  readonly finished: Promise<RunResult>;
  private readonly child: ChildProcess;

  constructor(readonly options: PrefixWorkloadOptions) {
    const args = [prefixWorkloadScript, options.uri, String(options.blocks), String(options.seconds), String(options.seed), options.progressPath, String(options.queueDepth ?? 1)];
    if (options.fuaPercent !== undefined) args.push("--fua-percent", String(options.fuaPercent));
    if (options.flushEvery !== undefined) args.push("--flush-every", String(options.flushEvery));
    if (options.first !== undefined) args.push("--first", String(options.first));
    const started = start(pythonWithLibnbd, args, { timeoutMs: workloadRunMsMax });
    this.child = started.child;
    this.finished = started.finished;
  }

  signal(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  // The last progress the workload saved; undefined before its first save.
  progress(): WorkloadProgress | undefined {
    try {
      return readProgress(this.options.progressPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw error;
    }
  }

  // SIGTERM: the workload drains its writes in flight, saves its final progress and exits 0.
  async stop(): Promise<RunResult> {
    this.signal("SIGCONT"); // a stopped process would hold SIGTERM until continued
    this.signal("SIGTERM");
    return this.finished;
  }
}
