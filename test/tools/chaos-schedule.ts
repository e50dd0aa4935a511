// A seeded chaos schedule for a FaultProxy: a sequence of faults (delay, stall, reset,
// partition), each with a bounded duration and followed by its undoing (delay 0–0, unstall,
// heal), so the link always ends healthy. The plan is a pure function of its options, so a
// failing run is replayed from the seed it logged; chaosRun() only plays the plan on timers.
//
// Faults never overlap: one is in force at a time, then a seeded gap, then the next. That
// keeps each step's effect readable in a log; overlapping faults are a test's own business.

import { performance } from "node:perf_hooks";
import { assert } from "../../src/assert.js";
import { Random } from "../../src/sim/random.js";
import { faultDelayMsMax, type FaultProxy } from "./fault-proxy.js";

export const chaosStepsMax = 10_000; // faults in one plan
export const chaosDurationMsMax = 60 * 60 * 1000;
export const chaosStepMsMax = 60_000; // one gap or one fault's duration

export type ChaosFaultKind = "delay" | "stall" | "reset" | "partition";

export type ChaosAction =
  | { readonly atMs: number; readonly action: "delay"; readonly msMin: number; readonly msMax: number }
  | { readonly atMs: number; readonly action: "stall" | "unstall" | "reset" | "partition" | "heal" };

export interface ChaosOptions {
  seed: number;
  durationMs: number; // every fault is undone by then
  stepsMax: number; // faults, not counting their undoing
  gapMsMax?: number; // between faults; 200
  faultMsMax?: number; // how long a fault lasts; 500
  delayMsMax?: number; // upper end of a delay fault's range; 50
  kinds?: readonly ChaosFaultKind[]; // all four
}

export type ChaosTarget = Pick<FaultProxy, "delay" | "stall" | "unstall" | "reset" | "partition" | "heal">;

export interface ChaosRun {
  readonly applied: readonly ChaosAction[]; // grows as the run goes
  readonly done: Promise<readonly ChaosAction[]>; // settles at the end of the plan or at stop()
  stop(): Promise<readonly ChaosAction[]>; // undoes the fault in force and ends the run
}

const kindsAll: readonly ChaosFaultKind[] = ["delay", "stall", "reset", "partition"];

function validate(options: ChaosOptions): Required<ChaosOptions> {
  const full = { gapMsMax: 200, faultMsMax: 500, delayMsMax: 50, kinds: kindsAll, ...options };
  assert(Number.isInteger(full.seed), "seed is an integer");
  assert(Number.isInteger(full.durationMs) && full.durationMs >= 0 && full.durationMs <= chaosDurationMsMax, "durationMs within chaosDurationMsMax");
  assert(Number.isInteger(full.stepsMax) && full.stepsMax >= 0 && full.stepsMax <= chaosStepsMax, "stepsMax within chaosStepsMax");
  assert(full.gapMsMax >= 0 && full.gapMsMax <= chaosStepMsMax && full.faultMsMax >= 1 && full.faultMsMax <= chaosStepMsMax, "gaps and faults within chaosStepMsMax");
  assert(full.delayMsMax >= 0 && full.delayMsMax <= faultDelayMsMax, "delayMsMax within faultDelayMsMax");
  assert(full.kinds.length > 0, "at least one kind of fault");
  return full;
}

// The whole schedule, in time order, from the seed alone.
export function chaosPlan(options: ChaosOptions): ChaosAction[] {
  const { seed, durationMs, stepsMax, gapMsMax, faultMsMax, delayMsMax, kinds } = validate(options);
  const random = new Random(seed);
  const plan: ChaosAction[] = [];
  let atMs = 0;
  for (let step = 0; step < stepsMax; step++) {
    atMs += random.below(gapMsMax + 1);
    if (atMs >= durationMs) break;
    const kind = kinds[random.below(kinds.length)]!;
    if (kind === "reset") {
      plan.push({ atMs, action: "reset" });
      continue;
    }
    const endMs = Math.min(atMs + 1 + random.below(faultMsMax), durationMs);
    if (kind === "delay") {
      const msMin = random.below(delayMsMax + 1);
      const msMax = msMin + random.below(delayMsMax - msMin + 1);
      plan.push({ atMs, action: "delay", msMin, msMax }, { atMs: endMs, action: "delay", msMin: 0, msMax: 0 });
    } else if (kind === "stall") {
      plan.push({ atMs, action: "stall" }, { atMs: endMs, action: "unstall" });
    } else {
      plan.push({ atMs, action: "partition" }, { atMs: endMs, action: "heal" });
    }
    atMs = endMs;
  }
  return plan;
}

export function chaosApply(target: ChaosTarget, action: ChaosAction): void {
  switch (action.action) {
    case "delay":
      return target.delay(action.msMin, action.msMax);
    case "stall":
      return target.stall();
    case "unstall":
      return target.unstall();
    case "reset":
      return target.reset();
    case "partition":
      return target.partition();
    case "heal":
      return target.heal();
  }
}

// Plays chaosPlan(options) against the proxy: each action at its offset from now.
export function chaosRun(target: ChaosTarget, options: ChaosOptions): ChaosRun {
  const plan = chaosPlan(options);
  const startMs = performance.now();
  const applied: ChaosAction[] = [];
  let next = 0;
  let timer: NodeJS.Timeout | null = null;
  let finish!: (actions: readonly ChaosAction[]) => void;
  const done = new Promise<readonly ChaosAction[]>((resolve) => (finish = resolve));

  const schedule = (): void => {
    if (next === plan.length) {
      timer = null;
      finish(applied);
      return;
    }
    timer = setTimeout(() => {
      const action = plan[next++]!;
      chaosApply(target, action);
      applied.push(action);
      schedule();
    }, Math.max(0, plan[next]!.atMs - (performance.now() - startMs)));
  };
  schedule();

  const stop = async (): Promise<readonly ChaosAction[]> => {
    if (timer === null) return done;
    clearTimeout(timer);
    timer = null;
    const last = applied.at(-1);
    const action = last === undefined ? undefined : undoOf(last, Math.round(performance.now() - startMs));
    if (action !== undefined) {
      chaosApply(target, action);
      applied.push(action);
    }
    finish(applied);
    return done;
  };
  return { applied, done, stop };
}

// The action that ends a fault still in force after `last`, if any.
function undoOf(last: ChaosAction, atMs: number): ChaosAction | undefined {
  switch (last.action) {
    case "delay":
      return last.msMax === 0 ? undefined : { atMs, action: "delay", msMin: 0, msMax: 0 };
    case "stall":
      return { atMs, action: "unstall" };
    case "partition":
      return { atMs, action: "heal" };
    default:
      return undefined;
  }
}
