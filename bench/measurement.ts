// One fio job against one running target, with the server's CPU; and the memory check.
//
// Server CPU is utime + stime (+ reaped children) of the server's process tree from
// /proc/PID/stat, sampled when fio's ramp ends and when fio exits; fio's figures cover the
// same window (it excludes the ramp). The window also holds fio's exit and disconnect, a
// few milliseconds. CPU per I/O divides by the data I/Os, flushes not counted. A target's
// other processes (a replicated target's secondary) are sampled in the same window.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fioFiguresParse, fioRowArgs, fioTargetArgs, type FioFigures, type Row } from "./fio-job.js";
import { pageCacheReset, type CacheResetMethod, type CacheResetResult } from "./page-cache.js";
import { commandRun, mainThreadCpuSeconds, processTreeCpuSeconds, processTreeRssBytes } from "./process-tree.js";
import type { LinkCatchUp } from "./node-pair.js";
import type { RunningTarget } from "./target.js";

const fioSlackMs = 120_000; // beyond runtime + ramp: start, connect, exit
const memorySampleIntervalMs = 1_000;
const memorySequentialSecondsMax = 600;

export interface MeasureContext {
  readonly workDir: string;
  readonly imagePath: string;
  readonly imageSizeBytes: number;
  readonly cacheReset: CacheResetMethod;
  readonly fincoreAvailable: boolean;
}

interface CpuSample {
  readonly cpuSeconds: number;
  readonly loopCpuSeconds: number | null;
  readonly peerCpuSeconds: number;
  readonly atMs: number;
}

export interface RowResult {
  readonly row: string;
  readonly figures: FioFigures;
  readonly serverCpuSeconds: number | null;
  readonly serverCpuPercent: number | null; // of one core
  readonly serverCpuUsPerIo: number | null;
  // The server's event-loop thread alone: where cores are to spare, this bounds its IOPS.
  readonly serverLoopCpuUsPerIo?: number | null;
  readonly peerCpuPercent: number | null; // other processes of the target (a secondary), same window; null: none
  readonly cacheReset: CacheResetResult;
  readonly linkCatchUp?: LinkCatchUp | null; // replicated targets (RunningTarget.afterRow)
  readonly round?: number; // 1 to --rounds
}

export async function fioRun(args: string[], outputPath: string, timeoutMs: number, onStart?: (pid: number) => void): Promise<string> {
  const result = await commandRun("fio", args, { timeoutMs, onStart });
  if (result.timedOut) throw new Error(`fio timed out after ${timeoutMs} ms: fio ${args.join(" ")}`);
  if (result.code !== 0) {
    throw new Error(`fio exit ${result.code}: ${(result.stderr || result.stdout).trim().split("\n").slice(-10).join("\n")}`);
  }
  return readFileSync(outputPath, "utf8");
}

export async function rowMeasure(
  row: Row,
  target: RunningTarget,
  timing: { runtimeSeconds: number; rampSeconds: number },
  context: MeasureContext,
  onFioStart?: () => void, // after the page cache reset, as fio starts (a caller sampling the server during the job)
): Promise<RowResult> {
  const cacheReset = await pageCacheReset(context.imagePath, target.stateFiles(), context.cacheReset, context.fincoreAvailable);
  const outputPath = join(context.workDir, `fio-${row.name}.json`);
  const args = [...fioRowArgs(row, timing, outputPath), ...fioTargetArgs(target.fio)];
  const serverPid = target.serverPid;
  const peerPids = target.peerPids?.() ?? [];
  let windowStart: CpuSample | null = null;
  let rampTimer: NodeJS.Timeout | undefined;
  const sample = (): CpuSample | null => serverPid === null ? null : {
    cpuSeconds: processTreeCpuSeconds(serverPid),
    loopCpuSeconds: mainThreadCpuSeconds(serverPid),
    peerCpuSeconds: peerPids.reduce((sum, pid) => sum + processTreeCpuSeconds(pid), 0),
    atMs: performance.now(),
  };
  try {
    const text = await fioRun(args, outputPath, (timing.runtimeSeconds + timing.rampSeconds) * 1000 + fioSlackMs, () => {
      windowStart = sample();
      rampTimer = setTimeout(() => { windowStart = sample(); }, timing.rampSeconds * 1000);
      onFioStart?.();
    });
    const windowEnd = sample();
    const figures = fioFiguresParse(text, row);
    const start = windowStart as CpuSample | null;
    if (start === null || windowEnd === null) {
      return { row: row.name, figures, serverCpuSeconds: null, serverCpuPercent: null, serverCpuUsPerIo: null, peerCpuPercent: null, cacheReset };
    }
    const cpuSeconds = windowEnd.cpuSeconds - start.cpuSeconds;
    const loopCpuSeconds = windowEnd.loopCpuSeconds === null || start.loopCpuSeconds === null ? null : windowEnd.loopCpuSeconds - start.loopCpuSeconds;
    const wallSeconds = (windowEnd.atMs - start.atMs) / 1000;
    return {
      row: row.name,
      figures,
      serverCpuSeconds: cpuSeconds,
      serverCpuPercent: wallSeconds > 0 ? (100 * cpuSeconds) / wallSeconds : null,
      serverCpuUsPerIo: figures.ios > 0 ? (cpuSeconds * 1e6) / figures.ios : null,
      serverLoopCpuUsPerIo: figures.ios > 0 && loopCpuSeconds !== null ? (loopCpuSeconds * 1e6) / figures.ios : null,
      peerCpuPercent: peerPids.length > 0 && wallSeconds > 0 ? (100 * (windowEnd.peerCpuSeconds - start.peerCpuSeconds)) / wallSeconds : null,
      cacheReset,
    };
  } finally {
    clearTimeout(rampTimer);
  }
}

export interface MemoryPhase {
  readonly job: string;
  readonly bytesWritten: number;
  readonly seconds: number;
}

export interface MemoryResult {
  readonly rssStartBytes: number;
  readonly rssPeakBytes: number;
  readonly rssEndBytes: number;
  readonly phases: MemoryPhase[];
  readonly samples: Array<{ atSeconds: number; rssBytes: number }>;
}

/**
 * Writes memoryWriteBytes sequentially (1M, QD4), then up to as much again at random (4k,
 * QD16, time-capped), sampling the server's RSS every second. The goal is a flat line.
 */
export async function memoryCheck(
  target: RunningTarget,
  memoryWriteBytes: number,
  randomSecondsMax: number,
  context: MeasureContext,
): Promise<MemoryResult> {
  const serverPid = target.serverPid;
  if (serverPid === null) throw new Error("memory check needs a server");
  await pageCacheReset(context.imagePath, target.stateFiles(), context.cacheReset, context.fincoreAvailable);
  const startedMs = performance.now();
  const samples: Array<{ atSeconds: number; rssBytes: number }> = [];
  const take = () => samples.push({ atSeconds: (performance.now() - startedMs) / 1000, rssBytes: processTreeRssBytes(serverPid) });
  take();
  const timer = setInterval(take, memorySampleIntervalMs);
  const phases: MemoryPhase[] = [];
  try {
    const jobs = [
      { name: "memory-write-1m-qd4", rw: "write", bs: "1M", depth: 4, secondsMax: memorySequentialSecondsMax },
      { name: "memory-randwrite-4k-qd16", rw: "randwrite", bs: "4k", depth: 16, secondsMax: randomSecondsMax },
    ];
    for (const job of jobs) {
      const outputPath = join(context.workDir, `fio-${job.name}.json`);
      const args = [
        `--name=${job.name}`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.depth}`,
        `--size=${context.imageSizeBytes}`, `--io_size=${memoryWriteBytes}`, `--runtime=${job.secondsMax}`,
        "--output-format=json", `--output=${outputPath}`, ...fioTargetArgs(target.fio),
      ];
      const text = await fioRun(args, outputPath, job.secondsMax * 1000 + fioSlackMs);
      const report = JSON.parse(text.slice(text.indexOf("{"))) as { jobs: Array<{ write: { io_bytes: number }; job_runtime: number }> };
      const result = report.jobs[0];
      phases.push({ job: job.name, bytesWritten: result?.write.io_bytes ?? 0, seconds: (result?.job_runtime ?? 0) / 1000 });
    }
  } finally {
    clearInterval(timer);
  }
  take();
  const rssAll = samples.map((sample) => sample.rssBytes);
  return {
    rssStartBytes: rssAll[0] ?? 0,
    rssPeakBytes: Math.max(...rssAll),
    rssEndBytes: rssAll[rssAll.length - 1] ?? 0,
    phases,
    samples,
  };
}
