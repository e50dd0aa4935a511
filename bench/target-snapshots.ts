// The `lockstep-snapshots` target: copy-on-write snapshots, in two rows of its own that are
// not single fio jobs.
//
//   snapshot-writes  the 4k random write job (randwrite-4k-qd16) with 0, 1, 8 and 32
//                    snapshots of the volume, each taken after the previous round of writes:
//                    IOPS against 0 and 1 snapshot, CPU per write, and the write amplification
//                    of preservation measured from the node (snapshot-writes.ts)
//   snapshot-ops     create, diff and restore on a 10 GiB sparse volume with 1 GiB written,
//                    timed through the admin API and through the CLI (snapshot-operations.ts)
//
// One node, as the `lockstep` target runs it (durability activity-map, 1 GiB log, the bench
// image adopted as volume disk0), in its own data dir; its group states the snapshot settings
// the figures assume (chunkSize 64 KiB, storeSize 64 GiB, the defaults). The snapshot stores
// live under the data dir, so the page cache reset before every job covers them.

import { uvNote } from "./lockstep-node.js";
import { SnapshotBench } from "./snapshot-bench.js";
import { snapshotOperationsMeasure, type SnapshotOperationsResult } from "./snapshot-operations.js";
import { snapshotWritesMeasure, type SnapshotWritesResult } from "./snapshot-writes.js";
import type { RunningTarget, TargetContext, TargetDefinition } from "./target.js";
import { groupName, imageNodeStart, logSize, volumeName } from "./target-lockstep.js";

export interface SnapshotRow {
  readonly name: string;
  readonly title: string;
}

export const snapshotRowsAll: readonly SnapshotRow[] = [
  { name: "snapshot-writes", title: "4k random write, QD16, with 0, 1, 8 and 32 snapshots" },
  { name: "snapshot-ops", title: "Snapshot create, diff and restore on a 10 GiB sparse volume with 1 GiB written" },
];

export type SnapshotRowResult = SnapshotWritesResult | SnapshotOperationsResult;

const targetName = "lockstep-snapshots";
const snapshotSettings = { chunkSize: "64KiB", storeSize: "64GiB" } as const;
const operationsVolumeName = "sparse0";
const gibibyte = 1024 ** 3;

async function snapshotsStart(context: TargetContext): Promise<RunningTarget> {
  const node = await imageNodeStart(context, { logSize, durability: "activity-map", snapshots: snapshotSettings });
  const running: RunningTarget = {
    fio: { kind: "nbd", uri: node.uri(volumeName) },
    serverPid: node.pid,
    command: `${uvNote(node.env)}node bin/lockstep.js serve --config lockstep.yaml (durability: activity-map, ` +
      `snapshots: chunkSize ${snapshotSettings.chunkSize}, storeSize ${snapshotSettings.storeSize})`,
    stateFiles: () => node.stateFiles(),
    snapshotRowMeasure: (row) => measure(row),
    stop: () => node.stop(),
  };
  const bench = new SnapshotBench(targetName, context, node, groupName, running);
  const measure = (row: string): Promise<SnapshotRowResult> => {
    if (row === "snapshot-writes") return snapshotWritesMeasure(bench, row, volumeName);
    if (row === "snapshot-ops") return snapshotOperationsMeasure(bench, row, operationsVolumeName, groupName);
    throw new Error(`${targetName} has no row ${row}`);
  };
  return running;
}

export const snapshotTarget: TargetDefinition = {
  name: targetName,
  description: "lockstep serve with copy-on-write snapshots: 4k writes with 0–32 snapshots; create, diff, restore",
  tools: [],
  fioRows: [],
  ownRows: snapshotRowsAll.map((row) => row.name),
  memoryCheck: false,
  // the store: up to the whole image preserved by each of the 3 measured rounds with snapshots,
  // ~1.8 GiB of fills; the 10 GiB sparse volume's 1.5 GiB written and ~0.8 GiB of store
  extraDiskBytes: (imageSizeBytes) => 3 * imageSizeBytes + 5 * gibibyte,
  start: snapshotsStart,
};
