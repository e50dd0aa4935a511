// The checks of a simulated run, against the model (sim-model.ts) and DESIGN.md §2:
//
//   log          the primary's LSNs are contiguous and chained; every record has generation 1
//                and the primary's logId (one writer: takeover, which would raise the
//                generation, is not built yet); a durable LSN never goes backwards, on either
//                node, across crashes too; a secondary applies only what is durable
//   durability   the primary's sectors hold the newest acknowledged write (or a newer one in
//                flight); after a crash, the newest durable one (FUA, or flushed) or newer
//   prefix       a consistent secondary equals the primary's image at its applied LSN, and
//                its twins are the primary's snapshots at that LSN
//   snapshots    each snapshot (primary and twin) holds the image of its creation LSN
//   bitmap       while a link waits on its bitmap, every region where the secondary differs
//                from the primary at the bitmap's coveredLsn is marked in it
//   convergence  after healing both nodes hold the model's image and the same snapshots
//
// Reads of images are the checker's own look at the disks (no latency, no fault consumed);
// reads of snapshots go through the stores and are skipped when one is busy.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setImmediate as immediate } from "node:timers/promises";
import type { GroupLog } from "../log/group-log.js";
import type { NodeSnapshots } from "../node/node-snapshots.js";
import type { OperatingError } from "../errors.js";
import { DirtyBitmap } from "../replication/dirty-bitmap.js";
import { sectorBytes, stampsOf } from "./sector-stamp.js";
import type { SimContext } from "./sim-context.js";
import { type HistoryNode, SimModel, type SnapshotSet } from "./sim-model.js";
import type { PrimaryIncarnation } from "./sim-primary.js";
import type { SecondaryIncarnation } from "./sim-secondary.js";

interface Watched {
  readonly log: GroupLog;
  durable: bigint;
}

export class SimChecks {
  private primaryLog: Watched | null = null;
  private replicaLog: Watched | null = null;
  private primaryBeforeCrash: { lsn: bigint; key: string } | null = null;
  private replicaBeforeCrash: bigint | null = null;
  readonly counts = { prefixChecks: 0, snapshotReads: 0, bitmapChecks: 0, recoveries: 0, verifiedBytes: 0 };

  constructor(private readonly context: SimContext) {}

  // ---- After every step ----

  async live(): Promise<void> {
    const context = this.context;
    context.scan();
    if (context.violation === null) this.primaryNow();
    const secondary = context.violation === null ? this.secondaryNow() : null;
    if (context.violation === null) await this.snapshotSample(secondary);
    if (context.violation === null && secondary !== null) this.bitmapCoverage(secondary);
  }

  private watchDurable(watched: Watched | null, log: GroupLog, who: string): Watched {
    if (watched !== null && watched.log === log && log.durableLsn < watched.durable) this.context.fail(`${who}: durable LSN went back from ${watched.durable} to ${log.durableLsn}`);
    if (log.durableLsn > log.headLsn) this.context.fail(`${who}: durable LSN ${log.durableLsn} past the head ${log.headLsn}`);
    return { log, durable: log.durableLsn };
  }

  private primaryNow(): void {
    const { context } = this;
    const incarnation = context.primary.up;
    if (incarnation === null) return;
    this.primaryLog = this.watchDurable(this.primaryLog, incarnation.group.log, "primary log");
    const log = incarnation.group.log;
    if (log.health.state === "failed" && (context.primaryLogFailedAt === null || log.durableLsn < context.primaryLogFailedAt)) context.primaryLogFailedAt = log.durableLsn;
    const actual = context.stamps(context.primary.storage, context.primary.directory, incarnation.snapshots);
    const problem = context.model.checkPrimary(actual, "acked");
    if (problem !== null) return context.fail(`primary: a read would miss an acknowledged write: ${problem}`);
    context.model.trim();
    if (context.client.operationInFlight || context.faulted.primary) return;
    const names = this.names(incarnation.snapshots);
    const expected = this.modelNames(context.model.head.snapshots);
    if (names !== expected) context.fail(`primary: snapshots ${names || "(none)"}, the log says ${expected || "(none)"} at ${context.model.head.lsn}`);
  }

  // The secondary's log and applier; its image and twins when it stands at a state of the
  // primary's history, which it returns (null: down, busy, resyncing, or a violation).
  private secondaryNow(): { incarnation: SecondaryIncarnation; node: HistoryNode } | null {
    const { context } = this;
    const incarnation = context.secondary.up;
    if (incarnation === null) return null;
    const replica = incarnation.replica;
    if (context.secondary.problems.length > 0) {
      context.fail(`secondary: ${context.secondary.problems[0]}`);
      return null;
    }
    if (replica.health !== null) {
      if (!context.faulted.secondary && context.gap === null) context.fail(`secondary: the applier stopped: ${replica.health.message}`);
      return null;
    }
    this.replicaLog = this.watchDurable(this.replicaLog, replica.log, "secondary log");
    if (replica.appliedLsn > replica.log.durableLsn) {
      context.fail(`secondary: applied ${replica.appliedLsn} past its durable ${replica.log.durableLsn}`);
      return null;
    }
    const node = this.secondaryState(incarnation);
    if (node === null) return null;
    if (context.gap !== null) return { incarnation, node };
    const names = this.names(incarnation.snapshots);
    const expected = this.modelNames(node.snapshots);
    if (names !== expected) context.fail(`secondary: twins ${names || "(none)"} at applied ${replica.appliedLsn}, the primary had ${expected || "(none)"}`);
    return { incarnation, node };
  }

  // The history node a consistent, idle secondary stands at (its image checked), or null.
  private secondaryState(incarnation: SecondaryIncarnation): HistoryNode | null {
    const { context } = this;
    const replica = incarnation.replica;
    if (!replica.consistent || replica.resyncing || context.secondary.operating > 0 || context.volumeGap !== null) return null;
    const log = replica.log;
    const nodes = context.model.ancestorsOf(log.headLsn, log.headChecksum, log.headLsn - replica.appliedLsn);
    if (nodes.length === 0) {
      context.fail(`secondary: its log's head (${log.headLsn}, checksum ${log.headChecksum}) is no record the primary appended`);
      return null;
    }
    this.counts.prefixChecks += 1;
    const actual = context.stamps(context.secondary.storage, context.secondary.directory, incarnation.snapshots);
    for (const node of nodes) if (SimModel.difference(context.layout, context.model.imageAt(node), actual, () => "") === null) return node;
    const failedAt = context.primaryLogFailedAt;
    for (let at = nodes[0]!.parent; failedAt !== null && at !== null && at.lsn >= failedAt; at = at.parent) {
      if (SimModel.difference(context.layout, context.model.imageAt(at), actual, () => "") === null) return null; // a prefix state (see primaryLogFailedAt)
    }
    const difference = SimModel.difference(context.layout, context.model.imageAt(nodes[0]!), actual, (sector) => `${context.model.describeSector(sector)} [${context.model.sectorStory(nodes[0]!, sector)}]`);
    context.fail(`secondary: at applied LSN ${replica.appliedLsn} its volumes are no image the primary had (write order): ${difference}`);
    return null;
  }

  private names(snapshots: NodeSnapshots): string {
    return snapshots
      .list()
      .filter((info) => !info.snapshot.startsWith("~"))
      .map((info) => `${info.volume}@${info.snapshot}`)
      .sort()
      .join(" ");
  }

  private modelNames(set: SnapshotSet): string {
    return [...set.values()]
      .map((snapshot) => `${this.context.layout.volume(snapshot.volumeId).name}@${snapshot.name}`)
      .sort()
      .join(" ");
  }

  // One snapshot of each node, read through its store, against the model.
  private async snapshotSample(secondary: { incarnation: SecondaryIncarnation; node: HistoryNode } | null): Promise<void> {
    const { context } = this;
    const primary = context.primary.up;
    if (primary !== null && !context.client.operationInFlight && !context.faulted.primary) await this.compareOne(primary.snapshots, context.model.head.snapshots, "primary");
    if (secondary !== null && context.gap === null && !context.faulted.secondary) await this.compareOne(secondary.incarnation.snapshots, secondary.node.snapshots, "secondary");
  }

  private async compareOne(snapshots: NodeSnapshots, set: SnapshotSet, who: string): Promise<void> {
    const models = [...set.values()];
    if (models.length === 0) return;
    const model = models[this.context.random.below(models.length)]!;
    const actual = await this.readSnapshot(snapshots, model.volumeId, model.name, false);
    if (actual !== null) this.compareSnapshot(actual, model.volumeId, model.stamps, `${who}: snapshot ${model.name} (created at LSN ${model.createdLsn})`);
  }

  // The snapshot's stamps, read through its store; null if busy (an operation holds it) or
  // failed. wait: give the world time (healing is quiet).
  private async readSnapshot(snapshots: NodeSnapshots, volumeId: number, name: string, wait: boolean): Promise<Int32Array | null> {
    const volume = this.context.layout.volume(volumeId);
    const store = snapshots.store(volume.name);
    if (store === null || !store.has(name)) return null;
    const image = Buffer.alloc(volume.size);
    let outcome: boolean | null = null;
    store.read(name, 0, image).then(() => (outcome = true), () => (outcome = false));
    if (wait) await this.context.world.runUntil(() => outcome !== null, this.context.world.nowMs + 10_000);
    else await immediate();
    if (outcome !== true) return null;
    this.counts.snapshotReads += 1;
    const stamps = new Int32Array(this.context.layout.sectors);
    stampsOf(image, volume.firstSector, stamps);
    return stamps.subarray(volume.firstSector, volume.firstSector + volume.sectors);
  }

  private compareSnapshot(actual: Int32Array, volumeId: number, expected: Int32Array, what: string): void {
    const volume = this.context.layout.volume(volumeId);
    for (let index = 0; index < expected.length; index++) {
      if (actual[index] === expected[index]) continue;
      return this.context.fail(`${what}: ${volume.name} byte ${index * sectorBytes} holds stamp ${actual[index]}, the model ${expected[index]}`);
    }
  }

  // While the link waits on its bitmap (disconnected), the secondary's image and the primary's
  // at coveredLsn differ only in marked regions.
  private bitmapCoverage(secondary: { incarnation: SecondaryIncarnation; node: HistoryNode }): void {
    const { context } = this;
    const link = context.primary.link;
    const replica = secondary.incarnation.replica;
    if (context.primary.up === null || link === null || link.metricsView().streaming || replica.appliedLsn !== replica.log.headLsn) return;
    const match = secondary.node;
    const files = join(context.primary.directory, "links", "secondary");
    let state: { bitmapActive: boolean; coveredLsn: string; bitmapBaseLsn: string | null };
    let bitmap: DirtyBitmap;
    try {
      state = JSON.parse(readFileSync(`${files}.state.json`, "utf8")) as typeof state;
      if (!state.bitmapActive || state.bitmapBaseLsn === null) return;
      bitmap = DirtyBitmap.decode(readFileSync(`${files}.bitmap`));
    } catch {
      return;
    }
    const covered = BigInt(state.coveredLsn);
    if (match.lsn > covered || match.lsn < BigInt(state.bitmapBaseLsn) || covered > context.model.head.lsn) return;
    let at: HistoryNode | null = context.model.head;
    while (at !== null && at.lsn > covered) at = at.parent;
    let ancestor: HistoryNode | null = at;
    while (ancestor !== null && ancestor.lsn > match.lsn) ancestor = ancestor.parent;
    if (at === null || ancestor === null || ancestor.key !== match.key) return; // another history: the next hello seeds a full resync
    this.counts.bitmapChecks += 1;
    const marked = new Uint8Array(context.layout.sectors);
    for (const run of bitmap.runs()) {
      const volume = context.layout.volumes.find((candidate) => candidate.id === run.volumeId);
      if (volume !== undefined) marked.fill(1, volume.firstSector + run.offset / sectorBytes, volume.firstSector + Math.min(volume.sectors, (run.offset + run.length) / sectorBytes));
    }
    const expected = context.model.imageAt(at);
    const actual = context.model.imageAt(match);
    for (let sector = 0; sector < expected.length; sector++) {
      if (expected[sector] === actual[sector] || marked[sector] === 1) continue;
      return context.fail(`bitmap: the secondary (at ${match.lsn}) lacks ${context.model.describeSector(sector)} of the primary at coveredLsn ${covered}, and the link's bitmap does not mark it`);
    }
  }

  // ---- Crashes and restarts ----

  primaryCrashing(incarnation: PrimaryIncarnation | null): void {
    if (incarnation === null) return;
    const log = incarnation.group.log;
    let node: HistoryNode | null = this.context.model.head;
    while (node !== null && node.lsn > log.durableLsn) node = node.parent;
    this.primaryBeforeCrash = node === null ? null : { lsn: node.lsn, key: node.key };
    this.primaryLog = null;
  }

  primaryRecovered(incarnation: PrimaryIncarnation): void {
    const { context } = this;
    this.counts.recoveries += 1;
    const log = incarnation.group.log;
    const before = this.primaryBeforeCrash;
    this.primaryBeforeCrash = null;
    if (before !== null) {
      let node: HistoryNode | null = context.model.nodesAt(log.headLsn, log.headChecksum)[0] ?? null;
      while (node !== null && node.lsn > before.lsn) node = node.parent;
      if (log.headLsn < before.lsn || node?.key !== before.key) return context.fail(`primary: the log recovered to ${log.headLsn}, losing durable record ${before.lsn}`);
    }
    const actual = context.stamps(context.primary.storage, context.primary.directory, incarnation.snapshots);
    const rebased = context.model.rebase(log.headLsn, log.headChecksum, actual);
    if (typeof rebased === "string") return context.fail(`primary: ${rebased}`);
    const logImage = context.model.imageAt(rebased.log);
    const hot = new Uint8Array(context.layout.sectors);
    if (incarnation.group.durability === "activity-map") {
      for (const extent of incarnation.mayDiffer) {
        const volume = context.layout.volumes.find((candidate) => candidate.id === extent.volumeId);
        if (volume !== undefined) hot.fill(1, volume.firstSector + extent.offset / sectorBytes, volume.firstSector + Math.min(volume.sectors, (extent.offset + extent.length) / sectorBytes));
      }
    }
    for (let sector = 0; sector < actual.length; sector++) {
      if (hot[sector] === 1 || actual[sector] === logImage[sector]) continue;
      const where = incarnation.group.durability === "activity-map" ? "outside the hot extents" : "(write-ahead)";
      return context.fail(`primary: recovered image differs from its log at ${log.headLsn} ${where}: ${context.model.describeSector(sector)} holds ${actual[sector]}, the log says ${logImage[sector]}`);
    }
    const names = this.names(incarnation.snapshots);
    const expected = this.modelNames(rebased.node.snapshots);
    if (names !== expected) context.fail(`primary: recovered snapshots ${names || "(none)"}, the log says ${expected || "(none)"}`);
  }

  secondaryCrashing(incarnation: SecondaryIncarnation | null): void {
    this.replicaBeforeCrash = incarnation === null ? null : incarnation.replica.log.durableLsn;
    this.replicaLog = null;
  }

  secondaryRecovered(incarnation: SecondaryIncarnation): void {
    this.counts.recoveries += 1;
    const before = this.replicaBeforeCrash;
    this.replicaBeforeCrash = null;
    const replica = incarnation.replica;
    if (before !== null && !replica.resyncing && replica.log.headLsn < before) this.context.fail(`secondary: its log recovered to ${replica.log.headLsn}, losing durable record ${before}`);
  }

  // ---- After healing ----

  async final(): Promise<void> {
    const { context } = this;
    await this.live();
    if (context.violation !== null) return;
    const primary = context.primary.up;
    const secondary = context.secondary.up;
    if (primary === null || secondary === null) return context.fail("final: a node is down after healing");
    const head = context.model.head;
    const expected = context.model.imageAt(head);
    const primaryStamps = context.stamps(context.primary.storage, context.primary.directory, primary.snapshots);
    const describe = (sector: number) => context.model.describeSector(sector);
    const primaryDiffers = SimModel.difference(context.layout, expected, primaryStamps, describe);
    if (primaryDiffers !== null) return context.fail(`final: the primary differs from its log's image at ${head.lsn}: ${primaryDiffers}`);
    const secondaryStamps = context.stamps(context.secondary.storage, context.secondary.directory, secondary.snapshots);
    const secondaryDiffers = SimModel.difference(context.layout, expected, secondaryStamps, describe);
    if (secondaryDiffers !== null) {
      if ((context.gap !== null && secondary.replica.health !== null) || context.volumeGap !== null) return;
      return context.fail(`final: the secondary did not converge to the primary: ${secondaryDiffers}`);
    }
    const expectedNames = this.modelNames(head.snapshots);
    const primaryNames = this.names(primary.snapshots);
    if (primaryNames !== expectedNames) return context.fail(`final: primary snapshots ${primaryNames || "(none)"}, the log says ${expectedNames || "(none)"}`);
    const checkTwins = context.gap === null;
    const secondaryNames = this.names(secondary.snapshots);
    if (checkTwins && secondaryNames !== expectedNames) return context.fail(`final: twins ${secondaryNames || "(none)"}, the primary has ${expectedNames || "(none)"}`);
    for (const model of head.snapshots.values()) {
      const what = `snapshot ${context.layout.volume(model.volumeId).name}@${model.name} (created at LSN ${model.createdLsn})`;
      const onPrimary = await this.readSnapshot(primary.snapshots, model.volumeId, model.name, true);
      if (onPrimary === null) return context.fail(`final: primary ${what} cannot be read`);
      this.compareSnapshot(onPrimary, model.volumeId, model.stamps, `final: primary ${what}`);
      if (!checkTwins || context.violation !== null) continue;
      const onSecondary = await this.readSnapshot(secondary.snapshots, model.volumeId, model.name, true);
      if (onSecondary === null) return context.fail(`final: twin ${what} cannot be read`);
      this.compareSnapshot(onSecondary, model.volumeId, model.stamps, `final: twin ${what}`);
    }
    if (context.violation === null) await this.verifyAgrees();
  }

  // `lockstep verify` (PrimaryLink.verify: region hashes at exact points of the stream, only
  // digests on the wire) must find the converged nodes equal.
  private async verifyAgrees(retried = false): Promise<void> {
    const { context } = this;
    const link = context.primary.link;
    if (link === null) return;
    const outcome = await context.world.runTask(link.verify(64 * 1024), 60_000);
    if (outcome !== "timeout" && "error" in outcome && !retried && (outcome.error as OperatingError).code === "PEER_UNREACHABLE") {
      // the connection it ran on was an old one (a restart's reset still on its way): again, once
      await context.world.runUntil(() => context.converged(), context.world.nowMs + 60_000);
      return this.verifyAgrees(true);
    }
    if (outcome === "timeout") return context.fail("final: verify did not answer");
    if ("error" in outcome) return context.fail(`final: verify failed: ${(outcome.error as Error).message}`);
    const differing = outcome.value.differing.filter((region) => (context.gap === null || !region.volume.includes("@")) && context.volumeGap === null);
    if (differing.length > 0) context.fail(`final: verify finds ${differing.map((region) => `${region.volume} ${region.offset}+${region.length}`).join(", ")} different on the secondary`);
    this.counts.verifiedBytes += outcome.value.bytesCompared;
  }
}
