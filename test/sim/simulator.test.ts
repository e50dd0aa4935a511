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
