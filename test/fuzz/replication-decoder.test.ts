// The replication decoder under seeded structured mutants, in process (replication-decoder-fuzz.ts):
// every mutant ends in a FrameError or in frames and messages that re-encode to the exact bytes
// sent; never another exception, never more memory than one frame. A fixed seed, a few thousand
// mutants: seconds. `npm run fuzz` runs the same campaign for minutes with any seed.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fuzzBudget, fuzzSeed } from "./budget.js";
import { decoderCampaignReport, replicationDecoderCampaign } from "./replication-decoder-fuzz.js";

const seed = fuzzSeed(20_240_601);
const mutants = 20_000;
const budget = fuzzBudget({ mutants });

describe("replication decoder fuzzing (in process)", () => {
  it(`${mutants} mutants of every message kind: a FrameError or a canonical message, nothing else`, () => {
    const started = Date.now();
    const result = replicationDecoderCampaign(seed, budget);
    decoderCampaignReport(result, seed, Date.now() - started);
    if (budget.only !== undefined) return; // a replay: it passed
    assert.ok(result.frameErrors > result.mutants / 2, "most mutants are malformed");
    for (const reason of ["magic", "headerChecksum", "payloadChecksum", "sequence", "size", "truncated", "length", "field", "record"]) {
      assert.ok((result.reasons.get(reason) ?? 0) > 0, `some mutants reach the ${reason} check`);
    }
  });
});
