// The `snapshot-ops` row: how long create, diff and restore take on a 10 GiB sparse volume
// with 1 GiB written, on the node of the lockstep-snapshots target (a volume of its own).
//
//    1  `volume create VOL --size 10GiB` (sparse), then fio writes 1 GiB into it: 64k random
//       writes at QD16 over the whole 10 GiB, fio's random map (no block twice), so 16,384
//       chunks of 64 KiB scattered over 163,840
//    2  create VOL@s1 (API), create VOL@s1-cli (CLI), delete VOL@s1-cli (API)
//    3  fio writes 256 MiB more, the same way with another seed (about a tenth lands on
//       blocks step 1 wrote, the rest in holes): 4,096 chunks preserved for s1
//    4  diff s1 ↔ VOL (API, then CLI): the regions and bytes found
//    5  restore s1 (API): bytes written; then diff s1 ↔ VOL again
//    6  fio writes 256 MiB more (a third seed), restore s1 (CLI)
//    7  create VOL@s2 (API): a second create, on a store that now holds preserved chunks;
//       diff s1 ↔ s2
//
// A diff reads metadata only: a chunk differs when the two images find it in different
// places. After a restore, s1's chunks are in the store and the volume's restored copies in
// the volume, so the diffs of steps 5 and 7 report them although the content is the same;
// they are timed and shown as they are, not checked.
//
// Every timed operation follows a page cache reset (the node's files: images, log, snapshot
// store and metadata), so none finds the previous one's pages. "API" is the wall clock of the
// HTTP request, "CLI" that of the `lockstep --node DIR snapshot … --json` process (Node's start
// included). The node reports how long writes were paused (create, delete, restore).

import { statSync } from "node:fs";
import { join } from "node:path";
import type { SnapshotBench } from "./snapshot-bench.js";

const gibibyte = 1024 ** 3;
const mebibyte = 1024 ** 2;
export const operationsVolumeBytes = 10 * gibibyte;
const initialWriteBytes = gibibyte;
const changeWriteBytes = 256 * mebibyte;
const writeBlockSize = "64k";
const seeds = { initial: 11, change: 12, changeAgain: 13 } as const;

export interface SnapshotStep {
  readonly step: string;
  readonly via: "API" | "CLI" | "fio";
  readonly seconds: number;
  readonly pauseMs: number | null; // writes paused, as the node reports it
  readonly result: string;
}

export interface SnapshotOperationsResult {
  readonly kind: "operations";
  readonly row: string;
  readonly volumeBytes: number;
  readonly allocatedBytes: number; // of the volume's image after the first 1 GiB
  readonly steps: SnapshotStep[]; // the fixed sequence of the header, about 14
  readonly observations: string[];
}

interface SnapshotView {
  readonly snapshot: { readonly createdLsn: string; readonly pauseMs?: number };
}
interface DiffView {
  readonly regions: readonly unknown[];
  readonly totalBytes: number;
  readonly truncated: boolean;
}
interface DeleteView {
  readonly deleted: readonly string[];
  readonly pauseMs: number;
}
interface RestoreView {
  readonly bytesWritten: number;
  readonly chunks: number;
  readonly pauseMs: number;
}

type Via = "API" | "CLI";
type Request =
  | { readonly via: "API"; readonly method: "GET" | "POST" | "DELETE"; readonly path: string; readonly body?: unknown }
  | { readonly via: "CLI"; readonly args: readonly string[] };

const mib = (bytes: number) => `${(bytes / mebibyte).toFixed(1)} MiB`;
const diffText = (diff: DiffView) => `${diff.regions.length}${diff.truncated ? "+" : ""} region(s), ${mib(diff.totalBytes)} differ`;

class OperationsRun {
  readonly steps: SnapshotStep[] = [];
  readonly observations: string[] = [];

  constructor(private readonly bench: SnapshotBench, private readonly volume: string) {}

  private record(step: SnapshotStep): void {
    this.steps.push(step);
    this.bench.progress(`snapshot-ops: ${step.step} (${step.via}) ${step.seconds.toFixed(3)} s${step.pauseMs === null ? "" : `, writes paused ${step.pauseMs} ms`}: ${step.result}`);
  }

  async write(step: string, bytes: number, randomSeed: number): Promise<void> {
    const seconds = await this.bench.fioWrite({
      name: `ops-${randomSeed}`, volume: this.volume, blockSize: writeBlockSize, spanBytes: operationsVolumeBytes, bytes, randomSeed,
    });
    const counters = await this.bench.counters(this.volume);
    this.record({ step, via: "fio", seconds, pauseMs: null, result: `${(bytes / mebibyte / seconds).toFixed(0)} MiB/s; snapshot store ${mib(counters.storeUsedBytes)} used` });
  }

  /** The page cache reset, then one operation through the API or the CLI; its answer. */
  async operation<T>(step: string, request: Request, describe: (value: T) => { pauseMs: number | null; result: string }): Promise<T> {
    await this.bench.cacheReset();
    const { value, seconds } = request.via === "CLI"
      ? await this.bench.cliTimed<T>(request.args)
      : await this.bench.apiTimed<T>(request.method, request.path, request.body);
    this.record({ step, via: request.via, seconds, ...describe(value) });
    return value;
  }

  create(name: string, via: Via, step: string): Promise<SnapshotView> {
    const image = `${this.volume}@${name}`;
    const request: Request = via === "API" ? { via, method: "POST", path: "/v1/snapshots", body: { image } } : { via, args: ["snapshot", "create", image] };
    return this.operation<SnapshotView>(step, request, (value) => ({ pauseMs: value.snapshot.pauseMs ?? null, result: `at LSN ${value.snapshot.createdLsn}` }));
  }

  diff(a: string, b: string, via: Via, step: string): Promise<DiffView> {
    const request: Request = via === "API"
      ? { via, method: "GET", path: `/v1/snapshots-diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}` }
      : { via, args: ["snapshot", "diff", a, b] };
    return this.operation<DiffView>(step, request, (value) => ({ pauseMs: null, result: diffText(value) }));
  }

  restore(name: string, via: Via, step: string): Promise<RestoreView> {
    const image = `${this.volume}@${name}`;
    const request: Request = via === "API"
      ? { via, method: "POST", path: `/v1/snapshots/${encodeURIComponent(image)}/restore`, body: {} }
      : { via, args: ["snapshot", "restore", image] };
    return this.operation<RestoreView>(step, request, (value) => ({ pauseMs: value.pauseMs, result: `${mib(value.bytesWritten)} written, ${value.chunks} chunk(s)` }));
  }

  delete(name: string, step: string): Promise<DeleteView> {
    const request: Request = { via: "API", method: "DELETE", path: `/v1/snapshots/${encodeURIComponent(`${this.volume}@${name}`)}` };
    return this.operation<DeleteView>(step, request, (value) => ({ pauseMs: value.pauseMs, result: `deleted ${value.deleted.join(", ")}` }));
  }
}

/** Disk space the volume's store file takes (<dataDir>/snapshots/<volume id>/store, node-snapshots.ts). */
async function storeAllocatedBytes(bench: SnapshotBench, volume: string): Promise<number> {
  const { volumes } = await bench.node.api<{ volumes: Array<{ name: string; id: number }> }>("GET", "/v1/volumes");
  const id = volumes.find((candidate) => candidate.name === volume)?.id;
  if (id === undefined) throw new Error(`no volume ${volume}`);
  return statSync(join(bench.node.dataDir, "snapshots", String(id), "store")).blocks * 512;
}

export async function snapshotOperationsMeasure(bench: SnapshotBench, rowName: string, volume: string, groupName: string): Promise<SnapshotOperationsResult> {
  const created = await bench.node.cli(["volume", "create", volume, "--group", groupName, "--size", `${operationsVolumeBytes / gibibyte}GiB`, "--json"]);
  const imagePath = (JSON.parse(created) as { volume: { path: string } }).volume.path;
  const run = new OperationsRun(bench, volume);
  await run.write(`write ${mib(initialWriteBytes)} (${writeBlockSize} random, QD16)`, initialWriteBytes, seeds.initial);
  const allocatedBytes = statSync(imagePath).blocks * 512;
  await run.create("s1", "API", "create s1");
  await run.create("s1-cli", "CLI", "create s1-cli");
  await run.delete("s1-cli", "delete s1-cli");
  await run.write(`write ${mib(changeWriteBytes)} more (${writeBlockSize} random, other seed)`, changeWriteBytes, seeds.change);
  const changed = await run.diff(`${volume}@s1`, volume, "API", "diff s1 ↔ volume");
  await run.diff(`${volume}@s1`, volume, "CLI", "diff s1 ↔ volume");
  const restored = await run.restore("s1", "API", "restore s1");
  if (restored.bytesWritten < changed.totalBytes) run.observations.push(`restore s1 wrote ${mib(restored.bytesWritten)}, less than the ${mib(changed.totalBytes)} the diff found`);
  await run.diff(`${volume}@s1`, volume, "API", "diff s1 ↔ volume after the restore");
  await run.write(`write ${mib(changeWriteBytes)} more (${writeBlockSize} random, a third seed)`, changeWriteBytes, seeds.changeAgain);
  await run.restore("s1", "CLI", "restore s1");
  await run.create("s2", "API", "create s2 (store not empty)");
  await run.diff(`${volume}@s1`, `${volume}@s2`, "API", "diff s1 ↔ s2");
  const store = await bench.counters(volume);
  run.observations.push(`at the end: snapshot store ${mib(store.storeUsedBytes)} used (${store.preservedChunks} chunks preserved in all) for ` +
    `${store.snapshots} snapshot(s); its file has ${mib(await storeAllocatedBytes(bench, volume))} allocated on disk`);
  return { kind: "operations", row: rowName, volumeBytes: operationsVolumeBytes, allocatedBytes, steps: run.steps, observations: run.observations };
}
