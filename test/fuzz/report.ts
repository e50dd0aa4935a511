// What a fuzz campaign prints and how it fails. Figures go out as lines starting "# fuzz:" (the
// docs quote them); a failure names the campaign, the seed and the mutant's index (each mutant
// has its own Random, so `--seed S --mutant I` replays it alone) and carries the mutant in hex,
// the whole of it in a file under the temp directory. (A live replication mutant carries the
// secondary's log position and log id, which differ from run to run: its replay repeats the
// same mutation steps on the new values; the hex is the exact bytes that failed.)

import { writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Mutant, mutantHex } from "./mutator.js";

const hexInMessageBytesMax = 1024; // the whole mutant goes to a file beside

export class FuzzFailure extends Error {
  override name = "FuzzFailure";
  constructor(
    readonly campaign: string,
    readonly seed: number,
    readonly index: number,
    readonly mutant: Mutant,
    readonly problem: string,
  ) {
    super(
      [
        `${campaign}: ${problem}`,
        `  seed ${seed}, mutant ${index} (from ${mutant.seedKind}; ${mutant.steps.join(" ")})`,
        `  replay: npm run fuzz -- --campaign ${campaign} --seed ${seed} --mutant ${index}`,
        `  mutant (${mutant.bytes.length} bytes, all of it in ${FuzzFailure.save(campaign, seed, index, mutant.bytes)}): ${mutantHex(mutant.bytes, hexInMessageBytesMax)}`,
      ].join("\n"),
    );
  }

  private static save(campaign: string, seed: number, index: number, bytes: Buffer): string {
    const path = join(tmpdir(), `lockstep-fuzz-${campaign}-${seed}-${index}.hex`);
    try {
      writeFileSync(path, `${bytes.toString("hex")}\n`);
      return path;
    } catch {
      return "(could not be written)";
    }
  }
}

export function fuzzLine(text: string): void {
  console.log(`# fuzz: ${text}`);
}

// Reason counts as "a 12, b 3" (largest first), for a figure line.
export function countsText(counts: ReadonlyMap<string, number>): string {
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([name, count]) => `${name} ${count}`)
    .join(", ");
}

export function mebibytes(bytes: number): string {
  return (bytes / 1024 / 1024).toFixed(0);
}

export function countUp(counts: Map<string, number>, name: string, by = 1): void {
  counts.set(name, (counts.get(name) ?? 0) + by);
}

// How many of `items` to run: a count, or until a deadline (whichever is given).
export interface Budget {
  readonly mutants?: number;
  readonly durationMs?: number; // from the first mutant on
  readonly only?: number; // run just this mutant index (a replay)
}

export function* budgetIndexes(budget: Budget): Generator<number> {
  if (budget.only !== undefined) {
    yield budget.only;
    return;
  }
  const deadlineMs = budget.durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + budget.durationMs;
  for (let index = 0; ; index++) {
    if (budget.mutants !== undefined && index >= budget.mutants) return;
    if (Date.now() >= deadlineMs) return;
    yield index;
  }
}
