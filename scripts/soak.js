#!/usr/bin/env node
// `npm run soak -- --trials N [--chaos-rounds M]`: the kill -9 crash trials of the default
// suite, N times over (default 200), in both durability modes; then the replication prefix
// checks under M seeded fault-proxy schedules per link mode (default 10). Bounded: each trial
// stops itself within a minute, each schedule within about 20 s.

import { spawnSync } from "node:child_process";

const at = process.argv.indexOf("--trials");
const trials = at > 0 ? Number(process.argv[at + 1]) : 200;
if (!Number.isInteger(trials) || trials < 1) {
  console.error("error USAGE: --trials takes a whole number");
  process.exit(2);
}
const chaosAt = process.argv.indexOf("--chaos-rounds");
const chaosRounds = chaosAt > 0 ? Number(process.argv[chaosAt + 1]) : 10;
if (!Number.isInteger(chaosRounds) || chaosRounds < 0) {
  console.error("error USAGE: --chaos-rounds takes a whole number");
  process.exit(2);
}
const crash = spawnSync(process.execPath, ["--test", "dist/test/e2e/crash.test.js"], {
  stdio: "inherit",
  env: { ...process.env, LOCKSTEP_CRASH_TRIALS: String(trials) },
});
if (crash.status !== 0 || chaosRounds === 0) process.exit(crash.status ?? 1);
const chaos = spawnSync(process.execPath, ["--test", "--test-name-pattern=prefix of the primary", "dist/test/e2e/replication-faults.test.js"], {
  stdio: "inherit",
  env: { ...process.env, LOCKSTEP_CHAOS_ROUNDS: String(chaosRounds) },
});
process.exit(chaos.status ?? 1);
