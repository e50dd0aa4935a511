// `npm run sim`: the deterministic simulator from the command line.
//
//   npm run sim -- --seed N [--steps M] [--verbose]     one seed, replayed exactly
//   npm run sim -- --seeds K [--from S] [--steps M]     K seeds: "K seeds × M steps, V violations"
//   --planted-bug NAME                                 with a planted bug (src/planted-bugs.ts; or
//                                                      LOCKSTEP_PLANTED_BUG=NAME in the environment)
//   --lenient-twins                                    twins left wrong by a missed operation are reported, not violations
//                                                      (how builds before twin builds after a resync were judged)
//   --all-disk-faults                                  the primary's volumes and snapshot stores fail too
//   --activity-keep N                                  the activity map cools down to N hot extents of 16 KiB
//                                                      (default: the real 512 of 4 MiB, which never cool here)
//
// Exit status 1 when any seed violated an invariant; every failing seed is printed with its
// violation and the end of its trace, and replays with --seed.

import { parseArgs } from "node:util";
import { type PlantedBugName, plantedBugNames } from "../planted-bugs.js";
import { describeSettings, drawSettings } from "./sim-settings.js";
import { activityExtentsMax } from "../constants.js";
import { type SimResult, simulate } from "./simulation.js";

function fail(message: string): never {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

function count(text: string | undefined, fallback: number, name: string): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0) fail(`--${name} takes a whole number`);
  return value;
}

function printFailure(result: SimResult, steps: number, flags: string): void {
  process.stdout.write(`seed ${result.seed}: VIOLATION after ${result.stepsRun} steps: ${result.violation}\n`);
  for (const line of result.traceTail) process.stdout.write(`    ${line}\n`);
  process.stdout.write(`  replay: npm run sim -- --seed ${result.seed} --steps ${steps}${flags}\n`);
}

const usage = `usage: npm run sim -- --seed N [--steps M] [--verbose]
       npm run sim -- --seeds K [--from S] [--steps M]
options: --planted-bug NAME (${plantedBugNames.join(", ")}), --lenient-twins, --all-disk-faults,
         --activity-keep N (the activity map keeps N hot extents of 16 KiB; default the real shape)
`;

function parsedArgs(): ReturnType<typeof parseSimArgs> {
  try {
    return parseSimArgs();
  } catch (error) {
    fail(`${(error as Error).message}\n${usage}`); // an unknown option or a missing value: one line and the usage
  }
}

function parseSimArgs() {
  return parseArgs({
    options: {
      seed: { type: "string" },
      seeds: { type: "string" },
      from: { type: "string" },
      steps: { type: "string" },
      "planted-bug": { type: "string", multiple: true },
      "lenient-twins": { type: "boolean" },
      "all-disk-faults": { type: "boolean" },
      verbose: { type: "boolean" },
      "activity-keep": { type: "string" },
      help: { type: "boolean" },
    },
  });
}

async function main(): Promise<void> {
  const { values } = parsedArgs();
  if (values.help === true) {
    process.stdout.write(usage);
    return;
  }
  const steps = count(values.steps, 200, "steps");
  const planted = values["planted-bug"] as PlantedBugName[] | undefined;
  for (const name of planted ?? []) if (!plantedBugNames.includes(name)) fail(`unknown planted bug ${name} (known: ${plantedBugNames.join(", ")})`);
  const activityKeep = values["activity-keep"] === undefined ? undefined : count(values["activity-keep"], 0, "activity-keep");
  if (activityKeep !== undefined && (activityKeep < 1 || activityKeep >= activityExtentsMax)) fail(`--activity-keep takes 1 to ${activityExtentsMax - 1}`);
  const flags = [...(planted ?? []).map((name) => ` --planted-bug ${name}`), values["lenient-twins"] === true ? " --lenient-twins" : "", values["all-disk-faults"] === true ? " --all-disk-faults" : "", activityKeep === undefined ? "" : ` --activity-keep ${activityKeep}`].join("");
  const options = { plantedBugs: planted, strictTwins: values["lenient-twins"] !== true, allDiskFaults: values["all-disk-faults"] ?? false };
  if (values.seed !== undefined) {
    const settings = drawSettings(count(values.seed, 0, "seed"), steps, activityKeep);
    process.stdout.write(`seed ${settings.seed}: ${describeSettings(settings)}\n`);
    const result = await simulate(settings, options);
    if (values.verbose === true) for (const line of result.traceTail) process.stdout.write(`    ${line}\n`);
    if (result.violation !== null) printFailure(result, steps, flags);
    process.stdout.write(`seed ${result.seed}: ${result.violation === null ? "ok" : "VIOLATION"}${result.gap === null ? "" : " (known gap met)"}, ${result.stepsRun} steps, ${(result.virtualMs / 1000).toFixed(1)} s simulated in ${(result.elapsedMs / 1000).toFixed(2)} s, trace ${result.traceHash}\n`);
    process.stdout.write(`  ${JSON.stringify(result.counts)}\n`);
    if (Object.keys(result.errors).length > 0) process.stdout.write(`  client errors ${JSON.stringify(result.errors)}\n`);
    process.exit(result.violation === null ? 0 : 1);
  }
  const seeds = count(values.seeds, 20, "seeds");
  const from = count(values.from, 1, "from");
  let violations = 0;
  let gaps = 0;
  const started = performance.now();
  const hashes: string[] = [];
  for (let seed = from; seed < from + seeds; seed++) {
    const result = await simulate(drawSettings(seed, steps, activityKeep), options);
    hashes.push(result.traceHash);
    if (result.gap !== null) gaps += 1;
    if (result.violation !== null) {
      violations += 1;
      printFailure(result, steps, flags);
    } else if (values.verbose === true) {
      process.stdout.write(`seed ${seed}: ok ${(result.elapsedMs / 1000).toFixed(2)} s ${result.traceHash}${result.gap === null ? "" : ` (gap: ${result.gap})`}${result.volumeGap === null ? "" : ` (${result.volumeGap})`}\n`);
    }
  }
  const { createHash } = await import("node:crypto");
  const trace = createHash("sha256").update(hashes.join("\n")).digest("hex").slice(0, 16);
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(`${seeds} seeds × ${steps} steps, ${violations} violations (seeds ${from}..${from + seeds - 1}${options.strictTwins ? "" : `; ${gaps} met a known gap of missed twins`}), trace ${trace}, ${seconds.toFixed(1)} s (${(seconds / seeds).toFixed(2)} s per seed)\n`);
  process.exit(violations === 0 ? 0 : 1);
}

await main();
