// What the bench measures: a "target" serves the image and fio drives it.
// The list of targets is in target-registry.ts.

import type { FioTarget } from "./fio-job.js";

export interface TargetContext {
  readonly repoRoot: string;
  readonly workDir: string; // this target's own directory inside the run's temp dir
  readonly imagePath: string;
  readonly imageSizeBytes: number;
  readonly rawEngine: string;
  readonly uvIoUring: "default" | "on" | "off";
}

export interface RunningTarget {
  readonly fio: FioTarget;
  readonly serverPid: number | null; // null: no server (fio on the file itself)
  readonly command: string; // as documented in the results
  /** Files besides the image whose page cache is dropped before every job. */
  stateFiles(): string[];
  stop(): Promise<void>;
}

export interface TargetDefinition {
  readonly name: string;
  readonly description: string;
  readonly tools: readonly string[]; // executables it needs on PATH
  start(context: TargetContext): Promise<RunningTarget>;
}

/** A target that cannot run here (not built, missing tool): reported, not retried. */
export class TargetUnavailableError extends Error {}
