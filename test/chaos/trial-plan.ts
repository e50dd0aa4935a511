// One process-level chaos trial, decided entirely by its seed: the cluster's shape (one or two
// secondaries, each link's mode, the primary's durability and log size), the workload (queue
// depth, FUA share, flush interval), the process faults (kill -9 or SIGSTOP of a node, when
// and for how long) and each link's fault-proxy schedule (test/tools/chaos-schedule.ts). The
// runner (chaos-trial.ts) only plays it on timers, so `--seed S` replays the same trial;
// only the timing of real processes varies between two runs of one seed.
//
// Snapshots are taken at seeded moments too (never while a process fault is under way): each
// must be a prefix of the write order, and each secondary's twin must equal it (DESIGN.md §2.3).
//
// Process faults never overlap each other (one node is down or frozen at a time, then a seeded
// gap), which keeps a post-mortem readable; link faults run on their own schedule meanwhile.

import { assert } from "../../src/assert.js";
import { Random } from "../../src/sim/random.js";
import { type ChaosOptions } from "../tools/chaos-schedule.js";

export type LinkMode = "sync" | "async" | "periodic";
export type NodeName = "primary" | "secondary1" | "secondary2";

export const trialChaosMsMin = 5_000;
export const trialChaosMsMax = 10 * 60 * 1000;
export const processFaultGapMsMax = 4_000; // quiet time between two process faults
export const killDownMsMax = 2_000; // a killed node stays down this long before its restart
export const stopMsMax = 3_000; // a usual SIGSTOP
export const stopLongMs = 11_500; // a rare SIGSTOP past the link's silence limit (10 s)
export const blocksPerTrial = 4096; // a 16 MiB volume
export const snapshotsPerTrialMax = 3;
export const longOutageMsMax = 12_000; // one link fault of a long-outage trial

export interface ProcessFault {
  readonly atMs: number; // from the start of the chaos phase
  readonly kind: "kill" | "stop";
  readonly node: NodeName;
  readonly downMs: number; // kill: until the restart; stop: until SIGCONT
}

export interface TrialPlan {
  readonly seed: number;
  readonly chaosMs: number; // how long faults are injected; the workload runs as long
  readonly secondaries: readonly { readonly name: NodeName; readonly mode: LinkMode; readonly intervalMs: number }[];
  readonly durability: "activity-map" | "write-ahead";
  readonly logSize: "128MiB" | "256MiB" | "1GiB"; // the primary's: a small log lets a long outage overflow
  readonly blocks: number;
  readonly queueDepth: number;
  readonly fuaPercent: number;
  readonly flushEvery: number;
  readonly processFaults: readonly ProcessFault[];
  readonly linkChaos: readonly ChaosOptions[]; // one per secondary, in the same order
  readonly snapshotsAtMs: readonly number[]; // `snapshot create` on the primary (an operation in the stream)
}

const modes: readonly LinkMode[] = ["sync", "async", "periodic"];

export function trialPlan(seed: number, chaosMs: number): TrialPlan {
  assert(Number.isInteger(seed) && seed >= 0 && seed <= 0xffff_ffff, "a trial seed is a u32");
  assert(Number.isInteger(chaosMs) && chaosMs >= trialChaosMsMin && chaosMs <= trialChaosMsMax, "chaosMs within its bounds");
  const random = new Random(seed);
  const secondaryCount = 1 + random.below(2);
  const secondaries = (["secondary1", "secondary2"] as const).slice(0, secondaryCount).map((name) => ({ name, mode: modes[random.below(modes.length)]!, intervalMs: 500 + random.below(1501) }));
  const durability = random.chance(0.5) ? "activity-map" : "write-ahead";
  const logSize = (["128MiB", "256MiB", "1GiB"] as const)[random.below(3)]!;
  const queueDepth = 1 + random.below(8);
  const fuaPercent = random.below(21);
  const flushEvery = 8 + random.below(57);
  const nodes: NodeName[] = ["primary", ...secondaries.map((secondary) => secondary.name)];
  const processFaults = processFaultPlan(random, nodes, chaosMs);
  // A quarter of the trials have link faults long enough to fill the smallest log past the
  // point where a lagging link folds its records into its dirty-region bitmap.
  const longOutages = random.chance(0.25);
  const linkChaos = secondaries.map((_, index) => ({
    seed: (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0,
    durationMs: chaosMs,
    stepsMax: 1000,
    gapMsMax: 1_500,
    faultMsMax: longOutages ? longOutageMsMax : 2_500,
    delayMsMax: 50,
    ...(longOutages ? { kinds: ["partition", "stall", "reset"] as const } : {}),
  }));
  const snapshotsAtMs = Array.from({ length: random.below(snapshotsPerTrialMax + 1) }, () => 1_000 + random.below(chaosMs - 2_000)).sort((a, b) => a - b);
  return { seed, chaosMs, secondaries, durability, logSize: longOutages ? "128MiB" : logSize, blocks: blocksPerTrial, queueDepth, fuaPercent, flushEvery, processFaults, linkChaos, snapshotsAtMs };
}

function processFaultPlan(random: Random, nodes: readonly NodeName[], chaosMs: number): ProcessFault[] {
  const faults: ProcessFault[] = [];
  let atMs = 500 + random.below(1_500);
  while (atMs < chaosMs) {
    const kind = random.chance(0.45) ? "kill" : "stop";
    const node = nodes[random.below(nodes.length)]!;
    const downMs = kind === "kill" ? random.below(killDownMsMax + 1) : random.chance(0.1) ? stopLongMs : 100 + random.below(stopMsMax - 99);
    faults.push({ atMs, kind, node, downMs });
    atMs += downMs + 300 + random.below(processFaultGapMsMax - 299);
  }
  return faults;
}

export function describePlan(plan: TrialPlan): string {
  const links = plan.secondaries.map((secondary) => `${secondary.name} ${secondary.mode}${secondary.mode === "periodic" ? ` ${secondary.intervalMs} ms` : ""}`).join(", ");
  return `${links}; ${plan.durability}, log ${plan.logSize}, QD ${plan.queueDepth}, FUA ${plan.fuaPercent} %, flush every ${plan.flushEvery}, ${plan.processFaults.length} process faults, ${plan.snapshotsAtMs.length} snapshots in ${plan.chaosMs / 1000} s`;
}
