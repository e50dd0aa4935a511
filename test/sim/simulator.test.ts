// The deterministic simulator (src/sim/) in the default suite: a short fixed set of seeds keeps
// every invariant it checks, and a seed replays exactly (the same trace hash twice). Many more
// seeds: `npm run sim -- --seeds K --steps M`.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { describeSettings, drawSettings } from "../../src/sim/sim-settings.js";
import { type SimResult, simulate } from "../../src/sim/simulation.js";

const seeds = [1, 2, 3, 4, 5, 8, 9, 16, 20, 21, 23, 25];
const steps = 100;

function explain(result: SimResult): string {
  return `seed ${result.seed} (replay: npm run sim -- --seed ${result.seed} --steps ${steps}): ${result.violation}\n${result.traceTail.join("\n")}`;
}

describe("deterministic simulation of a primary and a secondary", () => {
  it(`keeps every invariant over ${seeds.length} seeds × ${steps} steps`, async () => {
    const started = performance.now();
    for (const seed of seeds) {
      const result = await simulate(drawSettings(seed, steps));
      assert.equal(result.violation, null, explain(result));
      assert.equal(result.stepsRun, steps);
      assert.ok(result.counts.writes! > 0 && result.counts.records! > 0, `seed ${seed} wrote: ${describeSettings(drawSettings(seed, steps))}`);
      assert.equal(result.gap, null, "twins are checked strictly: no gap excuses them");
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(`${seeds.length} seeds × ${steps} steps, 0 violations (twins checked strictly), ${(seconds / seeds.length).toFixed(2)} s per seed`);
  });

  // The real activity map (512 extents of 4 MiB) never cools on the small simulated volumes; a
  // map of 2 extents of 16 KiB cools and re-marks all the time.
  it("keeps every invariant while a small activity map cools, over the first 6 activity-map seeds", async () => {
    let cooled = 0;
    let checked = 0;
    for (let seed = 1; checked < 6; seed++) {
      const settings = drawSettings(seed, steps, 2);
      if (settings.durability !== "activity-map") continue;
      const result = await simulate(settings);
      assert.equal(result.violation, null, `${explain(result)} (with --activity-keep 2)`);
      assert.equal(result.stepsRun, steps);
      cooled += result.counts.extentsCooled!;
      checked += 1;
    }
    assert.ok(cooled > 100, `the map cooled (${cooled} extents)`);
    console.log(`6 activity-map seeds × ${steps} steps at --activity-keep 2: 0 violations, ${cooled} extents cooled`);
  });

  // Seeds that once found a bug, each with what it found (docs/RELIABILITY.md §1). Code changes
  // move a seed's timing, so one may no longer reach its old scenario; they stay as cheap cover.
  const regressions: { seed: number; allDiskFaults?: boolean; steps?: number; activityKeep?: number; found: string }[] = [
    { seed: 1018, found: "redo after a replica crash replayed records over a resync's regions" },
    { seed: 1050, found: "a replica's superseded session restarted its log copy at a stale point" },
    { seed: 1102, found: "a resync's read paired a restore's LSN with the content from before it" },
    { seed: 1141, found: "the same, after a second restore" },
    { seed: 1160, found: "sync writes waiting on a link that turned out to need a resync hung every request" },
    { seed: 1200, found: "a dropped session set a newer resyncing link's state to streaming: every request hung" },
    { seed: 189, found: "a freed snapshot slot was taken by a preserve, then punched: the snapshot read zeroes" },
    { seed: 43, allDiskFaults: true, found: "a write that failed on the volume after logging was counted as applied" },
    { seed: 124, allDiskFaults: true, found: "the same, for a restore" },
    { seed: 93, steps: 300, activityKeep: 1, found: "the checker forgot the hot extents of a recovery that crashed after handing them to the links (with 4 MiB extents)" },
    { seed: 148, steps: 300, activityKeep: 2, found: "an operation redone after a crash on an image that had lost an unflushed write before it (activity-map)" },
    { seed: 391, steps: 300, found: "a resync read at the head of a failed log: the secondary was told it held a record the primary's image lacked" },
  ];
  it(`keeps every invariant on the ${regressions.length} seeds that once found a bug (150 steps unless noted)`, async () => {
    for (const { seed, allDiskFaults, steps = 150, activityKeep, found } of regressions) {
      const result = await simulate(drawSettings(seed, steps, activityKeep), { allDiskFaults: allDiskFaults ?? false });
      assert.equal(result.violation, null, `once found: ${found}\n${explain(result)}`);
      assert.equal(result.stepsRun, steps);
    }
  });

  it("replays a seed exactly: the same trace hash twice", async () => {
    const first = await simulate(drawSettings(3, steps));
    const second = await simulate(drawSettings(3, steps));
    assert.equal(first.violation, null, explain(first));
    assert.ok(first.counts.primaryCrashes! + first.counts.secondaryCrashes! > 0, "the seed crashes a node (a replay through recovery)");
    assert.equal(second.traceHash, first.traceHash, "same seed, same trace");
    assert.deepEqual(second.counts, first.counts);
    console.log(`seed 3 twice: trace ${first.traceHash} and ${second.traceHash}`);
    const other = await simulate(drawSettings(4, steps));
    assert.notEqual(other.traceHash, first.traceHash, "another seed, another trace");
  });
});
