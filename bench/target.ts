// What the bench measures: a "target" serves the image and fio drives it.
// The list of targets is in target-registry.ts.
//
// Most targets run the fio rows (fio-job.ts). A replicated target also waits for its
// secondary after each row (afterRow), and a target may have rows of its own that are not fio
// jobs (link-sync.ts: a link's initial sync and resync; target-snapshots.ts: writes with 0 to
// 32 snapshots, snapshot operations; target-operations.ts: operations in band against
// re-replicating their data), which it measures itself.

import type { FioTarget } from "./fio-job.js";
import type { SyncRowResult } from "./link-sync.js";
import type { LinkCatchUp } from "./node-pair.js";
import type { OperationsRowResult } from "./operations-in-band.js";
import type { SnapshotRowResult } from "./target-snapshots.js";

export interface TargetContext {
  readonly repoRoot: string;
  readonly workDir: string; // this target's own directory inside the run's temp dir
  readonly imagePath: string;
  readonly imageSizeBytes: number;
  readonly rawEngine: string;
  readonly uvIoUring: "default" | "on" | "off";
  readonly cacheReset: "auto" | "fadvise" | "drop";
  readonly fincoreAvailable: boolean;
  readonly runtimeSeconds: number; // of every fio row (a target measuring fio jobs of its own uses it too)
  readonly rampSeconds: number;
}

export interface RunningTarget {
  readonly fio: FioTarget;
  readonly serverPid: number | null; // null: no server (fio on the file itself)
  readonly command: string; // as documented in the results
  readonly notes?: readonly string[]; // what setting it up showed (e.g. how long an initial sync took)
  /** Other processes of the target whose CPU is measured beside the server's (a secondary). */
  peerPids?(): number[];
  /** Files besides the image whose page cache is dropped before every job. */
  stateFiles(): string[];
  /** Replicated targets: after each fio job, how far behind the secondary was and how long it took to catch up. */
  afterRow?(): Promise<LinkCatchUp>;
  /** Targets with rows of their own (TargetDefinition.ownRows): measures one. */
  ownRowMeasure?(row: string): Promise<SyncRowResult>;
  /** The same for the snapshot rows (target-snapshots.ts). */
  snapshotRowMeasure?(row: string): Promise<SnapshotRowResult>;
  /** The same for the operations row (target-operations.ts). */
  operationRowMeasure?(row: string): Promise<OperationsRowResult>;
  stop(): Promise<void>;
}

export interface TargetDefinition {
  readonly name: string;
  readonly description: string;
  readonly tools: readonly string[]; // executables it needs on PATH
  readonly fioRows?: readonly string[]; // the fio rows it runs when selected; default: every one
  readonly ownRows?: readonly string[]; // rows it measures itself (RunningTarget.ownRowMeasure)
  readonly memoryCheck?: boolean; // default true (when it has a server)
  readonly extraDiskBytes?: (imageSizeBytes: number) => number; // beyond the shared image and one log
  start(context: TargetContext): Promise<RunningTarget>;
}

/** A target that cannot run here (not built, missing tool): reported, not retried. */
export class TargetUnavailableError extends Error {}
