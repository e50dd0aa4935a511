// The `lockstep-link` target and its two rows, which are not fio jobs: how fast a link copies
// a volume to its secondary, the first time (initial sync) and after the link overflowed the
// log (resync from the dirty-region bitmap). Both are compared with fio reading the same image
// file sequentially from a cold page cache, the speed a resync that reads the image cannot beat.
//
// Setup, once per target: a sparse image of the bench's image size with its first half
// written from /dev/urandom (allocated: what an initial sync must send; the hole must not be
// sent), the raw read of that half, then a primary and a secondary (node-pair.ts) with a
// 128 MiB log — the smallest allowed, so that a paused link overflows it quickly — and the
// image adopted by `volume create --path`.
//
//   initial-sync  page cache reset, `link add` + `link accept` (async), then polled until the
//                 secondary is consistent. Timed from the moment the primary's link starts
//                 streaming (the reconnect back-off between `add` and `accept` is not the
//                 link's speed; the time from `link add` is reported too).
//   resync        `link pause`, fio writes 300 MiB of 64 KiB random writes (no block twice)
//                 over the first half of the volume through the primary: more than the log
//                 holds, so the paused link folds its records into its bitmap. Page cache
//                 reset, `link resume`, polled until the secondary is consistent again.
//                 When that resync cannot complete (the link keeps dropping), the failure is
//                 recorded and the resync measured again after a restart of the primary
//                 (see resync() and docs/BENCHMARKS.md, "Replication").
//
// Bytes on the wire: the link's stats.regionBytesSent (region payloads + 16 bytes each;
// all-zero pieces as 16) over the allocated or dirty bytes. A row that does not go as
// planned (no overflow, a failed resync) is still measured, and says what happened in
// `observations`.

import { statSync, truncateSync } from "node:fs";
import { join } from "node:path";
import { fioFiguresParse, fioRowArgs, type Row } from "./fio-job.js";
import { uvNote } from "./lockstep-node.js";
import { fioRun } from "./measurement.js";
import { LinkFlappingError, NodePair, peerName, type LinkView } from "./node-pair.js";
import { pageCacheReset } from "./page-cache.js";
import { commandCheck, processTreeCpuSeconds, sleep } from "./process-tree.js";
import type { RunningTarget, TargetContext, TargetDefinition } from "./target.js";
import { groupName, volumeAdopt, volumeName } from "./target-lockstep.js";

export interface SyncRow {
  readonly name: string;
  readonly title: string;
}

export const syncRowsAll: readonly SyncRow[] = [
  { name: "initial-sync", title: "Initial sync of a new link (half of the volume allocated)" },
  { name: "resync", title: "Resync from the bitmap after a paused link overflowed the log" },
];

export interface SyncRowResult {
  readonly row: string;
  readonly method: string; // what was done, in operator's steps
  readonly bytes: number; // allocated bytes (initial sync) or the bitmap's dirty bytes (resync)
  readonly seconds: number; // streaming start (initial sync) or `link resume` (resync) → secondary consistent
  readonly secondsFromCommand: number; // the same, from `link add` (initial sync) or `link resume`
  readonly primaryConsistentSeconds: number; // from the same origin, when the primary said consistent
  readonly bytesPerSecond: number; // bytes / seconds
  readonly rawReadBytesPerSecond: number;
  readonly regionBytesSent: number; // during the row
  readonly recordBytesSent: number; // during the row
  readonly cpuSecondsPrimary: number;
  readonly cpuSecondsSecondary: number;
  readonly nudges: number;
  readonly observations: string[];
}

const mebibyte = 1024 ** 2;
const linkLogSize = "128MiB";
const dirtyWriteBytesMax = 300 * mebibyte;
const imageWriteTimeoutMs = 600_000;
const syncTimeoutMs = 600_000;
const fioTimeoutSlackMs = 120_000;
const pollIntervalMs = 50;

const rawReadRow: Row = { name: "raw-read-1m", title: "sequential read", readWrite: "read", blockSize: "1M", ioDepth: 1, fsyncEvery: 0, headline: "bandwidth" };

/** A sparse image of sizeBytes with its first half written (allocated, random data). */
async function imageHalfWrittenCreate(path: string, sizeBytes: number): Promise<number> {
  await commandCheck("dd", ["if=/dev/urandom", `of=${path}`, "bs=1M", `count=${Math.floor(sizeBytes / 2 / mebibyte)}`, "conv=fsync", "status=none"], {
    timeoutMs: imageWriteTimeoutMs,
  });
  truncateSync(path, sizeBytes);
  return statSync(path).blocks * 512;
}

class LinkSyncBench {
  private linked = false;

  constructor(
    private readonly context: TargetContext,
    private readonly pair: NodePair,
    private readonly imagePath: string,
    private readonly allocatedBytes: number,
    private readonly rawReadBytesPerSecond: number,
  ) {}

  measure(row: string): Promise<SyncRowResult> {
    if (row === "initial-sync") return this.initialSync();
    if (row === "resync") return this.resync();
    throw new Error(`lockstep-link has no row ${row}`);
  }

  private cacheReset(): Promise<unknown> {
    return pageCacheReset(this.imagePath, this.pair.stateFiles(), this.context.cacheReset, this.context.fincoreAvailable);
  }

  private cpuSample(): { primary: number; secondary: number } {
    return { primary: processTreeCpuSeconds(this.pair.primary.pid), secondary: processTreeCpuSeconds(this.pair.secondary.pid) };
  }

  private async streamingWait(timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const link = await this.pair.link();
      if (link.state === "resyncing" || link.state === "streaming") return performance.now();
      if (performance.now() > deadline) throw new Error(`the link does not stream after ${timeoutMs} ms: ${JSON.stringify(link)}`);
      await sleep(pollIntervalMs);
    }
  }

  private async initialSync(): Promise<SyncRowResult> {
    if (this.linked) throw new Error("initial-sync needs a volume without a link: run it before resync");
    await this.cacheReset();
    const cpuBefore = this.cpuSample();
    const addMs = performance.now();
    await this.pair.linkAdd("async");
    this.linked = true;
    const streamingMs = await this.streamingWait(syncTimeoutMs);
    const consistentMs = addMs + (await this.pair.replicaConsistentWait(0, 0n, addMs, syncTimeoutMs));
    const cpuAfter = this.cpuSample();
    const nudgesBefore = this.pair.nudges;
    await this.pair.primaryConsistentWait(syncTimeoutMs);
    const primaryMs = performance.now();
    await this.pair.primary.cli(["link", "progress", groupName, peerName, "--timeout", "1m"]);
    const link = await this.pair.link();
    const seconds = (consistentMs - streamingMs) / 1000;
    const observations = [`link streaming ${((streamingMs - addMs) / 1000).toFixed(2)} s after \`link add\``];
    if (link.stats.resyncsCompleted !== 1) observations.push(`resyncsCompleted ${link.stats.resyncsCompleted}, expected 1`);
    return {
      row: "initial-sync",
      method: "link add, link accept",
      bytes: this.allocatedBytes,
      seconds,
      secondsFromCommand: (consistentMs - addMs) / 1000,
      primaryConsistentSeconds: (primaryMs - addMs) / 1000,
      bytesPerSecond: this.allocatedBytes / seconds,
      rawReadBytesPerSecond: this.rawReadBytesPerSecond,
      regionBytesSent: link.stats.regionBytesSent,
      recordBytesSent: link.stats.recordBytesSent,
      cpuSecondsPrimary: cpuAfter.primary - cpuBefore.primary,
      cpuSecondsSecondary: cpuAfter.secondary - cpuBefore.secondary,
      nudges: this.pair.nudges - nudgesBefore,
      observations,
    };
  }

  /** 64 KiB random writes, each block at most once, over the first half of the volume. */
  private async dirtyWrite(bytes: number, spanBytes: number): Promise<void> {
    const outputPath = join(this.context.workDir, "fio-dirty.json");
    await fioRun([
      "--name=dirty", "--ioengine=nbd", `--uri=${this.pair.primary.uri(volumeName)}`, "--rw=randwrite", "--bs=64k", "--iodepth=8",
      `--size=${spanBytes}`, `--io_size=${bytes}`, "--output-format=json", `--output=${outputPath}`,
    ], outputPath, syncTimeoutMs + fioTimeoutSlackMs);
  }

  private async linkedEnsure(): Promise<void> {
    if (this.linked) return;
    await this.pair.linkAdd("async");
    this.linked = true;
    await this.pair.replicaConsistentWait(0, 0n, performance.now(), syncTimeoutMs);
    await this.pair.primaryConsistentWait(syncTimeoutMs);
  }

  // As the brief of the row says (header); when the link cannot complete that resync (it
  // keeps dropping), the failure is recorded and the resync is measured once more after a
  // restart of the primary, whose clean stop folds every record still in the log into the
  // paused link's bitmap, so that the resync has no records to stream beside it.
  private async resync(): Promise<SyncRowResult> {
    await this.linkedEnsure();
    const observations: string[] = [];
    const spanBytes = Math.floor(this.context.imageSizeBytes / 2 / mebibyte) * mebibyte;
    const writeBytes = Math.min(dirtyWriteBytesMax, spanBytes);
    const overflowsBefore = (await this.pair.link()).stats.overflows;
    await this.pair.primary.cli(["link", "pause", groupName, peerName]);
    await this.dirtyWrite(writeBytes, spanBytes);
    const paused = await this.pair.link();
    observations.push(`after ${writeBytes / mebibyte} MiB of 64k random writes over ${spanBytes / mebibyte} MiB with the link paused: ` +
      `overflows +${paused.stats.overflows - overflowsBefore}, ${bitmapText(paused)}`);
    if (paused.bitmap === null) observations.push("NO OVERFLOW: the link did not switch to its bitmap; the figure is a catch-up from the log");
    try {
      return await this.resyncTimed("pause, write, resume", paused, writeBytes, observations);
    } catch (error) {
      if (!(error instanceof LinkFlappingError)) throw error;
      observations.push(`THE RESYNC AS SPECIFIED FAILED: ${error.message}`);
    }
    await this.pair.primary.cli(["link", "pause", groupName, peerName]);
    await this.pair.primary.restart();
    const restarted = await this.pair.link();
    observations.push(`fallback: link paused again, primary restarted (its clean stop folds the log's records into the bitmap): ${bitmapText(restarted)}`);
    return this.resyncTimed("pause, write, resume failed; pause, restart primary, resume", restarted, writeBytes, observations);
  }

  private async resyncTimed(method: string, paused: LinkView, writeBytes: number, observations: string[]): Promise<SyncRowResult> {
    const dirtyBytes = paused.bitmap?.dirtyBytes ?? 0;
    const replicaBefore = await this.pair.replica();
    await this.cacheReset();
    const cpuBefore = this.cpuSample();
    const nudgesBefore = this.pair.nudges;
    const resumeMs = performance.now();
    await this.pair.linkVerb("resume"); // POST …/resume, what `link resume` sends
    const resyncsBefore = paused.bitmap === null ? -1 : replicaBefore.stats.resyncs;
    const consistentMs = resumeMs + (await this.pair.replicaConsistentWait(resyncsBefore, BigInt(paused.headLsn), resumeMs, syncTimeoutMs));
    const cpuAfter = this.cpuSample();
    const seconds = (consistentMs - resumeMs) / 1000;
    const bytes = paused.bitmap === null ? writeBytes : dirtyBytes;
    try {
      await this.pair.primaryConsistentWait(syncTimeoutMs);
    } catch (error) {
      if (error instanceof LinkFlappingError) {
        observations.push(`${method}: the secondary was consistent ${seconds.toFixed(2)} s after the resume ` +
          `(${(bytes / mebibyte / seconds).toFixed(0)} MiB/s), but the primary never said so and the link then kept dropping`);
      }
      throw error;
    }
    const primaryMs = performance.now();
    await this.pair.primary.cli(["link", "progress", groupName, peerName, "--timeout", "1m"]);
    const link = await this.pair.link();
    // The bitmap's size is read before the resume; records beyond it that a checkpoint folds
    // in later go as regions, so sent / to copy can exceed 1 with nothing sent twice. Against
    // what was written (fio writes no block twice), regions and records together say that.
    const regionBytesSent = link.stats.regionBytesSent - paused.stats.regionBytesSent;
    const recordBytesSent = link.stats.recordBytesSent - paused.stats.recordBytesSent;
    observations.push(`regions + records sent: ${(regionBytesSent / mebibyte).toFixed(1)} + ${(recordBytesSent / mebibyte).toFixed(1)} MiB ` +
      `for the ${writeBytes / mebibyte} MiB written while the link was paused (×${((regionBytesSent + recordBytesSent) / writeBytes).toFixed(3)}, headers included)`);
    return {
      row: "resync",
      method,
      bytes,
      seconds,
      secondsFromCommand: seconds,
      primaryConsistentSeconds: (primaryMs - resumeMs) / 1000,
      bytesPerSecond: bytes / seconds,
      rawReadBytesPerSecond: this.rawReadBytesPerSecond,
      regionBytesSent,
      recordBytesSent,
      cpuSecondsPrimary: cpuAfter.primary - cpuBefore.primary,
      cpuSecondsSecondary: cpuAfter.secondary - cpuBefore.secondary,
      nudges: this.pair.nudges - nudgesBefore,
      observations,
    };
  }
}

function bitmapText(link: LinkView): string {
  if (link.bitmap === null) return `no bitmap, head LSN ${link.headLsn}`;
  const beyond = BigInt(link.headLsn) - BigInt(link.bitmap.coveredLsn);
  return `bitmap ${(link.bitmap.dirtyBytes / mebibyte).toFixed(1)} MiB dirty through LSN ${link.bitmap.coveredLsn}, head LSN ${link.headLsn} ` +
    `(${beyond} record(s) beyond the bitmap, streamed from the log beside the resync)`;
}

/** fio reading the first bytes of the image sequentially (1 MiB, QD1, buffered) after a page cache reset. */
async function rawReadMeasure(context: TargetContext, imagePath: string, bytes: number): Promise<number> {
  await pageCacheReset(imagePath, [], context.cacheReset, context.fincoreAvailable);
  const outputPath = join(context.workDir, "fio-raw-read.json");
  const args = [
    ...fioRowArgs(rawReadRow, { runtimeSeconds: 600, rampSeconds: 0 }, outputPath).filter((arg) => arg !== "--time_based"),
    `--size=${bytes}`, "--ioengine=psync", `--filename=${imagePath}`, "--direct=0", "--invalidate=0",
  ];
  const text = await fioRun(args, outputPath, 600_000 + fioTimeoutSlackMs);
  return fioFiguresParse(text, rawReadRow).bandwidthBytesPerSecond;
}

async function linkSyncStart(context: TargetContext): Promise<RunningTarget> {
  const imagePath = join(context.workDir, "link.img");
  const allocatedBytes = await imageHalfWrittenCreate(imagePath, context.imageSizeBytes);
  const rawReadBytesPerSecond = await rawReadMeasure(context, imagePath, allocatedBytes);
  const pair = await NodePair.start(context, { groupName, logSize: linkLogSize, durability: "activity-map" });
  try {
    await volumeAdopt(pair.primary, imagePath, context.imageSizeBytes);
  } catch (error) {
    await pair.stop();
    throw error;
  }
  const bench = new LinkSyncBench(context, pair, imagePath, allocatedBytes, rawReadBytesPerSecond);
  return {
    fio: { kind: "nbd", uri: pair.primary.uri(volumeName) },
    serverPid: pair.primary.pid,
    command: `${uvNote(pair.primary.env)}node bin/lockstep.js serve --config primary/lockstep.yaml + serve --config secondary/lockstep.yaml ` +
      `(logSize: ${linkLogSize}); link add ${groupName} ${peerName} ${pair.secondaryAddress} --mode async`,
    notes: [
      `image: ${context.imageSizeBytes / mebibyte} MiB, ${(allocatedBytes / mebibyte).toFixed(0)} MiB allocated; ` +
        `raw read of it: fio --rw=read --bs=1M --ioengine=psync, buffered, after a page cache reset: ${(rawReadBytesPerSecond / mebibyte).toFixed(0)} MiB/s`,
    ],
    stateFiles: () => pair.stateFiles(),
    ownRowMeasure: (row) => bench.measure(row),
    stop: () => pair.stop(),
  };
}

export const linkSyncTarget: TargetDefinition = {
  name: "lockstep-link",
  description: "lockstep primary and secondary on loopback, 128 MiB log: initial sync and bitmap resync",
  tools: [],
  fioRows: [],
  ownRows: syncRowsAll.map((row) => row.name),
  memoryCheck: false,
  extraDiskBytes: (imageSizeBytes) => 2 * imageSizeBytes + 256 * mebibyte,
  start: linkSyncStart,
};
