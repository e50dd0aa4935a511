// Planted bugs: switches that make the real code wrong in one known way, so that a test can show
// the deterministic simulator (src/sim/) catches that kind of bug. Off unless switched on: by
// the simulator in-process (plantedBugsSet), or for a whole process by the environment variable
// LOCKSTEP_PLANTED_BUG (one name, or several separated by commas), read once at start.
//
// Each hook in the real code is one line, `if (plantedBug("…")) …`:
//
//   ack-before-fsync     log/group-log.ts syncRun: durability waiters are released before the
//                        datasync, so a write (write-ahead) or a flush is acknowledged before
//                        its log record is durable
//   apply-out-of-order   group/replica.ts nextRecord: two adjacent data records received in
//                        memory are applied in each other's place
//   fold-skips-mark      replication/primary-link.ts foldRecords: a fold marks every data record
//                        under the group's first volume (an id mix-up), so the regions the
//                        other volumes' records changed are missing from the link's bitmap
//   operation-early      group/replica.ts nextRecord: an operation record is performed before
//                        the data record just ahead of it
//   cool-unsynced-image  group/group.ts coolLsn: an extent cools once the log is durable past
//                        it, whether or not the image is (needs a map that cools: the test runs
//                        it with --activity-keep 1)

import type { LogRecord } from "./log/record.js";
import { isOperationKind, RecordKind } from "./log/record.js";

export const plantedBugNames = ["ack-before-fsync", "apply-out-of-order", "fold-skips-mark", "operation-early", "cool-unsynced-image"] as const;
export type PlantedBugName = (typeof plantedBugNames)[number];

function fromEnvironment(): Set<PlantedBugName> {
  const text = process.env.LOCKSTEP_PLANTED_BUG ?? "";
  const names = text.split(",").map((name) => name.trim()).filter((name) => name.length > 0);
  for (const name of names) {
    if (!(plantedBugNames as readonly string[]).includes(name)) throw new Error(`LOCKSTEP_PLANTED_BUG: unknown planted bug "${name}" (known: ${plantedBugNames.join(", ")})`);
  }
  return new Set(names as PlantedBugName[]);
}

let switchedOn = fromEnvironment();

export function plantedBug(name: PlantedBugName): boolean {
  return switchedOn.size > 0 && switchedOn.has(name);
}

// The simulator's switch (replaces what the environment said).
export function plantedBugsSet(names: readonly PlantedBugName[]): void {
  switchedOn = new Set(names);
}

export function plantedBugsOn(): PlantedBugName[] {
  return [...switchedOn];
}

// For the replica's two hooks: makes the records at start and start + 1 (consecutive LSNs,
// both received and not yet applied) trade places, keeping their LSNs, when the first is a
// data write and the second is a data write ("write") or an operation ("operation"). Each
// record takes part in at most one trade.
const traded = new WeakSet<LogRecord>();

export function plantedTrade(received: LogRecord[], start: number, second: "write" | "operation"): void {
  const first = received[start];
  const next = received[start + 1];
  if (first === undefined || next === undefined || traded.has(first) || traded.has(next)) return;
  if (first.kind !== RecordKind.write || next.lsn !== first.lsn + 1n) return;
  if (second === "write" ? next.kind !== RecordKind.write : !isOperationKind(next.kind)) return;
  const early = { ...next, lsn: first.lsn };
  const late = { ...first, lsn: next.lsn };
  traded.add(early);
  traded.add(late);
  received[start] = early;
  received[start + 1] = late;
}
