// What the snapshot rows share (target-snapshots.ts): the node, its counters read from the
// admin API, timed operations through the API and through the CLI, fio writes that prepare a
// row, and the page cache reset before anything timed.
//
// Counters come from one `GET /v1/status` (what `lockstep status --json` prints): the group's
// stats.writeBytes (every byte written to its volumes, as the node counted it), stalls (writes
// that waited for room in the log) and checkpoints, and the
// volume's `snapshots` (null until its first snapshot): usedBytes, chunkSize and
// stats.preservedChunks (chunks copied into the store before the volume overwrote them).
//
// An operation timed "via API" is the wall clock of its one HTTP request from this process;
// "via CLI" is the wall clock of a `lockstep --node DIR … --json` process: Node's start
// (about half a second here) plus the same request.

import { join } from "node:path";
import type { LockstepNode } from "./lockstep-node.js";
import { fioRun, type MeasureContext } from "./measurement.js";
import { pageCacheReset } from "./page-cache.js";
import type { RunningTarget, TargetContext } from "./target.js";

const operationTimeoutMs = 600_000;
const fioTimeoutMs = 900_000;

/** One volume's counters at one moment. */
export interface SnapshotCounters {
  readonly groupWriteBytes: number;
  readonly groupStalls: number; // writes that waited for room in the log
  readonly groupCheckpoints: number;
  readonly preservedChunks: number;
  readonly storeUsedBytes: number;
  readonly chunkSize: number | null; // null: no store yet (no snapshot ever taken)
  readonly snapshots: number;
}

interface StatusView {
  readonly groups: ReadonlyArray<{ readonly name: string; readonly stats?: { readonly writeBytes: number; readonly stalls: number; readonly checkpoints: number } }>;
  readonly volumes: ReadonlyArray<{
    readonly name: string;
    readonly snapshots: { readonly chunkSize: number; readonly snapshots: number; readonly usedBytes: number; readonly stats: { readonly preservedChunks: number } } | null;
  }>;
}

/** A random-write fio job that prepares a row (not a measured job). */
export interface FioWrite {
  readonly name: string;
  readonly volume: string;
  readonly blockSize: string; // e.g. "4k"
  readonly spanBytes: number; // offsets in [0, spanBytes)
  readonly bytes: number; // written in all; fio's random map: no block twice
  readonly randomSeed: number; // with --randrepeat=0: fio's default randrepeat=1 ignores --randseed, every job would hit the same blocks
}

export class SnapshotBench {
  constructor(
    readonly targetName: string,
    readonly context: TargetContext,
    readonly node: LockstepNode,
    readonly groupName: string,
    readonly running: RunningTarget, // what rowMeasure needs: the fio target, the server, the files to evict
  ) {}

  progress(message: string): void {
    process.stderr.write(`bench: ${this.targetName} ${message}\n`);
  }

  get measureContext(): MeasureContext {
    const { workDir, imagePath, imageSizeBytes, cacheReset, fincoreAvailable } = this.context;
    return { workDir, imagePath, imageSizeBytes, cacheReset, fincoreAvailable };
  }

  async counters(volume: string): Promise<SnapshotCounters> {
    const status = await this.node.api<StatusView>("GET", "/v1/status");
    const group = status.groups.find((candidate) => candidate.name === this.groupName);
    const entry = status.volumes.find((candidate) => candidate.name === volume);
    if (group?.stats === undefined || entry === undefined) throw new Error(`status has no group ${this.groupName} with volume ${volume}`);
    const store = entry.snapshots;
    return {
      groupWriteBytes: group.stats.writeBytes,
      groupStalls: group.stats.stalls,
      groupCheckpoints: group.stats.checkpoints,
      preservedChunks: store?.stats.preservedChunks ?? 0,
      storeUsedBytes: store?.usedBytes ?? 0,
      chunkSize: store?.chunkSize ?? null,
      snapshots: store?.snapshots ?? 0,
    };
  }

  /** The page cache reset of every job (the bench image, every file of the node: log, maps, images, snapshot stores). */
  cacheReset(): Promise<unknown> {
    return pageCacheReset(this.context.imagePath, this.node.stateFiles(), this.context.cacheReset, this.context.fincoreAvailable);
  }

  /** One admin API request and its wall clock in seconds. */
  async apiTimed<T>(method: "GET" | "POST" | "DELETE", path: string, body?: unknown): Promise<{ value: T; seconds: number }> {
    const startMs = performance.now();
    const value = await this.node.api<T>(method, path, body, operationTimeoutMs);
    return { value, seconds: (performance.now() - startMs) / 1000 };
  }

  /** `lockstep --node DIR ARGS… --json` and its wall clock in seconds. */
  async cliTimed<T>(args: readonly string[]): Promise<{ value: T; seconds: number }> {
    const startMs = performance.now();
    const stdout = await this.node.cli([...args, "--json"], operationTimeoutMs);
    return { value: JSON.parse(stdout) as T, seconds: (performance.now() - startMs) / 1000 };
  }

  /** Random writes through the node's export at QD16; the seconds they took. */
  async fioWrite(job: FioWrite): Promise<number> {
    const outputPath = join(this.context.workDir, `fio-${job.name}.json`);
    const startMs = performance.now();
    await fioRun([
      `--name=${job.name}`, "--ioengine=nbd", `--uri=${this.node.uri(job.volume)}`, "--rw=randwrite", `--bs=${job.blockSize}`, "--iodepth=16",
      `--size=${job.spanBytes}`, `--io_size=${job.bytes}`, "--randrepeat=0", `--randseed=${job.randomSeed}`, "--output-format=json", `--output=${outputPath}`,
    ], outputPath, fioTimeoutMs);
    return (performance.now() - startMs) / 1000;
  }
}
