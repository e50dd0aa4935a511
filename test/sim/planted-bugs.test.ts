// Each planted bug (src/planted-bugs.ts: one-line hooks in the real code) switched on makes the
// simulator report a violation within a bounded number of seeds; switched off, those seeds
// pass (test/sim/simulator.test.ts and the first seeds here). Shows that the simulator's
// checks catch the kind of bug each stands for.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type PlantedBugName, plantedBugNames, plantedBugsOn } from "../../src/planted-bugs.js";
import { drawSettings } from "../../src/sim/sim-settings.js";
import { simulate } from "../../src/sim/simulation.js";

const seedsMax = 20;
const steps = 100;
// Bugs in the activity map's cooling show only when it cools: those run with a small map.
const activityKeep: Partial<Record<PlantedBugName, number>> = { "cool-unsynced-image": 1 };

describe("planted bugs", () => {
  const catching: { seed: number; keep: number | undefined }[] = []; // the seeds that caught one, and their map's keep

  it(`each is caught within ${seedsMax} seeds × ${steps} steps`, async () => {
    const caught: string[] = [];
    for (const bug of plantedBugNames as readonly PlantedBugName[]) {
      let found: string | null = null;
      for (let seed = 1; seed <= seedsMax && found === null; seed++) {
        const result = await simulate(drawSettings(seed, steps, activityKeep[bug]), { plantedBugs: [bug] });
        if (result.violation === null) continue;
        found = `seed ${result.seed}: ${result.violation.slice(0, 160)}`;
        catching.push({ seed, keep: activityKeep[bug] });
      }
      console.log(`${bug}: ${found ?? "NOT caught"}`);
      if (found !== null) caught.push(bug);
    }
    assert.deepEqual(plantedBugsOn(), [], "switched off again after each run");
    console.log(`${caught.length}/${plantedBugNames.length} planted bugs caught`);
    assert.equal(caught.length, plantedBugNames.length, `not caught: ${plantedBugNames.filter((bug) => !caught.includes(bug)).join(", ")}`);
  });

  it("switched off, the seeds that caught them pass", async () => {
    for (const { seed, keep } of catching) {
      const result = await simulate(drawSettings(seed, steps, keep));
      assert.equal(result.violation, null, `seed ${seed}: ${result.violation}`);
    }
  });
});
