#!/usr/bin/env node
// `npm run soak -- --trials N`: the kill -9 crash trials of the default suite, N times over
// (default 200), in both durability modes. Bounded: each trial stops itself within a minute.

import { spawnSync } from "node:child_process";

const at = process.argv.indexOf("--trials");
const trials = at > 0 ? Number(process.argv[at + 1]) : 200;
if (!Number.isInteger(trials) || trials < 1) {
  console.error("error USAGE: --trials takes a whole number");
  process.exit(2);
}
const result = spawnSync(process.execPath, ["--test", "dist/test/e2e/crash.test.js"], {
  stdio: "inherit",
  env: { ...process.env, LOCKSTEP_CRASH_TRIALS: String(trials) },
});
process.exit(result.status ?? 1);
