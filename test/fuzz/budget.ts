// How long a fuzz test file runs: its fixed seed and count in the default suite; what
// scripts/fuzz.js asks for through the environment in a long run or a replay.
//
//   LOCKSTEP_FUZZ_SEED=S        the campaign's seed (default: the file's fixed seed)
//   LOCKSTEP_FUZZ_MS=N          run mutants for N ms instead of the fixed count
//   LOCKSTEP_FUZZ_MUTANT=I      run mutant I only (a replay of a reported failure)

import type { Budget } from "./report.js";

export function fuzzSeed(fixed: number): number {
  const value = process.env.LOCKSTEP_FUZZ_SEED;
  return value === undefined || value === "" ? fixed : Number(value) >>> 0;
}

export function fuzzBudget(fixed: Budget): Budget {
  const only = process.env.LOCKSTEP_FUZZ_MUTANT;
  if (only !== undefined && only !== "") return { only: Number(only) };
  const durationMs = process.env.LOCKSTEP_FUZZ_MS;
  if (durationMs !== undefined && durationMs !== "") return { durationMs: Number(durationMs) };
  return fixed;
}

