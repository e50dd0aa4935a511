// One simulated run from a seed: a primary and a secondary in this process (sim-primary.ts,
// sim-secondary.ts: the project's own code on simulated disks, clock and network), a client and
// an operator (sim-client.ts), faults (sim-nemesis.ts) and checks (sim-checks.ts).
//
//   start      both nodes fresh; the link's first connection is the initial sync
//   safety     `steps` steps: faults struck inside the step, the client writing throughout,
//              every check after each step
//   healing    faults off, the client stops, every node up (restarted if a disk failed it);
//              the replica must converge within healingMsMax of virtual time; final checks
//
// The first violation ends the run. Everything is drawn from the seed and nothing reads the
// machine's clock, so a run replays exactly: the trace hash (sim-trace.ts) shows it.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { linkCredentialsGenerate } from "../io/link-tls.js";
import { type PlantedBugName, plantedBugsOn, plantedBugsSet } from "../planted-bugs.js";
import type { LinkCredential } from "../replication/link-credential.js";
import { Random } from "./random.js";
import { VolumeLayout } from "./sector-stamp.js";
import { SimChecks } from "./sim-checks.js";
import { SimClient } from "./sim-client.js";
import { SimContext } from "./sim-context.js";
import { SimModel } from "./sim-model.js";
import { SimNemesis } from "./sim-nemesis.js";
import { SimNetwork } from "./sim-network.js";
import { SimPrimary, simGroup } from "./sim-primary.js";
import { SimSecondary } from "./sim-secondary.js";
import type { SimSettings } from "./sim-settings.js";
import { SimStorage } from "./sim-storage.js";
import { SimTrace } from "./sim-trace.js";
import { simEpochMs, SimWorld } from "./sim-world.js";

export interface SimOptions {
  readonly plantedBugs?: readonly PlantedBugName[]; // default: those LOCKSTEP_PLANTED_BUG names
  // Twins left wrong by an operation the link missed count as violations (the default: the end
  // of a resync builds them, docs/DESIGN-NOTES.md §8); false: reported as a known gap instead.
  readonly strictTwins?: boolean;
  // Disk faults may also fail the primary's volumes and snapshot stores. Off by default: a
  // write or an operation that fails there after its record was logged leaves the volume
  // without a change its log (and so the secondary) has, and a checkpoint may release the
  // record before a restart could redo it: a known divergence; on, the simulator shows it.
  readonly allDiskFaults?: boolean;
  readonly logLevel?: string;
}

export interface SimResult {
  readonly seed: number;
  readonly stepsRun: number;
  readonly violation: string | null;
  readonly gap: string | null;
  readonly volumeGap: string | null;
  readonly traceHash: string;
  readonly virtualMs: number;
  readonly elapsedMs: number;
  readonly counts: Record<string, number>;
  readonly errors: Record<string, number>;
  readonly traceTail: string[];
}

let credential: Promise<LinkCredential> | null = null;

// One link credential for every run: the simulated network has no TLS, but the link's settings
// file holds a credential that parses.
function linkCredential(): Promise<LinkCredential> {
  credential ??= linkCredentialsGenerate({ group: simGroup, primary: "primary", secondary: "secondary" }).then((pair) => pair.primary);
  return credential;
}

function scratchDirectory(seed: number): string {
  const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir(); // LMDB commits fsync: cheap on tmpfs
  const directory = mkdtempSync(join(base, `lockstep-sim-${seed}-`));
  for (const node of ["primary", "secondary"]) mkdirSync(join(directory, node)); // the nodes' data directories
  return directory;
}

export async function simulate(settings: SimSettings, options: SimOptions = {}): Promise<SimResult> {
  const started = performance.now();
  const directory = scratchDirectory(settings.seed);
  const { context, checks, nemesis } = assemble(settings, options, directory, await linkCredential());
  const { world, primary, secondary, trace } = context;
  const unhandled = (reason: unknown) => {
    const message = reason instanceof Error ? `${reason.name}: ${reason.message}` : String(reason);
    if (message.includes("the simulated process is down")) return; // a dead incarnation's leftovers
    context.fail(`unhandled rejection in a node: ${message}`);
  };
  process.on("unhandledRejection", unhandled);
  const switchedBefore = plantedBugsOn(); // LOCKSTEP_PLANTED_BUG's, unless the options name others
  plantedBugsSet(options.plantedBugs ?? switchedBefore);
  world.install();
  let stepsRun = 0;
  try {
    stepsRun = await run(context, checks, nemesis);
  } catch (error) {
    context.fail(`harness: ${(error as Error).stack ?? String(error)}`);
  }
  try {
    primary.crash(false);
    secondary.crash(false);
    await world.unwind();
  } catch (error) {
    context.fail(`harness: unwinding: ${(error as Error).stack ?? String(error)}`);
  } finally {
    world.uninstall();
    plantedBugsSet(switchedBefore);
    await primary.closeAll();
    await secondary.closeAll();
    process.off("unhandledRejection", unhandled);
    rmSync(directory, { recursive: true, force: true });
  }
  return {
    seed: settings.seed,
    stepsRun,
    violation: context.violation,
    gap: context.gap,
    volumeGap: context.volumeGap,
    traceHash: trace.digest(),
    virtualMs: world.nowMs - simEpochMs,
    elapsedMs: performance.now() - started,
    counts: { ...nemesis.counts, ...checks.counts, ...context.client.stats, records: context.model.records, events: trace.events, realIo: world.ioCount, connects: context.network.stats.connects, corruptedChunks: context.network.stats.corruptedChunks, ...context.primary.activityStats() },
    errors: Object.fromEntries(context.client.errors),
    traceTail: trace.tail(),
  };
}

// The world, its two nodes on their own disks, the network, the model, the client, the faults
// and the checks, each with its own stream of the seed's randomness.
function assemble(settings: SimSettings, options: SimOptions, directory: string, credential: LinkCredential): { context: SimContext; checks: SimChecks; nemesis: SimNemesis } {
  const world = new SimWorld();
  const trace = new SimTrace(() => world.nowMs);
  const random = new Random(settings.seed);
  const streams = { disks: new Random(random.next()), network: new Random(random.next()), client: new Random(random.next()), harness: new Random(random.next()) };
  const layout = new VolumeLayout(settings.volumes);
  const logId = BigInt(settings.seed >>> 0) * 0x1_0000n + 0x5117n;
  const model = new SimModel(layout, logId);
  const logger = trace.logger(options.logLevel ?? "info");
  const network = new SimNetwork(world, streams.network, settings.network, (event) => trace.event(event));
  const common = { logLimits: settings.logLimits, volumes: settings.volumes, snapshots: settings.snapshots };
  const primarySettings = { ...common, durability: settings.durability, activity: settings.activity, logBytes: settings.primaryLogBytes, logId, link: settings.link, credential };
  const primary = new SimPrimary(world, new SimStorage(world, streams.disks, settings.disk), network, join(directory, "primary/"), primarySettings, logger);
  const secondarySettings = { ...common, logBytes: settings.secondaryLogBytes, logId: logId + 1n };
  const secondary = new SimSecondary(world, new SimStorage(world, streams.disks, settings.disk), network, join(directory, "secondary/"), secondarySettings, logger);
  const context = new SimContext(settings, world, trace, layout, model, network, primary, secondary, streams.harness, options.strictTwins ?? true, options.allDiskFaults ?? false);
  secondary.onOperation = (record, resyncing) => context.secondaryOperation(record, resyncing);
  const checks = new SimChecks(context);
  context.client = new SimClient(world, streams.client, settings.client, layout, model, primary, () => context.scan(), (event) => trace.event(event));
  return { context, checks, nemesis: new SimNemesis(context, checks) };
}

async function run(context: SimContext, checks: SimChecks, nemesis: SimNemesis): Promise<number> {
  const { world, settings, trace } = context;
  trace.event(`seed ${settings.seed}`);
  const start = await world.runTask(Promise.all([context.secondary.start(true), context.primary.start(true)]), 60_000);
  if (start === "timeout" || "error" in start) {
    context.fail(`the nodes did not start: ${start === "timeout" ? "timeout" : String((start as { error: unknown }).error)}`);
    return 0;
  }
  context.client.start();
  let step = 0;
  while (step < settings.steps && context.violation === null) {
    step += 1;
    const stepMs = 1 + context.random.below(settings.stepMsMax);
    nemesis.step(stepMs);
    await world.runFor(stepMs);
    await checks.live();
    trace.event(`step ${step} ${describeState(context)}`);
  }
  if (context.violation !== null) return step;
  trace.event("healing");
  const stopped = await world.runTask(context.client.stop(), 120_000);
  if (stopped === "timeout") context.fail("healing: the client's requests were never answered");
  await nemesis.heal();
  if (context.violation !== null) return step;
  const converged = await world.runUntil(() => context.converged(), world.nowMs + settings.healingMsMax);
  trace.event(`healed ${describeState(context)}`);
  if (!converged) {
    const failure = context.secondary.up?.replica.health?.message ?? (nemesis.stuck.secondary ? "cannot start" : null);
    if (context.gap !== null && failure !== null) trace.event(`not converged, within the known gap: ${failure}`);
    else context.fail(`healing: no convergence within ${settings.healingMsMax / 1000} s (${describeState(context)}${failure === null ? "" : `; applier: ${failure}`})`);
  }
  if (context.violation === null && !nemesis.stuck.secondary) await checks.final();
  trace.event(`end ${describeState(context)}`);
  return step;
}

function describeState(context: SimContext): string {
  const primary = context.primary.up;
  const secondary = context.secondary.up;
  const link = context.primary.link?.metricsView();
  const p = primary === null ? "P down" : `P ${primary.group.log.headLsn}/${primary.group.log.durableLsn}`;
  const s = secondary === null ? "S down" : `S ${secondary.replica.appliedLsn}/${secondary.replica.log.durableLsn}${secondary.replica.consistent ? "" : " inconsistent"}${secondary.replica.health === null ? "" : " failed"}`;
  const l = link === undefined ? "" : ` link ${link.streaming ? "up" : "down"}${link.consistent ? "" : " bitmap"} ${link.durableLsn}/${link.appliedLsn}`;
  return `${p} ${s}${l}`;
}
