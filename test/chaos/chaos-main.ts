// `npm run chaos -- --minutes M [--seed S] [--trials N] [--trial-seconds T] [--planted-bug NAME]
// [--keep] [--dir DIR]`: process-level chaos trials (chaos-trial.ts) one after another until
// the time is spent. Trial i plays seed S + i (S random unless given), so a failing trial is
// replayed alone with `--seed <its seed> --trials 1 --trial-seconds <T>`. Every figure is a
// line starting with "# chaos:". A failing trial keeps its directory (events.log, each node's
// node.log, the writer's progress files, the images); a passing one is removed (--keep keeps
// all). With --planted-bug, every node runs with LOCKSTEP_PLANTED_BUG=NAME and the run stops
// at the first trial that catches it.
//
// Exit code: 0 when every trial passed (with --planted-bug: when one caught it: an acknowledged
// or flushed write lost, an image no prefix, a twin or a replica unequal), 1 otherwise, 2 for a
// usage error or nodes that would not start with the planted bug. Every process it started is
// stopped by PID, also on SIGINT/SIGTERM.

import { spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { tempDir } from "../e2e/harness.js";
import { figuresZero, runTrial, type TrialFigures, type TrialResult } from "./chaos-trial.js";
import { describePlan, trialChaosMsMax, trialChaosMsMin, trialPlan } from "./trial-plan.js";

const recoveryReserveMs = 30_000; // setup, recovery, drain and checks of a typical trial
const trialSecondsDefault = 20;

interface Arguments {
  minutes: number;
  seed: number;
  trialsMax: number;
  trialMs: number;
  plantedBug: string | undefined;
  keep: boolean;
  dir: string | undefined;
}

function usage(message: string): never {
  console.error(`error USAGE: ${message}`);
  console.error("usage: npm run chaos -- --minutes M [--seed S] [--trials N] [--trial-seconds T] [--planted-bug NAME] [--keep] [--dir DIR]");
  process.exit(2);
}

function parseArguments(argv: readonly string[]): Arguments {
  const values = new Map<string, string>();
  const flags = new Set<string>();
  for (let index = 0; index < argv.length; index++) {
    const name = argv[index]!;
    if (name === "--keep") flags.add(name);
    else if (["--minutes", "--seed", "--trials", "--trial-seconds", "--planted-bug", "--dir"].includes(name) && index + 1 < argv.length) values.set(name, argv[++index]!);
    else usage(`unknown or incomplete argument ${name}`);
  }
  const number = (name: string, fallback: number, valid: (value: number) => boolean): number => {
    const value = values.has(name) ? Number(values.get(name)) : fallback;
    if (!valid(value)) usage(`${name} ${values.get(name)} is out of range`);
    return value;
  };
  const trialSeconds = number("--trial-seconds", trialSecondsDefault, (value) => value * 1000 >= trialChaosMsMin && value * 1000 <= trialChaosMsMax);
  return {
    minutes: number("--minutes", 5, (value) => value > 0 && value <= 24 * 60),
    seed: number("--seed", randomInt(0, 0x1_0000_0000 - 100_000), (value) => Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff),
    trialsMax: number("--trials", Number.MAX_SAFE_INTEGER, (value) => Number.isInteger(value) && value >= 1),
    trialMs: Math.round(trialSeconds * 1000),
    plantedBug: values.get("--planted-bug"),
    keep: flags.has("--keep"),
    dir: values.get("--dir"),
  };
}

function checkTools(): void {
  const missing = [
    spawnSync("sh", ["-c", "command -v qemu-img"]).status === 0 ? null : "qemu-utils",
    spawnSync("/usr/bin/python3", ["-c", "import nbd"]).status === 0 ? null : "python3-libnbd",
  ].filter((name) => name !== null);
  if (missing.length > 0) {
    console.error(`error: the chaos trials need ${missing.join(" and ")} (npm test installs them; or apt-get install ${missing.join(" ")})`);
    process.exit(1);
  }
}

function figuresLine(figures: TrialFigures): string {
  return `${figures.acknowledged} writes acknowledged, ${figures.flushedVerified} flushed writes verified, ${figures.lost} lost, ${figures.prefixViolations} prefix violations, ${figures.kills} kill -9, ${figures.stops} SIGSTOP, ${figures.linkCuts} link cuts, ${figures.samples} frozen images checked (${figures.samplesSkipped} skipped: replica resyncing), ${figures.snapshotsChecked} snapshots checked with their twins (${figures.twinMismatches} twins differ), ${figures.compareMismatches} replicas differ after drain, ${figures.overflows} log overflows, ${figures.unflushedGone} unflushed writes gone after a primary kill -9`;
}

function sum(results: readonly TrialResult[]): TrialFigures {
  const total = figuresZero();
  for (const result of results) for (const key of Object.keys(total) as (keyof TrialFigures)[]) total[key] += result.figures[key];
  return total;
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parseArguments(argv);
  checkTools();
  const baseDir = args.dir ?? tempDir("chaos");
  mkdirSync(baseDir, { recursive: true });
  const startMs = performance.now();
  const deadlineMs = startMs + args.minutes * 60_000;
  console.log(`# chaos: up to ${args.minutes} min, trials of ${args.trialMs / 1000} s from seed ${args.seed}${args.plantedBug === undefined ? "" : `, planted bug ${args.plantedBug}`}, in ${baseDir}`);
  const results: TrialResult[] = [];
  for (let index = 0; index < args.trialsMax; index++) {
    const remainingMs = deadlineMs - performance.now() - recoveryReserveMs;
    const chaosMs = Math.min(args.trialMs, Math.floor(remainingMs));
    if (chaosMs < trialChaosMsMin && results.length > 0) break;
    const plan = trialPlan(args.seed + index, Math.max(chaosMs, trialChaosMsMin));
    const dir = join(baseDir, `trial-${plan.seed}`);
    mkdirSync(dir);
    const result = await runTrial(plan, { dir, plantedBug: args.plantedBug });
    results.push(result);
    const head = `# chaos: trial ${index + 1} seed ${plan.seed} (${describePlan(plan)}): ${figuresLine(result.figures)}; ${(result.elapsedMs / 1000).toFixed(1)} s`;
    if (result.ok) {
      console.log(`${head}: ok`);
      if (!args.keep) rmSync(dir, { recursive: true, force: true });
      continue;
    }
    console.log(`${head}: FAILED`);
    for (const failure of result.failures) console.log(`# chaos:   ${failure.split("\n")[0]}`);
    console.log(`# chaos:   kept ${dir}; replay: npm run chaos -- --seed ${plan.seed} --trials 1 --trial-seconds ${plan.chaosMs / 1000}${args.plantedBug === undefined ? "" : ` --planted-bug ${args.plantedBug}`}`);
    if (result.setupFailed && args.plantedBug !== undefined) {
      console.log(`# chaos: the nodes did not come up with LOCKSTEP_PLANTED_BUG=${args.plantedBug} (an unknown name?): stopping`);
      return 2;
    }
    if (args.plantedBug !== undefined && result.violated) break; // caught it
  }
  const total = sum(results);
  const failed = results.filter((result) => !result.ok);
  const minutes = ((performance.now() - startMs) / 60_000).toFixed(1);
  console.log(`# chaos: ${results.length} trials, ${total.flushedVerified} flushed writes verified, ${total.lost} lost, ${total.prefixViolations} prefix violations, ${total.kills} kill -9, ${total.stops} SIGSTOP, ${total.linkCuts} link cuts (${total.acknowledged} writes acknowledged, ${total.samples} frozen images checked, ${total.snapshotsChecked} snapshots checked, ${total.twinMismatches} twins differ) in ${minutes} min; seeds ${args.seed}..${args.seed + results.length - 1}; ${failed.length} failed${failed.length > 0 ? `: seeds ${failed.map((result) => result.plan.seed).join(", ")}` : ""}`);
  if (args.dir === undefined && readdirSync(baseDir).length === 0) rmSync(baseDir, { recursive: true, force: true });
  if (args.plantedBug === undefined) return failed.length === 0 ? 0 : 1;
  const catcher = results.find((result) => result.violated);
  console.log(`# chaos: planted bug ${args.plantedBug}: ${catcher !== undefined ? `caught by trial seed ${catcher.plan.seed}: ${catcher.failures[0]!.split("\n")[0]}` : `not caught in ${results.length} trials`}`);
  return catcher !== undefined ? 0 : 1;
}

// Ctrl-C or a TERM: exit, and test/child-process.ts kills every node and writer by PID.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    console.log(`# chaos: ${signal}: stopping every process started`);
    process.exit(130);
  });
}

process.exit(await main(process.argv.slice(2))); // whatever handle is still open (none should be)
