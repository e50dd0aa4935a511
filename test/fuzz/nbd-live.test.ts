// NBD fuzzing against a real `lockstep serve` (nbd-live-fuzz.ts): mutated handshakes and mutated
// request streams, one connection each; after each, the node is alive, a fresh connection reads
// the model's bytes back, and the image and the log changed exactly as the oracle says (not at
// all for a mutant that runs no valid change). A fixed seed and a few hundred mutants here;
// `npm run fuzz` runs it for minutes with any seed.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { cleanup, tempDir } from "../e2e/harness.js";
import { fuzzBudget, fuzzSeed } from "./budget.js";
import { nbdCampaignReport, nbdLiveCampaign, type NbdTarget, nbdTargetStart } from "./nbd-live-fuzz.js";

const seed = fuzzSeed(20_240_602);
const budget = fuzzBudget({ mutants: 200 });

describe("NBD fuzzing against lockstep serve", () => {
  let dir: string;
  let target: NbdTarget;

  before(async () => {
    dir = tempDir("fuzz-nbd");
    target = await nbdTargetStart(dir);
  });

  after(async () => {
    await target?.node.stop();
    cleanup(dir);
  });

  it("survives mutated handshakes and requests: probes answered, image and log changed only as addressed", async () => {
    const started = Date.now();
    const result = await nbdLiveCampaign(target, seed, budget);
    nbdCampaignReport(result, seed, Date.now() - started);
    assert.ok(result.mutants > 0 && result.probes === result.mutants);
    assert.ok(result.mutantsWithoutChange > 0);
  });
});
