// The snapshot part of the bench's output (target lockstep-snapshots), beside the per-row
// tables of report.ts:
//
//   writes       per number of snapshots (0, 1, 8, 32): the 4k random write job's IOPS against
//                0 and 1 snapshot of the same run, latency, the server's CPU per write, and the
//                write amplification of preservation measured on the node
//   operations   create, diff, restore (and the writes that prepare them) on a 10 GiB sparse
//                volume: wall clock through the API and through the CLI, writes paused

import type { BenchResult } from "./report.js";
import type { SnapshotOperationsResult } from "./snapshot-operations.js";
import type { SnapshotWritesResult, SnapshotWritesRound } from "./snapshot-writes.js";
import { fixed, grouped, mebibytes, titledMarkdown, titledText, type TitledTable } from "./table.js";
import type { SnapshotRowResult } from "./target-snapshots.js";

const ratio = (top: number | null | undefined, bottom: number | null | undefined) =>
  top === null || top === undefined || bottom === null || bottom === undefined || bottom === 0 ? null : top / bottom;

function roundOf(measured: SnapshotWritesResult, snapshots: number): SnapshotWritesRound | undefined {
  return measured.rounds.find((round) => round.snapshots === snapshots);
}

function writesLine(measured: SnapshotWritesResult, round: SnapshotWritesRound): string[] {
  const figures = round.measured.figures;
  const creates = round.createsBefore;
  return [
    String(round.snapshots),
    grouped(figures.iops),
    fixed(ratio(figures.iops, roundOf(measured, 0)?.measured.figures.iops), 2),
    fixed(ratio(figures.iops, roundOf(measured, 1)?.measured.figures.iops), 2),
    fixed(figures.latencyMeanUs, 1),
    fixed(figures.latencyP99Us, 0),
    fixed(round.measured.serverCpuPercent, 0),
    fixed(round.measured.serverCpuUsPerIo, 1),
    mebibytes(round.bytesWritten),
    grouped(round.preservedChunks),
    fixed(round.writeAmplification, 3),
    fixed(ratio(round.preservedChunks, round.chunksTouched), 3),
    fixed(round.copyPhase?.seconds ?? null, 1),
    fixed(round.copyPhase?.cpuMsPerChunk ?? null, 2),
    mebibytes(round.storeUsedBytes),
    creates.count === 0 ? "" : `${creates.count} (${fixed(creates.cliSecondsMean, 2)} s · ${creates.pauseMsMax ?? "-"} ms)`,
    creates.fills === 0 ? "" : `${creates.fills} × ${mebibytes(creates.fillBytes / creates.fills)} MiB, ${grouped(creates.fillPreservedChunks)} chunks`,
  ];
}

function writesSummary(measured: SnapshotWritesResult): string[] {
  const one = roundOf(measured, 1);
  const most = measured.rounds[measured.rounds.length - 1];
  if (one === undefined || most === undefined || most === one) return [];
  const withSnapshots = measured.rounds.filter((round) => round.snapshots > 0);
  const amplification = withSnapshots.map((round) => `${round.snapshots}: ${fixed(round.writeAmplification, 3)}`);
  const perChunk = withSnapshots.map((round) => `${round.snapshots}: ${fixed(ratio(round.preservedChunks, round.chunksTouched), 3)}`);
  return [
    `${most.snapshots} snapshots against 1: IOPS ×${fixed(ratio(most.measured.figures.iops, one.measured.figures.iops), 2)}, ` +
      `CPU µs/IO ×${fixed(ratio(most.measured.serverCpuUsPerIo, one.measured.serverCpuUsPerIo), 2)}, p99 ×${fixed(ratio(most.measured.figures.latencyP99Us, one.measured.figures.latencyP99Us), 2)} ` +
      `(goal: no more costly than 1 snapshot); copy phase (fio's start → half the volume's chunks preserved: the same first writes every round) ` +
      `×${fixed(ratio(most.copyPhase?.seconds, one.copyPhase?.seconds), 2)} in time, ×${fixed(ratio(most.copyPhase?.cpuMsPerChunk, one.copyPhase?.cpuMsPerChunk), 2)} in server CPU per chunk`,
    `write amplification (preserved bytes / written bytes) by count: ${amplification.join(", ")}; chunks preserved per chunk touched: ` +
      `${perChunk.join(", ")} (goal: not growing with the count; 1.000 is one copy per chunk)`,
    "write amplification falls as a round writes more (a chunk is preserved once after a snapshot however often it is rewritten), " +
      "so a slower round shows a higher one; chunks touched: every chunk once a round has written as many bytes as the volume holds, " +
      "else counted from the job's own offsets (fio's null engine replaying its random sequence into an iolog)",
  ];
}

function writesTable(measured: SnapshotWritesResult): TitledTable {
  return {
    title: "Snapshots: 4k random write, QD16, with 0, 1, 8 and 32 snapshots (`snapshot-writes`)",
    table: {
      header: ["snapshots", "IOPS", "×0 snap", "×1 snap", "lat mean µs", "lat p99 µs", "srv CPU %", "CPU µs/IO", "MiB written", "chunks preserved",
        "write amp", "preserved / touched", "copy phase s", "copy CPU ms/chunk", "store used MiB", "taken before (CLI s mean · paused ms max)", "fills before"],
      lines: measured.rounds.map((round) => writesLine(measured, round)),
      leftColumns: ["taken before (CLI s mean · paused ms max)", "fills before"],
    },
    notes: [...writesSummary(measured), ...measured.observations],
  };
}

function operationsTable(measured: SnapshotOperationsResult): TitledTable {
  return {
    title: `Snapshots: create, diff, restore on a ${measured.volumeBytes / 1024 ** 3} GiB sparse volume (\`snapshot-ops\`)`,
    table: {
      header: ["step", "via", "wall s", "writes paused ms", "result"],
      lines: measured.steps.map((step) => [step.step, step.via, fixed(step.seconds, 3), step.pauseMs === null ? "" : String(step.pauseMs), step.result]),
      leftColumns: ["via", "result"],
    },
    notes: [`the volume's image after the first write: ${mebibytes(measured.allocatedBytes)} MiB allocated`, ...measured.observations],
  };
}

function sections(result: BenchResult): TitledTable[] {
  return result.targets.flatMap((target) => target.snapshotRows).map((measured) => (measured.kind === "writes" ? writesTable(measured) : operationsTable(measured)));
}

/** One line for the bench's progress output. */
export function snapshotRowText(measured: SnapshotRowResult): string {
  if (measured.kind === "writes") {
    const rounds = measured.rounds.map((round) => `${round.snapshots}: ${grouped(round.measured.figures.iops)} IOPS, amp ${fixed(round.writeAmplification, 3)}`);
    return [...rounds, ...measured.observations].join("; ");
  }
  return [...measured.steps.filter((step) => step.via !== "fio").map((step) => `${step.step} (${step.via}) ${fixed(step.seconds, 3)} s`), ...measured.observations].join("; ");
}

export function snapshotText(result: BenchResult): string[] {
  return titledText(sections(result));
}

export function snapshotMarkdown(result: BenchResult): string[] {
  return titledMarkdown(sections(result));
}
