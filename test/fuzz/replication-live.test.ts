// Replication fuzzing against a real secondary (replication-live-fuzz.ts): the fuzzer dials it
// over TLS with the primary's half of the link credential and sends mutated frames at each
// point of the handshake; each must get exactly the answer a correct secondary gives (the
// reject of the in-process decoder and state machine, or none), then a fresh connection finds
// the secondary at the same log position, its image and log untouched. A fixed seed here;
// `npm run fuzz` runs it for minutes with any seed.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { cleanup, tempDir } from "../e2e/harness.js";
import { fuzzBudget, fuzzSeed } from "./budget.js";
import { replicationCampaignReport, replicationLiveCampaign, type ReplicationTarget, replicationTargetStart } from "./replication-live-fuzz.js";

const seed = fuzzSeed(20_240_603);
const budget = fuzzBudget({ mutants: 200 });

describe("replication fuzzing against a secondary lockstep serve", () => {
  let dir: string;
  let target: ReplicationTarget;

  before(async () => {
    dir = tempDir("fuzz-replication");
    target = await replicationTargetStart(dir);
  });

  after(async () => {
    await target?.cluster.stop();
    cleanup(dir);
  });

  it("answers every mutated frame as a correct secondary does, and changes nothing", async () => {
    const started = Date.now();
    const result = await replicationLiveCampaign(target, seed, budget);
    replicationCampaignReport(result, seed, Date.now() - started);
    assert.ok(result.sent > 0 && result.probes === result.sent);
  });
});
