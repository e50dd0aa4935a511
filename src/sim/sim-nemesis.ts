// The faults of the safety phase, drawn per step from the seed's rates and struck at a random
// moment inside the step (so that they land on writes, applies and operations in flight):
// crashes of either node (a power cut: every unsynced sector kept, dropped or torn; the
// node restarts on the same disks a little later), connection resets, one- and two-way
// partitions, byte corruption on the wire, and EIO or ENOSPC from one of a node's disks.
// Healing turns them all off and brings every node back (restarting one that met a disk fault,
// as an operator would).

import { OperatingError } from "../errors.js";
import { SimCrashedWhileStarting } from "./sim-world.js";
import type { SimFault } from "./sim-disk.js";
import type { SimChecks } from "./sim-checks.js";
import type { SimContext } from "./sim-context.js";

const startAttemptsMax = 5;

export class SimNemesis {
  readonly counts = { primaryCrashes: 0, secondaryCrashes: 0, resets: 0, partitions: 0, corruptions: 0, diskFaults: 0, startFailures: 0 };
  private startFailures = { primary: 0, secondary: 0 };
  readonly stuck = { primary: false, secondary: false }; // cannot start, within the known gap

  constructor(
    private readonly context: SimContext,
    private readonly checks: SimChecks,
  ) {}

  // Draws this step's faults and schedules them inside it.
  step(stepMs: number): void {
    const { context } = this;
    const { faults } = context.settings;
    const random = context.random;
    const at = (action: () => void) => {
      context.world.schedule(context.world.harness, random.below(stepMs * 1000) / 1000, () => {
        if (!context.healing && context.violation === null) action();
      });
    };
    if (random.chance(faults.crashPrimary)) at(() => this.crash("primary"));
    if (random.chance(faults.crashSecondary)) at(() => this.crash("secondary"));
    if (random.chance(faults.reset)) at(() => this.reset());
    if (random.chance(faults.partition)) at(() => this.partition());
    if (random.chance(faults.corruption)) at(() => this.corrupt());
    if (random.chance(faults.diskError)) at(() => this.diskFault());
  }

  // A power cut of one node: it restarts on the same disks a little later.
  crash(which: "primary" | "secondary"): void {
    const { context } = this;
    const keep = context.random.below(101) / 100;
    if (!this.stop(which, keep, context.random.chance(0.5))) return;
    context.world.schedule(context.world.harness, context.random.below(context.settings.downMsMax), () => void this.start(which));
  }

  // The node's incarnation dies; its disks keep each unsynced sector with probability `keep`
  // (1: kill -9, the page cache survives). The checks note what was durable first. False if
  // the node was down already.
  private stop(which: "primary" | "secondary", keep: number, resetPeers: boolean): boolean {
    const { context } = this;
    const node = which === "primary" ? context.primary : context.secondary;
    if (node.up === null && !node.isStarting) return false;
    if (which === "primary") {
      context.scan(); // every record it appended is the model's before it dies
      this.checks.primaryCrashing(context.primary.up);
    } else {
      this.checks.secondaryCrashing(context.secondary.up);
    }
    node.crash(resetPeers);
    const lost = node.storage.crash(context.random, keep);
    node.storage.clearFaults(); // a transient disk error does not outlive the power cycle
    context.faulted[which] = false;
    this.counts[which === "primary" ? "primaryCrashes" : "secondaryCrashes"] += 1;
    context.trace.event(`${keep === 1 ? "kill" : "crash"} ${which} (keep ${keep}, ${lost} sectors lost, ${resetPeers ? "reset" : "silent"})`);
    return true;
  }

  // Starts the node on its disks (if down), then checks its recovery.
  async start(which: "primary" | "secondary"): Promise<void> {
    const { context } = this;
    const node = which === "primary" ? context.primary : context.secondary;
    if (node.up !== null || node.isStarting || context.violation !== null || this.stuck[which]) return;
    context.trace.event(`start ${which}`);
    try {
      if (which === "primary") {
        const incarnation = await context.primary.start(false);
        context.trace.event(`primary recovered to ${incarnation.group.log.headLsn} (replayed ${incarnation.report.replayedRecords}, hot extents ${incarnation.report.recoveredActivityExtents.length})`);
        const twins = context.secondary.up?.snapshots.list().filter((info) => !info.snapshot.startsWith("~")).length ?? 1; // down: it may have some
        if (context.model.head.lsn > incarnation.group.log.headLsn && twins > 0) {
          context.meetGap(`the primary lost records ${incarnation.group.log.headLsn + 1n}..${context.model.head.lsn} the secondary may have had: twins they made are not reconciled`);
        }
        this.checks.primaryRecovered(incarnation);
      } else {
        const incarnation = await context.secondary.start(false);
        context.trace.event(`secondary recovered: applied ${incarnation.replica.appliedLsn}, consistent ${incarnation.replica.consistent}`);
        this.checks.secondaryRecovered(incarnation);
      }
      this.startFailures[which] = 0;
    } catch (error) {
      if (error instanceof SimCrashedWhileStarting) return;
      if (context.gap !== null && error instanceof OperatingError && error.code === "SNAPSHOT_NOT_FOUND") {
        // redo met an operation on a twin the link never created: the known gap, for good
        this.stuck[which] = true;
        context.trace.event(`start ${which} failed within the known gap: ${error.message}`);
        return;
      }
      this.counts.startFailures += 1;
      this.startFailures[which] += 1;
      context.trace.event(`start ${which} failed: ${(error as Error).message}`);
      if (this.startFailures[which] >= startAttemptsMax) return context.fail(`${which} does not start: ${(error as Error).message}`);
      context.world.schedule(context.world.harness, 100, () => void this.start(which));
    }
  }

  private reset(): void {
    this.counts.resets += 1;
    this.context.network.resetAll("nemesis");
  }

  private partition(): void {
    const { context } = this;
    const random = context.random;
    const kind = random.below(3);
    if (kind !== 1) context.network.partition("primary", "secondary");
    if (kind !== 0) context.network.partition("secondary", "primary");
    this.counts.partitions += 1;
    context.world.schedule(context.world.harness, random.below(context.settings.partitionMsMax), () => context.network.heal());
  }

  private corrupt(): void {
    const { context } = this;
    this.counts.corruptions += 1;
    context.network.corrupting = true;
    context.trace.event("net corruption on");
    context.world.schedule(context.world.harness, context.random.below(context.settings.corruptionMsMax), () => {
      context.network.corrupting = false;
      context.trace.event("net corruption off");
    });
  }

  private diskFault(): void {
    const { context } = this;
    const random = context.random;
    const which = random.chance(0.5) ? "primary" : "secondary";
    const node = which === "primary" ? context.primary : context.secondary;
    if (node.up === null) return;
    // the primary's volumes and snapshot stores fail only when told (SimOptions.allDiskFaults)
    const paths = node.storage.paths().filter((path) => which === "secondary" || context.allDiskFaults || path.endsWith("group.log") || path.endsWith("activity"));
    if (paths.length === 0) return;
    const path = paths[random.below(paths.length)]!;
    const kind: SimFault = random.chance(0.8) ? "EIO" : "ENOSPC";
    const on = (["read", "write", "sync", "any"] as const)[random.below(4)]!;
    node.storage.injectFault(path, kind, on);
    context.faulted[which] = true;
    this.counts.diskFaults += 1;
    context.trace.event(`disk fault ${kind} on ${on} of ${path.slice(context.primary.directory.length - "primary/".length)}`);
    // The operator sees the error in status and restarts the node a little later (kill -9:
    // the page cache keeps what was written).
    context.world.schedule(context.world.harness, 500 + random.below(2_500), () => {
      if (context.healing || context.violation !== null || !context.faulted[which] || node.up === null) return;
      this.restart(which);
      context.world.schedule(context.world.harness, 50, () => void this.start(which));
    });
  }

  // ---- Healing ----

  // Faults off; nodes that are down start, nodes that met a disk fault (or whose log or
  // applier failed) restart. Returns once every start has finished.
  async heal(): Promise<void> {
    const { context } = this;
    context.healing = true;
    context.network.heal();
    context.network.corrupting = false;
    context.primary.storage.clearFaults();
    context.secondary.storage.clearFaults();
    const primary = context.primary.up;
    const secondary = context.secondary.up;
    const primarySick = primary !== null && (context.faulted.primary || primary.group.log.health.state === "failed" || primary.volumes.some((volume) => volume.errorCount > 0));
    const secondarySick = secondary !== null && (context.faulted.secondary || secondary.replica.health !== null);
    if (primarySick) this.restart("primary");
    if (secondarySick) this.restart("secondary");
    for (const which of ["secondary", "primary"] as const) {
      const node = which === "primary" ? context.primary : context.secondary;
      while (context.violation === null && node.up === null && !this.stuck[which]) {
        if (!node.isStarting) await context.world.runTask(this.start(which), 60_000);
        else await context.world.runUntil(() => !node.isStarting, context.world.nowMs + 60_000);
      }
    }
  }

  // kill -9 of a node that met a disk fault (it starts again right after).
  private restart(which: "primary" | "secondary"): void {
    this.context.trace.event(`restart ${which} (it met a disk fault)`);
    this.stop(which, 1, true);
  }
}
