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
import type { MachineInfo } from "./machine.js";
import type { BenchResult } from "./report.js";
import { fixed, grouped, mebibytes, titledMarkdown, titledText, type TitledTable } from "./table.js";

const baselineTarget = "lockstep";
const asyncTarget = "lockstep-async";
const asyncRatioGoal = 0.85;
const mebibyte = 1024 ** 2;

function rowOf(result: BenchResult, target: string, row: string): RowResult | undefined {
  return result.targets.find((candidate) => candidate.name === target)?.rows.find((entry) => entry.row === row);
}

// CPU µs per I/O from a percentage of one core and the I/O rate.
function perIo(cpuPercent: number | null, iops: number): number | null {
  return cpuPercent === null || iops <= 0 ? null : (cpuPercent / 100 / iops) * 1e6;
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
    fixed(measured.serverLoopCpuUsPerIo ?? null, 1),
    fixed(measured.peerCpuPercent, 0),
    fixed(perIo(measured.peerCpuPercent, figures.iops), 1),
    fixed(perIo(figures.clientCpuPercent, figures.iops), 1),
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
          "primary CPU %", "primary CPU µs/IO", "primary loop µs/IO", "secondary CPU %", "secondary CPU µs/IO", "fio CPU µs/IO", "lag at fio's end", "drain s", "overflows", "nudges"],
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
  const notes = [...cpuBudgetNote(result, row), ...loopBoundNote(result, row)];
  if (perRound.length > 1) {
    const sorted = [...perRound].sort((a, b) => a - b);
    const median = sorted.length % 2 === 1 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2;
    return [`async / no link, round by round: ${perRound.map((ratio) => ratio.toFixed(2)).join(", ")}; median ${median.toFixed(2)} (${verdict(median)}); ×lockstep above compares each target's median round, which may be another round's`, ...notes];
  }
  const ratio = ratioOf(result, asyncTarget, row);
  return ratio === null ? notes : [`async / no link: ${ratio.toFixed(2)} (${verdict(ratio)})`, ...notes];
}

/**
 * Where every process shares the machine's processors, the goal sets a CPU budget per write:
 * at asyncRatioGoal × the no-link IOPS, the processors give each write 1/that of a second of
 * CPU, of which the no-link primary and fio take what they take; the rest is all a link may
 * cost, on both sides together.
 */
function cpuBudgetNote(result: BenchResult, row: string): string[] {
  const base = rowOf(result, baselineTarget, row);
  const linked = rowOf(result, asyncTarget, row);
  if (base === undefined || linked === undefined) return [];
  // (results written before these figures existed have none of them)
  const baseCpu = base.serverCpuUsPerIo ?? null;
  const linkedCpu = linked.serverCpuUsPerIo ?? null;
  const secondary = perIo(linked.peerCpuPercent ?? null, linked.figures.iops);
  const client = perIo(linked.figures.clientCpuPercent ?? null, linked.figures.iops);
  const processors = (result.machine as MachineInfo | undefined)?.processors ?? null;
  if (baseCpu === null || linkedCpu === null || secondary === null || client === null || processors === null || base.figures.iops <= 0) return [];
  const perWrite = (processors * 1e6) / (asyncRatioGoal * base.figures.iops);
  const budget = perWrite - baseCpu - client;
  const cost = linkedCpu - baseCpu + secondary;
  return [
    `CPU budget: ${processors} processors at ${asyncRatioGoal}× the no-link row's ${Math.round(base.figures.iops)} IOPS give ${perWrite.toFixed(1)} µs per write; ` +
      `the no-link primary takes ${baseCpu.toFixed(1)} and fio ${client.toFixed(1)}, leaving ${budget.toFixed(1)} µs for the link on both sides; ` +
      `it costs ${cost.toFixed(1)} (primary +${(linkedCpu - baseCpu).toFixed(1)}, secondary ${secondary.toFixed(1)}); ` +
      "what the kernel and the cipher alone take of it: node dist/bench/link-floor.js",
  ];
}

/**
 * What the async row would be where cores are to spare (the secondary and fio elsewhere): the
 * primary's event loop is one thread, so its CPU per write bounds the IOPS of both rows, and
 * their ratio is the no-link loop's µs/IO over the async loop's (median rounds).
 */
function loopBoundNote(result: BenchResult, row: string): string[] {
  const base = rowOf(result, baselineTarget, row)?.serverLoopCpuUsPerIo ?? null;
  const linked = rowOf(result, asyncTarget, row)?.serverLoopCpuUsPerIo ?? null;
  if (base === null || linked === null || linked <= 0) return [];
  return [`primary event loop: ${base.toFixed(1)} µs per write with no link, ${linked.toFixed(1)} with the async link: bounded by its loop alone (cores to spare), async would be ${(base / linked).toFixed(2)}× no link`];
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
