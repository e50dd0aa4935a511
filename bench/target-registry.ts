// The targets the bench knows, and which of them are compared.
//
// The list grows by adding a definition and, for a new comparison, a pair to `ratioPairs`.
// The replication overhead rows of DESIGN.md §8 are meant to land this way: a
// `lockstep-replicated` target (a primary with a live secondary) and the pair
// ["lockstep-replicated", "lockstep"]; nothing is measured for them until that exists.

import type { TargetDefinition } from "./target.js";
import { lockstepTargets } from "./target-lockstep.js";
import { peerTargets } from "./target-peers.js";

export const targetsAll: readonly TargetDefinition[] = [...lockstepTargets, ...peerTargets];

export const targetsDefault = ["lockstep", "lockstep-wal", "nbdkit", "qemu-nbd", "raw"];

/** [numerator, denominator]: printed as numerator/denominator of the headline figure. */
export const ratioPairs: ReadonlyArray<readonly [string, string]> = [
  ["lockstep", "nbdkit"],
  ["lockstep", "qemu-nbd"],
  ["lockstep-wal", "nbdkit"],
  ["lockstep-wal", "qemu-nbd"],
  // ["lockstep-replicated", "lockstep"], // replication on vs off: when replication exists
];
