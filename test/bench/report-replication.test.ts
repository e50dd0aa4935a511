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

  it("with CPU figures: the budget the goal leaves for the link, and the ratio the primary's event loop alone allows", () => {
    const result = resultOf({ lockstep: [80_000], "lockstep-async": [40_000] });
    const figures = (target: string, cpu: Record<string, number | null>, clientCpuPercent: number) => {
      const entry = result.targets.find((candidate) => candidate.name === target)!.rows[0] as unknown as Record<string, unknown>;
      Object.assign(entry, cpu);
      (entry.figures as Record<string, number>).clientCpuPercent = clientCpuPercent;
    };
    // no link: 12 µs per write (10 on its loop), fio 40 % at 80k = 5 µs; async: 20 µs (12.5 on
    // the loop), the secondary 60 % at 40k = 15 µs, fio 20 % = 5 µs
    figures("lockstep", { serverCpuUsPerIo: 12, serverLoopCpuUsPerIo: 10, peerCpuPercent: null }, 40);
    figures("lockstep-async", { serverCpuUsPerIo: 20, serverLoopCpuUsPerIo: 12.5, peerCpuPercent: 60 }, 20);
    (result as unknown as { machine: { processors: number } }).machine = { processors: 2 };
    for (const target of result.targets) target.roundRows = [];
    const notes = asyncRatioNotes(result, row);
    assert.equal(notes[0], "async / no link: 0.50 (goal ≥ 0.85: NOT met)");
    // 2 processors at 0.85 × 80k: 29.4 µs per write; less 12 and 5: 12.4 for the link, which costs 8 + 15
    assert.match(notes[1]!, /give 29\.4 µs per write; the no-link primary takes 12\.0 and fio 5\.0, leaving 12\.4 µs for the link on both sides; it costs 23\.0 \(primary \+8\.0, secondary 15\.0\)/);
    assert.match(notes[2]!, /10\.0 µs per write with no link, 12\.5 with the async link: .* 0\.80× no link/);
  });

  it("falls back to the one pair of a single-round run", () => {
    const single = resultOf({ lockstep: [50_000], "lockstep-async": [30_000] });
    for (const target of single.targets) target.roundRows = [];
    assert.deepEqual(asyncRatioNotes(single, row), ["async / no link: 0.60 (goal ≥ 0.85: NOT met)"]);
  });
});
