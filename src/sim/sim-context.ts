// What the parts of one simulated run share: the world, the nodes, the model, the trace, and
// the run's verdict so far (the first violation ends the run).

import { join } from "node:path";
import type { NodeSnapshots } from "../node/node-snapshots.js";
import type { SimClient } from "./sim-client.js";
import type { SimModel } from "./sim-model.js";
import type { SimNetwork } from "./sim-network.js";
import type { SimPrimary } from "./sim-primary.js";
import type { SimSecondary } from "./sim-secondary.js";
import type { SimSettings } from "./sim-settings.js";
import type { SimStorage } from "./sim-storage.js";
import type { SimTrace } from "./sim-trace.js";
import type { SimWorld } from "./sim-world.js";
import { decodeOperationSet } from "../group/operation.js";
import type { LogRecord } from "../log/record.js";
import { stampsOf, type VolumeLayout } from "./sector-stamp.js";
import type { Random } from "./random.js";

export class SimContext {
  violation: string | null = null;
  // --lenient-twins only: a known gap was met (a twin the link could not keep at its point);
  // the twin checks it excuses are reported, not counted. volumeGap: a restore on the secondary
  // from such a twin, which leaves its volume off too (no check of it is counted then).
  gap: string | null = null;
  volumeGap: string | null = null;
  healing = false;
  // The primary's log failed (an injected EIO or ENOSPC) with this durable LSN: records after it
  // will not survive a restart, and a resync meanwhile hands the secondary the image labelled
  // with them. From then on the secondary may stand at any prefix state at or past it.
  primaryLogFailedAt: bigint | null = null;
  client!: SimClient;
  readonly faulted = { primary: false, secondary: false }; // a disk fault since the node's last start

  constructor(
    readonly settings: SimSettings,
    readonly world: SimWorld,
    readonly trace: SimTrace,
    readonly layout: VolumeLayout,
    readonly model: SimModel,
    readonly network: SimNetwork,
    readonly primary: SimPrimary,
    readonly secondary: SimSecondary,
    readonly random: Random, // the harness's own choices (faults, crash outcomes)
    readonly strictTwins: boolean,
    readonly allDiskFaults: boolean,
  ) {}

  fail(violation: string): void {
    if (this.violation !== null) return;
    this.violation = violation;
    this.trace.event(`VIOLATION ${violation}`);
  }

  // The link streams with no bitmap (to this incarnation of the secondary), and the secondary
  // applied the primary's last record.
  converged(): boolean {
    const primary = this.primary.up;
    const secondary = this.secondary.up;
    const link = this.primary.link;
    if (primary === null || secondary === null || link === null) return false;
    const view = link.metricsView();
    const head = primary.group.log.headLsn;
    const replica = secondary.replica;
    return view.streaming && view.consistent && this.secondary.connected && view.appliedLsn === head && replica.appliedLsn === head && replica.consistent && !replica.resyncing && replica.health === null;
  }

  // Reads the primary's new records into the model.
  scan(): void {
    const { records, missing } = this.primary.newRecords();
    for (const record of records) {
      const problem = this.model.observe(record);
      if (problem !== null) {
        this.fail(problem);
        return;
      }
    }
    if (missing !== null) this.fail(`model: record ${missing} is no longer in the primary's ship cache`);
    this.noteMissedOperations();
  }

  // A known gap (only with strictTwins off, --lenient-twins: how builds without twin builds
  // after a resync were judged), met three ways: a link that folded an operation into its
  // bitmap; an operation the secondary performs during a resync, on volumes the resync has only
  // partly rewritten; the primary losing records the secondary had (a crash forks the history).
  noteMissedOperations(): void {
    if ((this.primary.link?.stats.operationsMissed ?? 0) > 0) this.meetGap("the link folded an operation into its bitmap: the secondary never creates that twin (docs/DESIGN-NOTES.md §8)");
  }

  meetGap(reason: string): void {
    if (this.gap !== null || this.strictTwins) return;
    this.gap = reason;
    this.trace.event(`GAP ${reason}`);
  }

  // The secondary performs an operation record (sim-secondary.ts calls this first).
  secondaryOperation(record: LogRecord, resyncing: boolean): void {
    if (resyncing) this.meetGap("the secondary performed an operation during a resync, on partly resynced volumes: its twin is not the primary's snapshot");
    const restores = decodeOperationSet(record.payload, record.lsn).operations.some((operation) => operation.op === "snapshot.restore");
    if (restores && this.gap !== null && this.volumeGap === null) {
      this.volumeGap = `a restore at ${record.lsn} on the secondary from a twin the known gap may have left wrong`;
      this.trace.event(`GAP ${this.volumeGap}`);
    }
  }

  // The stamps of a node's volumes as a reader would see them now (no fault is consumed).
  // snapshots: the node's stores, when it is up: a volume with a restore in the background reads
  // its pending chunks from the store.
  stamps(storage: SimStorage, directory: string, snapshots: NodeSnapshots | null): Int32Array {
    const stamps = new Int32Array(this.layout.sectors);
    for (const volume of this.layout.volumes) {
      const image = Buffer.alloc(volume.size);
      storage.existing(join(directory, `${volume.name}.img`))?.peek(image, 0);
      const store = snapshots?.store(volume.name) ?? null;
      if (store !== null) {
        const slots = storage.existing(join(directory, "snapshots", String(volume.id), "store"));
        for (const { chunk, location } of store.pendingLocations()) {
          const offset = chunk * store.chunkSize;
          const piece = image.subarray(offset, Math.min(volume.size, offset + store.chunkSize));
          if (location.kind === "slot") {
            piece.fill(0);
            slots?.peek(piece, location.slot * store.chunkSize);
          } else if (location.kind === "zero") piece.fill(0);
        }
      }
      stampsOf(image, volume.firstSector, stamps);
    }
    return stamps;
  }
}
