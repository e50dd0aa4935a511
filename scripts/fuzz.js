#!/usr/bin/env node
// `npm run fuzz -- --minutes M [--seed S] [--campaign NAME] [--mutant I]`: the fuzz campaigns of
// the default suite (test/fuzz/), each for its share of M minutes (default 5) with seed S
// (default: a random one, printed first): the replication decoder in process, NBD against a
// `lockstep serve`, replication against a secondary. Each campaign stops on its own when its
// time is up (set-up and final checks add seconds); its test file stops every process it started.
// A failure prints the campaign, the seed, the mutant's index and its bytes in hex;
// `--campaign NAME --seed S --mutant I` runs that one mutant again.

import { spawnSync } from "node:child_process";
import { randomInt } from "node:crypto";

const campaigns = [
  { name: "replication-decoder", file: "dist/test/fuzz/replication-decoder.test.js", share: 0.2 },
  { name: "nbd", file: "dist/test/fuzz/nbd-live.test.js", share: 0.4 },
  { name: "replication-live", file: "dist/test/fuzz/replication-live.test.js", share: 0.4 },
];
const setupMsMax = 5 * 60_000; // per campaign, on top of its share: start-up, checkpoints, shutdown

function option(name) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : undefined;
}

function usage(message) {
  console.error(`error USAGE: ${message}`);
  process.exit(2);
}

const minutes = Number(option("minutes") ?? 5);
if (!(minutes > 0)) usage("--minutes takes a positive number");
const seedText = option("seed");
const seed = seedText === undefined ? randomInt(2 ** 32) : Number(seedText);
if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) usage("--seed takes a whole number below 2^32");
const only = option("campaign");
if (only !== undefined && !campaigns.some((campaign) => campaign.name === only)) usage(`--campaign is one of ${campaigns.map((campaign) => campaign.name).join(", ")}`);
const mutant = option("mutant");
if (mutant !== undefined && (only === undefined || seedText === undefined || !/^\d+$/.test(mutant))) usage("--mutant I replays one mutant: give --campaign and --seed too");

const selected = campaigns.filter((campaign) => only === undefined || campaign.name === only);
const shareTotal = selected.reduce((sum, campaign) => sum + campaign.share, 0);
if (mutant === undefined) console.log(`# fuzz: seed ${seed}, ${minutes} minute(s) (again: npm run fuzz -- --minutes ${minutes} --seed ${seed}${only ? ` --campaign ${only}` : ""})`);
else console.log(`# fuzz: replaying mutant ${mutant} of campaign ${only}, seed ${seed}`);
for (const campaign of selected) {
  const durationMs = Math.round((minutes * 60_000 * campaign.share) / shareTotal);
  const env = { ...process.env, LOCKSTEP_FUZZ_SEED: String(seed), ...(mutant === undefined ? { LOCKSTEP_FUZZ_MS: String(durationMs) } : { LOCKSTEP_FUZZ_MUTANT: mutant }) };
  const result = spawnSync(process.execPath, ["--test", `--test-timeout=${durationMs + setupMsMax}`, "--test-force-exit", campaign.file], { stdio: "inherit", env });
  if (result.status !== 0) {
    console.error(`# fuzz: campaign ${campaign.name} failed with seed ${seed} (the mutant is in the output above)`);
    process.exit(result.status ?? 1);
  }
}
