// The `snapshot-writes` row: the bench's 4k random write job (randwrite-4k-qd16, the same job,
// runtime and page cache reset as every target) on one volume with 0, 1, 8 and 32 snapshots,
// each snapshot taken after the previous round of writes:
//
//   round 0   no snapshot
//   s01       `snapshot create VOL@s01` right after round 0        → round 1
//   s02       right after round 1; then, for s03…s08, a short fill  → round 8
//   s09       right after round 8; then, for s10…s32, a short fill  → round 32
//
// A fill is fio writing fillBytes of 4k random writes over the whole volume, each with its own
// random seed, so that every snapshot holds content of its own (about 1,000 chunks of 64 KiB
// preserved per fill) and the store keeps versions from many epochs, while the store stays
// modest: each measured 15 s round preserves up to the whole volume (every chunk it touches,
// once), the 29 fills about 1.8 GiB together.
//
// Per round, from the node (snapshot-bench.ts) over the whole fio job, ramp included: the bytes
// written (the group's stats.writeBytes), the chunks preserved (stats.preservedChunks), and so
// the write amplification of snapshots, preserved bytes / written bytes; and the store's used
// bytes after it; and chunks preserved / chunks the round's writes touched (chunksTouched),
// which is 1.000 when every chunk is copied once after a snapshot, however many older
// snapshots exist. Snapshots are created with the CLI, as an operator would (its --json output
// gives the time writes were paused).

import { createReadStream, rmSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { rowsAll, type Row } from "./fio-job.js";
import { rowMeasure, type RowResult } from "./measurement.js";
import { commandCheck } from "./process-tree.js";
import type { SnapshotBench } from "./snapshot-bench.js";
import { CopyPhaseSampler, type CopyPhase } from "./snapshot-copy-phase.js";

export const snapshotCounts: readonly number[] = [0, 1, 8, 32];
const fillBytes = 4 * 1024 ** 2;
const fillSeedBase = 7_000; // fio --randseed of fill n: fillSeedBase + n
const measuredRowName = "randwrite-4k-qd16";
const measuredBlockBytes = 4096; // the row's --bs
const replayTimeoutMs = 120_000;

/** The snapshots taken since the previous measured round. */
export interface SnapshotCreates {
  readonly count: number;
  readonly cliSecondsMean: number | null; // `lockstep snapshot create` process, wall clock
  readonly cliSecondsMax: number | null;
  readonly pauseMsMax: number | null; // writes paused, as the node reports it
  readonly fills: number;
  readonly fillBytes: number;
  readonly fillPreservedChunks: number;
}

export interface SnapshotWritesRound {
  readonly snapshots: number;
  readonly measured: RowResult; // fio's figures, the server's CPU, the page cache reset
  readonly bytesWritten: number; // the node's count over the whole job, ramp included
  readonly preservedChunks: number; // same window
  readonly chunkSize: number | null; // null: no snapshot yet
  readonly writeAmplification: number | null; // preservedChunks × chunkSize / bytesWritten
  readonly chunksTouched: number | null; // by the round's writes (chunksTouched); null: no snapshot yet
  readonly copyPhase: CopyPhase | null; // null: no snapshot, or the round did not preserve half the volume
  readonly storeUsedBytes: number; // after the round
  readonly logStalls: number; // writes that waited for room in the log, same window
  readonly checkpoints: number; // same window
  readonly createsBefore: SnapshotCreates;
}

export interface SnapshotWritesResult {
  readonly kind: "writes";
  readonly row: string;
  readonly rounds: SnapshotWritesRound[]; // one per snapshotCounts entry
  readonly observations: string[]; // a few lines: what did not go as planned
}

const snapshotName = (volume: string, index: number) => `${volume}@s${String(index).padStart(2, "0")}`;

/** Takes snapshots taken+1 … upTo, a fill before each but the first (which follows a measured round). */
async function snapshotsTake(bench: SnapshotBench, volume: string, taken: number, upTo: number): Promise<SnapshotCreates> {
  let cliSecondsSum = 0;
  let cliSecondsMax: number | null = null;
  let pauseMsMax: number | null = null;
  let fills = 0;
  let fillPreservedChunks = 0;
  for (let index = taken + 1; index <= upTo; index += 1) {
    if (index > taken + 1) {
      const before = await bench.counters(volume);
      await bench.fioWrite({
        name: `fill-${index}`, volume, blockSize: "4k", spanBytes: bench.context.imageSizeBytes, bytes: fillBytes, randomSeed: fillSeedBase + index,
      });
      fillPreservedChunks += (await bench.counters(volume)).preservedChunks - before.preservedChunks;
      fills += 1;
    }
    const { value, seconds } = await bench.cliTimed<{ snapshot: { pauseMs?: number } }>(["snapshot", "create", snapshotName(volume, index)]);
    cliSecondsSum += seconds;
    cliSecondsMax = Math.max(cliSecondsMax ?? 0, seconds);
    pauseMsMax = Math.max(pauseMsMax ?? 0, value.snapshot.pauseMs ?? 0);
  }
  const count = upTo - taken;
  return {
    count, cliSecondsMean: count > 0 ? cliSecondsSum / count : null, cliSecondsMax, pauseMsMax, fills, fillBytes: fills * fillBytes, fillPreservedChunks,
  };
}

// Preserved bytes / written bytes falls as a round writes more (each chunk is preserved at most
// once after a snapshot, however often it is rewritten), so it depends on the round's IOPS. The
// figure that must stay at 1.000 whatever the count is preserved chunks / chunks the round
// touched. The job's offsets are fio's random map with its default seed, the same sequence
// every time (checked: the nbd job's and a null-engine job's iologs are identical), each block
// once per pass: from the second pass on every chunk is touched; before, fio's null engine
// replays the first bytesWritten of the sequence into an iolog and the distinct chunks are
// counted. (fio's map is not uniform: an estimate from C(b−k, n) / C(b, n) comes out ~2 % high.)
async function chunksTouched(bench: SnapshotBench, bytesWritten: number, chunkSize: number): Promise<number> {
  const volumeBytes = bench.context.imageSizeBytes;
  const chunks = Math.ceil(volumeBytes / chunkSize);
  if (bytesWritten >= volumeBytes) return chunks;
  const logPath = join(bench.context.workDir, "touched.iolog");
  await commandCheck("fio", [
    "--name=touched", "--ioengine=null", "--rw=randwrite", `--bs=${measuredBlockBytes}`, `--size=${volumeBytes}`,
    `--io_size=${Math.max(measuredBlockBytes, Math.floor(bytesWritten / measuredBlockBytes) * measuredBlockBytes)}`,
    `--write_iolog=${logPath}`, "--output-format=terse", "--output=/dev/null",
  ], { timeoutMs: replayTimeoutMs });
  const touched = new Uint8Array(chunks);
  let count = 0;
  try {
    for await (const line of createInterface({ input: createReadStream(logPath), crlfDelay: Infinity })) {
      const [, , action, offset] = line.split(" "); // iolog v3: time file action offset length
      if (action !== "write" || offset === undefined) continue;
      const chunk = Math.floor(Number(offset) / chunkSize);
      if (touched[chunk] === 0) count += 1;
      touched[chunk] = 1;
    }
  } finally {
    rmSync(logPath, { force: true });
  }
  return count;
}

async function roundMeasure(bench: SnapshotBench, volume: string, row: Row, createsBefore: SnapshotCreates): Promise<SnapshotWritesRound> {
  const before = await bench.counters(volume);
  const { runtimeSeconds, rampSeconds } = bench.context;
  const sampler = before.snapshots > 0 ? new CopyPhaseSampler(bench, volume, bench.node.pid) : null;
  let measured: RowResult;
  try {
    measured = await rowMeasure(row, bench.running, { runtimeSeconds, rampSeconds }, bench.measureContext, () => sampler?.start());
  } finally {
    await sampler?.stop();
  }
  const after = await bench.counters(volume);
  const copyPhase = after.chunkSize === null ? null : sampler?.phase(before.preservedChunks, Math.ceil(bench.context.imageSizeBytes / after.chunkSize)) ?? null;
  const bytesWritten = after.groupWriteBytes - before.groupWriteBytes;
  const preservedChunks = after.preservedChunks - before.preservedChunks;
  return {
    snapshots: after.snapshots,
    measured,
    bytesWritten,
    preservedChunks,
    chunkSize: after.chunkSize,
    writeAmplification: after.chunkSize === null || bytesWritten === 0 ? null : (preservedChunks * after.chunkSize) / bytesWritten,
    chunksTouched: after.chunkSize === null ? null : await chunksTouched(bench, bytesWritten, after.chunkSize),
    copyPhase,
    storeUsedBytes: after.storeUsedBytes,
    logStalls: after.groupStalls - before.groupStalls,
    checkpoints: after.groupCheckpoints - before.groupCheckpoints,
    createsBefore,
  };
}

function roundCheck(round: SnapshotWritesRound, expected: number, volumeBytes: number, observations: string[]): void {
  if (round.snapshots !== expected) observations.push(`round ${expected}: the volume has ${round.snapshots} snapshot(s), expected ${expected}`);
  const chunks = round.chunkSize === null ? 0 : Math.ceil(volumeBytes / round.chunkSize);
  if (round.chunkSize !== null && round.preservedChunks > chunks) {
    observations.push(`round ${expected}: ${round.preservedChunks} chunks preserved, more than the volume's ${chunks}: a chunk was preserved more than once after one snapshot`);
  }
}

export async function snapshotWritesMeasure(bench: SnapshotBench, rowName: string, volume: string): Promise<SnapshotWritesResult> {
  const row = rowsAll.find((candidate) => candidate.name === measuredRowName);
  if (row === undefined) throw new Error(`no fio row ${measuredRowName}`);
  const rounds: SnapshotWritesRound[] = [];
  const observations: string[] = [];
  let taken = 0;
  for (const count of snapshotCounts) {
    const creates = await snapshotsTake(bench, volume, taken, count);
    taken = count;
    const round = await roundMeasure(bench, volume, row, creates);
    roundCheck(round, count, bench.context.imageSizeBytes, observations);
    rounds.push(round);
    bench.progress(`${rowName}: ${count} snapshot(s): ${Math.round(round.measured.figures.iops)} IOPS, p99 ${round.measured.figures.latencyP99Us.toFixed(0)} µs, ` +
      `CPU ${round.measured.serverCpuUsPerIo?.toFixed(1) ?? "-"} µs/IO, ${round.preservedChunks} chunks preserved, ` +
      `copy phase ${round.copyPhase === null ? "-" : `${round.copyPhase.seconds.toFixed(1)} s, ${round.copyPhase.cpuMsPerChunk.toFixed(2)} ms CPU/chunk`}, ` +
      `log stalls ${round.logStalls}, checkpoints ${round.checkpoints}, write amplification ${round.writeAmplification?.toFixed(3) ?? "-"}, preserved / touched ${round.chunksTouched === null ? "-" : (round.preservedChunks / round.chunksTouched).toFixed(3)}, store ${(round.storeUsedBytes / 1024 ** 2).toFixed(0)} MiB`);
  }
  return { kind: "writes", row: rowName, rounds, observations };
}
