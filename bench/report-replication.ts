// The replication part of the bench's output (targets lockstep-async, lockstep-sync and
// lockstep-link), beside the per-row tables of report.ts:
//
//   overhead   per fio row a replicated target ran: IOPS and latency with no link
//              (`lockstep`), an async and a sync secondary; the async/no-link ratio (target
//              ≥ 0.85), the latency sync adds over async, the link's lag as fio ended and the
//              drain that followed.
//   sync       the link's initial sync and bitmap resync: MiB/s against fio's sequential read
//              of the same image, and the bytes the link sent per byte it had to copy.

import type { SyncRowResult } from "./link-sync.js";
import type { RowResult } from "./measurement.js";
import type { BenchResult } from "./report.js";
import { fixed, grouped, mebibytes, titledMarkdown, titledText, type TitledTable } from "./table.js";

const baselineTarget = "lockstep";
const asyncTarget = "lockstep-async";
const asyncRatioGoal = 0.85;
const mebibyte = 1024 ** 2;

function rowOf(result: BenchResult, target: string, row: string): RowResult | undefined {
  return result.targets.find((candidate) => candidate.name === target)?.rows.find((entry) => entry.row === row);
}

function signed(value: number, digits: number): string {
  return `${value >= 0 ? "+" : ""}${value.toFixed(digits)}`;
}

function overheadLine(result: BenchResult, target: string, rowName: string, measured: RowResult): string[] {
  const baseline = rowOf(result, baselineTarget, rowName);
  const asynchronous = rowOf(result, asyncTarget, rowName);
  const figures = measured.figures;
  const catchUp = measured.linkCatchUp ?? null;
  const againstAsync = asynchronous !== undefined && target !== asyncTarget && catchUp !== null;
  return [
    target,
    grouped(figures.iops),
    baseline === undefined ? "-" : (figures.iops / baseline.figures.iops).toFixed(2),
    fixed(figures.latencyMeanUs, 1),
    fixed(figures.latencyP99Us, 0),
    againstAsync ? signed(figures.latencyMeanUs - asynchronous.figures.latencyMeanUs, 1) : "",
    againstAsync ? signed(figures.latencyP99Us - asynchronous.figures.latencyP99Us, 0) : "",
    fixed(measured.serverCpuPercent, 0),
    fixed(measured.serverCpuUsPerIo, 1),
    fixed(measured.peerCpuPercent, 0),
    catchUp === null ? "" : `${mebibytes(catchUp.lagBytesAtEnd)} MiB, ${grouped(catchUp.lagRecordsAtEnd)} rec, ${fixed(catchUp.lagSecondsAtEnd, 2)} s`,
    catchUp === null ? "" : fixed(catchUp.drainSeconds, 2),
    catchUp === null ? "" : String(catchUp.overflows),
    catchUp === null ? "" : String(catchUp.nudges),
  ];
}

/** One table per fio row that a replicated target ran. */
export function linkOverheadTables(result: BenchResult): TitledTable[] {
  const tables: TitledTable[] = [];
  for (const row of result.rows) {
    const replicated = result.targets.filter((target) => target.rows.some((entry) => entry.row === row.name && (entry.linkCatchUp ?? null) !== null));
    if (replicated.length === 0) continue;
    const lines: string[][] = [];
    for (const target of [result.targets.find((candidate) => candidate.name === baselineTarget), ...replicated]) {
      const measured = target?.rows.find((entry) => entry.row === row.name);
      if (target !== undefined && measured !== undefined) lines.push(overheadLine(result, target.name, row.name, measured));
    }
    const notes = asyncRatioNotes(result, row.name);
    for (const target of replicated) {
      const error = target.rows.find((entry) => entry.row === row.name)?.linkCatchUp?.error ?? null;
      if (error !== null) notes.push(`${target.name}: drain failed: ${error}`);
    }
    tables.push({
      title: `Replication overhead: ${row.title} (\`${row.name}\`)`,
      table: {
        header: ["target", "IOPS", `×${baselineTarget}`, "lat mean µs", "lat p99 µs", "mean vs async µs", "p99 vs async µs",
          "primary CPU %", "primary CPU µs/IO", "secondary CPU %", "lag at fio's end", "drain s", "overflows", "nudges"],
        lines,
        leftColumns: ["lag at fio's end"],
      },
      notes,
    });
  }
  return tables;
}

/**
 * The async row against the no-link row. With --rounds, each round's pair (jobs minutes apart)
 * gives a ratio and the verdict is on their median: the two median rounds may come from
 * different rounds, one of them slowed by the machine, and their ratio would mean nothing.
 */
export function asyncRatioNotes(result: BenchResult, row: string): string[] {
  const asyncRounds = result.targets.find((target) => target.name === asyncTarget)?.roundRows.filter((entry) => entry.row === row) ?? [];
  const baseRounds = result.targets.find((target) => target.name === baselineTarget)?.roundRows.filter((entry) => entry.row === row) ?? [];
  const perRound = asyncRounds.flatMap((entry) => {
    const base = baseRounds.find((candidate) => candidate.round === entry.round);
    return base === undefined ? [] : [entry.figures.iops / base.figures.iops];
  });
  const verdict = (ratio: number) => `goal ≥ ${asyncRatioGoal}: ${ratio >= asyncRatioGoal ? "met" : "NOT met"}`;
  if (perRound.length > 1) {
    const sorted = [...perRound].sort((a, b) => a - b);
    const median = sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
    return [`async / no link, round by round: ${perRound.map((ratio) => ratio.toFixed(2)).join(", ")}; median ${median.toFixed(2)} (${verdict(median)}); ×lockstep above compares each target's median round, which may be another round's`];
  }
  const ratio = ratioOf(result, asyncTarget, row);
  return ratio === null ? [] : [`async / no link: ${ratio.toFixed(2)} (${verdict(ratio)})`];
}

function ratioOf(result: BenchResult, target: string, row: string): number | null {
  const top = rowOf(result, target, row);
  const bottom = rowOf(result, baselineTarget, row);
  return top === undefined || bottom === undefined ? null : top.figures.iops / bottom.figures.iops;
}

function syncLine(measured: SyncRowResult): string[] {
  return [
    measured.row,
    measured.method,
    mebibytes(measured.bytes),
    fixed(measured.seconds, 2),
    fixed(measured.bytesPerSecond / mebibyte, 0),
    fixed(measured.rawReadBytesPerSecond / mebibyte, 0),
    fixed(measured.bytesPerSecond / measured.rawReadBytesPerSecond, 2),
    mebibytes(measured.regionBytesSent),
    fixed(measured.regionBytesSent / measured.bytes, 3),
    mebibytes(measured.recordBytesSent),
    fixed(measured.secondsFromCommand, 2),
    fixed(measured.primaryConsistentSeconds, 2),
    `${fixed(measured.cpuSecondsPrimary, 1)} / ${fixed(measured.cpuSecondsSecondary, 1)}`,
    String(measured.nudges),
  ];
}

export function linkSyncTable(result: BenchResult): TitledTable | null {
  const measured = result.targets.flatMap((target) => target.syncRows);
  if (measured.length === 0) return null;
  return {
    title: "Replication: initial sync and resync (`lockstep-link`)",
    table: {
      header: ["row", "how", "MiB to copy", "s", "MiB/s", "raw read MiB/s", "×raw", "region MiB sent", "sent / to copy", "record MiB sent",
        "s from command", "primary consistent s", "CPU s prim / sec", "nudges"],
      lines: measured.map(syncLine),
      leftColumns: ["how"],
    },
    notes: measured.flatMap((entry) => entry.observations.map((text) => `${entry.row}: ${text}`)),
  };
}

function sections(result: BenchResult): TitledTable[] {
  const sync = linkSyncTable(result);
  return [...linkOverheadTables(result), ...(sync === null ? [] : [sync])];
}

export function replicationText(result: BenchResult): string[] {
  return titledText(sections(result));
}

export function replicationMarkdown(result: BenchResult): string[] {
  return titledMarkdown(sections(result));
}
