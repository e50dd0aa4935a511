// The replication report's verdict on the async goal: per-round ratios when the run has rounds.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { BenchResult } from "../../bench/report.js";
import { asyncRatioNotes } from "../../bench/report-replication.js";

const row = "randwrite-4k-qd16";

// Only what the note reads: each target's name and its rounds of the row (IOPS, round).
function resultOf(rounds: Record<string, number[]>): BenchResult {
  const targets = Object.entries(rounds).map(([name, iops]) => {
    const roundRows = iops.map((value, index) => ({ row, round: index + 1, figures: { iops: value } }));
    return { name, rows: roundRows.slice(0, 1), roundRows };
  });
  return { targets } as unknown as BenchResult;
}

describe("bench replication report: the async goal", () => {
  it("judges the median of per-round ratios, not the ratio of two median rounds", () => {
    // Medians 32.6k and 31.8k (ratio 0.98) come from different rounds; per round 1.05, 0.44, 0.42.
    const [note] = asyncRatioNotes(resultOf({ lockstep: [32_619, 72_362, 24_390], "lockstep-async": [34_239, 31_831, 10_217] }), row);
    assert.match(note!, /round by round: 1\.05, 0\.44, 0\.42; median 0\.44 \(goal ≥ 0\.85: NOT met\)/);
  });

  it("says met when the rounds' median ratio reaches the goal", () => {
    const [note] = asyncRatioNotes(resultOf({ lockstep: [50_000, 40_000, 60_000], "lockstep-async": [45_000, 20_000, 54_000] }), row);
    assert.match(note!, /median 0\.90 \(goal ≥ 0\.85: met\)/);
  });

  it("falls back to the one pair of a single-round run", () => {
    const single = resultOf({ lockstep: [50_000], "lockstep-async": [30_000] });
    for (const target of single.targets) target.roundRows = [];
    assert.deepEqual(asyncRatioNotes(single, row), ["async / no link: 0.60 (goal ≥ 0.85: NOT met)"]);
  });
});
