// The targets the bench knows, and which of them are compared.
//
// The list grows by adding a definition and, for a new comparison, a pair to `ratioPairs`.
// Replication (DESIGN.md §8): `lockstep-async` and `lockstep-sync` are the `lockstep` target
// with one secondary, compared with it; `lockstep-link` measures a link's initial sync and
// resync (rows of its own, link-sync.ts). `lockstep-snapshots` measures writes with 0 to 32
// snapshots and the snapshot operations (rows of its own, target-snapshots.ts).
// `lockstep-operations` compares snapshot create and restore in band with re-replicating the
// data they change (a row of its own, target-operations.ts); it is not in the default set
// (a 4 GiB volume on two nodes: 6.5 minutes and about 22 GiB of disk more here).

import type { TargetDefinition } from "./target.js";
import { linkSyncTarget } from "./link-sync.js";
import { lockstepTargets } from "./target-lockstep.js";
import { operationsTarget } from "./target-operations.js";
import { peerTargets } from "./target-peers.js";
import { replicatedTargets } from "./target-replicated.js";
import { snapshotTarget } from "./target-snapshots.js";

export const targetsAll: readonly TargetDefinition[] = [...lockstepTargets, ...replicatedTargets, linkSyncTarget, snapshotTarget, operationsTarget, ...peerTargets];

export const targetsDefault = ["lockstep", "lockstep-wal", "lockstep-async", "lockstep-sync", "lockstep-link", "lockstep-snapshots", "nbdkit", "qemu-nbd", "raw"];

/** The replication targets: a run of only these (and `lockstep`, their baseline) rewrites only the replication block of the docs. */
export const replicationTargetNames: readonly string[] = [...replicatedTargets, linkSyncTarget].map((target) => target.name);

/** The snapshot targets: a run of only these (and `lockstep`) rewrites only the snapshot block of the docs. */
export const snapshotTargetNames: readonly string[] = [snapshotTarget.name];

/** The operations target: a run of only it (and `lockstep`) rewrites only the operations block of the docs. */
export const operationsTargetNames: readonly string[] = [operationsTarget.name];

/** [numerator, denominator]: printed as numerator/denominator of the headline figure. */
export const ratioPairs: ReadonlyArray<readonly [string, string]> = [
  ["lockstep", "nbdkit"],
  ["lockstep", "qemu-nbd"],
  ["lockstep-wal", "nbdkit"],
  ["lockstep-wal", "qemu-nbd"],
  ["lockstep-async", "lockstep"], // replication on vs off (target ≥ 0.85)
  ["lockstep-sync", "lockstep"],
];
