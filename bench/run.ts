// `npm run bench`: the NBD data-path benchmark.
//
// One fresh, fully written image in a temp dir on the real disk; every target serves it in
// turn (lockstep, lockstep-wal, lockstep with an async and a sync secondary, nbdkit,
// qemu-nbd, then fio on the file itself) and runs the same fio jobs, the page cache reset
// before each; a replicated target then drains its link. lockstep-link measures a link's
// initial sync and resync on an image of its own (link-sync.ts); lockstep-snapshots measures
// writes with 0 to 32 snapshots and the snapshot operations (target-snapshots.ts);
// lockstep-operations, not run by default, compares snapshot create and restore in band with
// re-replicating the data they change (target-operations.ts). Prints a
// table with ratios against the peers measured in the same run, writes
// bench/results/latest.json and the figures section of docs/BENCHMARKS.md. Exit 0 when every
// target ran, 1 when one failed, 2 on a usage or setup error. Methodology and caveats:
// docs/BENCHMARKS.md.

import { mkdirSync, mkdtempSync, rmSync, statfsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { rowsAll } from "./fio-job.js";
import { machineDescribe, toolAvailable, toolPackages } from "./machine.js";
import { syncRowsAll } from "./link-sync.js";
import { memoryCheck, rowMeasure, type MeasureContext, type RowResult } from "./measurement.js";
import type { LinkCatchUp } from "./node-pair.js";
import { optionsParse, usage, UsageError, type BenchOptions } from "./options.js";
import { dropCachesWritable } from "./page-cache.js";
import { childrenKillAll, clockTicksPerSecond, commandCheck } from "./process-tree.js";
import { docsFiguresWrite, jsonWrite, ratiosCompute, roundsMedian, textReport, type BenchResult, type TargetResult } from "./report.js";
import { TargetUnavailableError, type RunningTarget, type TargetDefinition } from "./target.js";
import { operationsTargetNames, ratioPairs, replicationTargetNames, snapshotTargetNames, targetsAll } from "./target-registry.js";
import { snapshotRowsAll } from "./target-snapshots.js";
import { operationRowsAll } from "./target-operations.js";
import { snapshotRowText } from "./report-snapshots.js";
import { operationsRowText } from "./report-operations.js";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const imageCreateTimeoutMs = 600_000;
const spaceMarginBytes = 2 * 1024 ** 3; // lockstep's 1 GiB log, fio's files, slack
const lockstepLogBytes = 1024 ** 3;

class SetupError extends Error {}

const progress = (message: string) => process.stderr.write(`bench: ${message}\n`);

async function toolsCheck(targets: readonly TargetDefinition[]): Promise<boolean> {
  const needed = ["fio", "nbdinfo", "dd", "sync", ...targets.flatMap((target) => target.tools)];
  const missing: string[] = [];
  for (const tool of new Set(needed)) if (!(await toolAvailable(tool))) missing.push(tool);
  if (missing.length > 0) {
    const packages = [...new Set(missing.map((tool) => toolPackages[tool] ?? tool))];
    throw new SetupError(`missing tool(s): ${missing.join(", ")}; install with: apt-get install -y ${packages.join(" ")}`);
  }
  const clockTicks = Number((await commandCheck("getconf", ["CLK_TCK"], { timeoutMs: 10_000 })).trim());
  if (clockTicks !== clockTicksPerSecond) throw new SetupError(`CLK_TCK is ${clockTicks}, the bench assumes ${clockTicksPerSecond}`);
  const fincoreAvailable = await toolAvailable("fincore");
  if (!fincoreAvailable) progress("fincore (util-linux) missing: the page cache reset will not be verified");
  return fincoreAvailable;
}

function spaceCheck(tempDir: string, options: BenchOptions, targets: readonly TargetDefinition[]): void {
  const stats = statfsSync(tempDir);
  const freeBytes = stats.bavail * stats.bsize;
  // Targets run one at a time and their directories go when they stop: the largest counts.
  const extraBytes = Math.max(0, ...targets.map((target) => target.extraDiskBytes?.(options.imageSizeBytes) ?? 0));
  const neededBytes = options.imageSizeBytes + lockstepLogBytes + spaceMarginBytes + extraBytes;
  if (freeBytes < neededBytes) {
    throw new SetupError(`${tempDir}: ${(freeBytes / 1024 ** 3).toFixed(1)} GiB free, the bench needs ${(neededBytes / 1024 ** 3).toFixed(1)} GiB`);
  }
}

async function imageCreate(imagePath: string, sizeBytes: number): Promise<void> {
  // Real data in every block: a fallocated or sparse file reads back zeros without disk I/O.
  const mebibytes = Math.ceil(sizeBytes / 1024 ** 2);
  await commandCheck("dd", ["if=/dev/urandom", `of=${imagePath}`, "bs=1M", `count=${mebibytes}`, "conv=fsync", "status=none"], {
    timeoutMs: imageCreateTimeoutMs,
  });
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A target with no selected row it runs and no memory check to do (e.g. lockstep-link with --rows randread-4k-qd16). */
function nothingToRun(definition: TargetDefinition, options: BenchOptions): boolean {
  const fioRows = fioRowsOf(definition, options);
  const ownRows = (definition.ownRows ?? []).filter((row) => options.rows.includes(row));
  return fioRows.length === 0 && ownRows.length === 0 && !(options.memoryCheck && definition.memoryCheck !== false);
}

function catchUpText(catchUp: LinkCatchUp | null): string {
  if (catchUp === null) return "";
  const drain = catchUp.drainSeconds === null ? `failed: ${catchUp.error}` : `${catchUp.drainSeconds.toFixed(2)} s`;
  return `; link at the end: ${catchUp.stateAtEnd}, lag ${(catchUp.lagBytesAtEnd / 2 ** 20).toFixed(1)} MiB, drain ${drain}`;
}

function fioRowsOf(definition: TargetDefinition, options: BenchOptions) {
  return rowsAll.filter((candidate) => options.rows.includes(candidate.name) && (definition.fioRows?.includes(candidate.name) ?? true));
}

/** The fio rows selected that the target runs; a replicated target drains its link after each. */
async function fioRowsRun(definition: TargetDefinition, running: RunningTarget, options: BenchOptions, context: MeasureContext, result: TargetResult, round: number): Promise<void> {
  for (const row of fioRowsOf(definition, options)) {
    const measured: RowResult = await rowMeasure(row, running, options, context);
    const linkCatchUp = running.afterRow === undefined ? null : await running.afterRow();
    result.rows.push({ ...measured, linkCatchUp, round });
    progress(`${definition.name} ${row.name}${options.rounds > 1 ? ` (round ${round}/${options.rounds})` : ""}: ${Math.round(measured.figures.iops)} IOPS, ` +
      `p99 ${measured.figures.latencyP99Us.toFixed(0)} µs, server CPU ${measured.serverCpuPercent?.toFixed(0) ?? "-"} %` +
      ` (image resident after reset: ${measured.cacheReset.residentBytesAfter ?? "?"} B)${catchUpText(linkCatchUp)}`);
  }
}

/** The selected rows the target measures itself (lockstep-link: initial sync, resync; lockstep-snapshots; lockstep-operations). */
async function ownRowsRun(definition: TargetDefinition, running: RunningTarget, options: BenchOptions, result: TargetResult): Promise<void> {
  for (const row of snapshotRowsAll.filter((candidate) => options.rows.includes(candidate.name) && (definition.ownRows?.includes(candidate.name) ?? false))) {
    if (running.snapshotRowMeasure === undefined) throw new Error(`${definition.name} lists row ${row.name} but cannot measure it`);
    const measured = await running.snapshotRowMeasure(row.name);
    result.snapshotRows.push(measured);
    progress(`${definition.name} ${row.name}: ${snapshotRowText(measured)}`);
  }
  for (const row of operationRowsAll.filter((candidate) => options.rows.includes(candidate.name) && (definition.ownRows?.includes(candidate.name) ?? false))) {
    if (running.operationRowMeasure === undefined) throw new Error(`${definition.name} lists row ${row.name} but cannot measure it`);
    const measured = await running.operationRowMeasure(row.name);
    result.operationRows.push(measured);
    progress(`${definition.name} ${row.name}: ${operationsRowText(measured)}`);
  }
  for (const row of syncRowsAll.filter((candidate) => options.rows.includes(candidate.name) && (definition.ownRows?.includes(candidate.name) ?? false))) {
    if (running.ownRowMeasure === undefined) throw new Error(`${definition.name} lists row ${row.name} but cannot measure it`);
    const measured = await running.ownRowMeasure(row.name);
    result.syncRows.push(measured);
    progress(`${definition.name} ${row.name}: ${(measured.bytes / 2 ** 20).toFixed(0)} MiB in ${measured.seconds.toFixed(2)} s = ` +
      `${(measured.bytesPerSecond / 2 ** 20).toFixed(0)} MiB/s (raw read ${(measured.rawReadBytesPerSecond / 2 ** 20).toFixed(0)} MiB/s)` +
      `${measured.nudges > 0 ? `, ${measured.nudges} nudge(s)` : ""}; ${measured.observations.join("; ")}`);
  }
}

/**
 * Starts the target, runs its rows and stops it. Round 1 runs everything selected (fio rows,
 * rows of its own, the memory check); a later round (--rounds) only the fio rows again.
 */
async function targetRun(
  definition: TargetDefinition,
  options: BenchOptions,
  tempDir: string,
  imagePath: string,
  fincoreAvailable: boolean,
  round: number,
): Promise<TargetResult> {
  const result: TargetResult = {
    name: definition.name, description: definition.description, command: null, error: null, rows: [], roundRows: [], memory: null, memoryError: null,
    notes: [], syncRows: [], snapshotRows: [], operationRows: [],
  };
  const first = round === 1;
  const workDir = join(tempDir, definition.name);
  mkdirSync(workDir);
  const context: MeasureContext = { workDir, imagePath, imageSizeBytes: options.imageSizeBytes, cacheReset: options.cacheReset, fincoreAvailable };
  let running: RunningTarget | null = null;
  try {
    progress(`${definition.name}: starting${options.rounds > 1 ? ` (round ${round}/${options.rounds})` : ""}`);
    running = await definition.start({
      repoRoot, workDir, imagePath, imageSizeBytes: options.imageSizeBytes, rawEngine: options.rawEngine, uvIoUring: options.uvIoUring,
      cacheReset: options.cacheReset, fincoreAvailable, runtimeSeconds: options.runtimeSeconds, rampSeconds: options.rampSeconds,
    });
    result.command = running.command.split(tempDir).join("$BENCH_DIR");
    result.notes.push(...(running.notes ?? []));
    await fioRowsRun(definition, running, options, context, result, round);
    if (first) await ownRowsRun(definition, running, options, result);
    if (first && options.memoryCheck && running.serverPid !== null && definition.memoryCheck !== false) {
      try {
        result.memory = await memoryCheck(running, options.memoryWriteBytes, options.memoryRandomSecondsMax, context);
        progress(`${definition.name} memory: RSS ${(result.memory.rssStartBytes / 2 ** 20).toFixed(0)} → peak ${(result.memory.rssPeakBytes / 2 ** 20).toFixed(0)} → ${(result.memory.rssEndBytes / 2 ** 20).toFixed(0)} MiB`);
      } catch (error) {
        result.memoryError = errorText(error);
      }
    }
  } catch (error) {
    const unavailable = error instanceof TargetUnavailableError ? "unavailable: " : "";
    result.error = `${unavailable}${errorText(error)}`;
    progress(`${definition.name}: FAILED — ${result.error}`);
  } finally {
    if (running !== null) await running.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
  return result;
}

function cacheResetNote(result: BenchResult, options: BenchOptions): string {
  const resets = result.targets.flatMap((target) => [
    ...target.roundRows.map((row) => row.cacheReset),
    ...target.snapshotRows.flatMap((row) => (row.kind === "writes" ? row.rounds.map((round) => round.measured.cacheReset) : [])),
    ...target.operationRows.flatMap((row) => row.cacheResets),
  ]);
  const methods = [...new Set(resets.map((reset) => reset.method))].join(", ") || "none run";
  const after = resets.map((reset) => reset.residentBytesAfter);
  const verified = after.every((bytes) => bytes !== null)
    ? `fincore after each reset: at most ${Math.max(0, ...(after as number[]))} bytes of the image resident`
    : "not verified (no fincore)";
  return `--cache-reset ${options.cacheReset}; used: ${methods}; ${verified} over ${resets.length} jobs`;
}

async function main(argv: readonly string[]): Promise<number> {
  const parsed = optionsParse(argv);
  if (parsed === "help") {
    process.stdout.write(usage);
    return 0;
  }
  const options = parsed;
  const definitions = options.targets.map((name) => targetsAll.find((target) => target.name === name) as TargetDefinition);
  const fincoreAvailable = await toolsCheck(definitions);
  if (options.cacheReset === "drop" && !dropCachesWritable()) throw new SetupError("--cache-reset drop needs a writable /proc/sys/vm/drop_caches (root)");
  mkdirSync(options.tempParent, { recursive: true });
  const tempDir = mkdtempSync(join(options.tempParent, "lockstep-bench-"));
  const interrupted = (signal: NodeJS.Signals) => {
    childrenKillAll();
    rmSync(tempDir, { recursive: true, force: true });
    process.stderr.write(`bench: interrupted by ${signal}\n`);
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  try {
    spaceCheck(tempDir, options, definitions);
    const imagePath = join(tempDir, "bench.img");
    progress(`writing a ${options.imageSizeBytes / 2 ** 20} MiB image at ${imagePath}`);
    await imageCreate(imagePath, options.imageSizeBytes);
    const rows = rowsAll.filter((row) => options.rows.includes(row.name));
    const syncRows = syncRowsAll.filter((row) => options.rows.includes(row.name));
    const snapshotRows = snapshotRowsAll.filter((row) => options.rows.includes(row.name));
    const operationRows = operationRowsAll.filter((row) => options.rows.includes(row.name));
    const result: BenchResult = {
      command: ["npm run bench", ...(argv.length > 0 ? ["--", ...argv] : [])].join(" "),
      startedAt: new Date().toISOString(),
      finishedAt: "",
      settings: {
        targets: options.targets, rows: options.rows, runtimeSeconds: options.runtimeSeconds, rampSeconds: options.rampSeconds,
        imageMiB: options.imageSizeBytes / 2 ** 20, memoryGiB: options.memoryCheck ? options.memoryWriteBytes / 1024 ** 3 : 0,
        cacheReset: options.cacheReset, rawEngine: options.rawEngine, uvIoUring: options.uvIoUring, quick: options.quick, rounds: options.rounds,
      },
      machine: await machineDescribe(tempDir, repoRoot),
      cacheResetNote: "",
      rows,
      syncRows,
      snapshotRows,
      operationRows,
      targets: [],
      ratios: [],
    };
    for (const definition of definitions) {
      if (nothingToRun(definition, options)) {
        progress(`${definition.name}: none of the selected rows applies to it; skipped`);
        continue;
      }
      result.targets.push(await targetRun(definition, options, tempDir, imagePath, fincoreAvailable, 1));
    }
    // Later rounds run every target's fio rows again, in the same order, so that each target
    // is measured at several moments of the run; the tables show each row's median round.
    for (let round = 2; round <= options.rounds; round += 1) {
      for (const target of result.targets) {
        const definition = definitions.find((candidate) => candidate.name === target.name) as TargetDefinition;
        if (target.error !== null || fioRowsOf(definition, options).length === 0) continue;
        const again = await targetRun(definition, options, tempDir, imagePath, fincoreAvailable, round);
        target.rows.push(...again.rows);
        if (again.error !== null) target.error = `round ${round}: ${again.error}`;
      }
    }
    for (const target of result.targets) roundsMedian(target);
    result.finishedAt = new Date().toISOString();
    result.ratios = ratiosCompute(rows, result.targets, ratioPairs);
    result.cacheResetNote = cacheResetNote(result, options);
    process.stdout.write(`${textReport(result)}\n`);
    const resultPath = options.resultPath ?? join(repoRoot, "bench", "results", "latest.json");
    mkdirSync(dirname(resultPath), { recursive: true });
    jsonWrite(resultPath, result);
    progress(`wrote ${resultPath}`);
    if (options.docs) {
      const blockTargetNames = [...replicationTargetNames, ...snapshotTargetNames, ...operationsTargetNames]; // each has its own block of the figures
      const blocksOnly = options.targets.some((name) => blockTargetNames.includes(name)) &&
        options.targets.every((name) => blockTargetNames.includes(name) || name === "lockstep");
      docsFiguresWrite(join(repoRoot, "docs", "BENCHMARKS.md"), result, "# Benchmarks\n", {
        dataPath: !blocksOnly, replicationTargets: replicationTargetNames, snapshotTargets: snapshotTargetNames, operationsTargets: operationsTargetNames,
      });
      progress("updated docs/BENCHMARKS.md");
    }
    return result.targets.some((target) => target.error !== null) ? 1 : 0;
  } finally {
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
    rmSync(tempDir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    const setup = error instanceof UsageError || error instanceof SetupError;
    process.stderr.write(`bench: ${errorText(error)}\n${error instanceof UsageError ? usage : ""}`);
    childrenKillAll();
    process.exit(setup ? 2 : 1);
  },
);
