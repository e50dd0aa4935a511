// The `lockstep-operations` target: operations in lockstep against re-replicating the data
// they change, in one row of its own (operations-in-band.ts).
//
// A primary and a secondary on this machine (node-pair.ts: each its own `lockstep serve`,
// group durability activity-map, a 2 GiB log each so that 1 GiB of writes never overflows
// the link), an async link over TLS through a counting relay (byte-relay.ts) in front of
// the secondary. The volume is 4 × --image-size (4 GiB by default) of random data, written
// with dd before the primary adopts it (`volume create --path`), so that every changed block
// is real data, and the link's initial sync copies it to the secondary before the row.
// The change is --image-size (1 GiB by default).

import { join } from "node:path";
import { ByteRelay, relayTargetParse } from "./byte-relay.js";
import { uvNote } from "./lockstep-node.js";
import { NodePair, peerName, type LinkMode } from "./node-pair.js";
import { operationsMeasure, type OperationsRowResult } from "./operations-in-band.js";
import { commandCheck } from "./process-tree.js";
import { SnapshotBench } from "./snapshot-bench.js";
import type { RunningTarget, TargetContext, TargetDefinition } from "./target.js";
import { groupName, volumeAdopt, volumeName } from "./target-lockstep.js";

export interface OperationRow {
  readonly name: string;
  readonly title: string;
}

export const operationRowsAll: readonly OperationRow[] = [
  { name: "in-band-operations", title: "Snapshot create and restore in band against re-replicating the changed data" },
];

const targetName = "lockstep-operations";
const linkMode: LinkMode = "async";
const operationsLogSize = "2GiB";
const logBytes = 2 * 1024 ** 3;
const volumeScale = 4; // the volume: this many times --image-size; the change: --image-size
const imageWriteTimeoutMs = 900_000;
const initialSyncTimeoutMs = 900_000;
const mebibyte = 1024 ** 2;

/** dd from /dev/urandom, fsynced: every block real data. */
async function randomImageCreate(path: string, sizeBytes: number): Promise<void> {
  const count = `count=${sizeBytes / mebibyte}`;
  await commandCheck("dd", ["if=/dev/urandom", `of=${path}`, "bs=1M", count, "conv=fsync", "status=none"], { timeoutMs: imageWriteTimeoutMs });
}

async function operationsStart(context: TargetContext): Promise<RunningTarget> {
  const volumeBytes = volumeScale * context.imageSizeBytes;
  const imagePath = join(context.workDir, "volume.img");
  await randomImageCreate(imagePath, volumeBytes);
  const pair = await NodePair.start(context, { groupName, logSize: operationsLogSize, durability: "activity-map" });
  let linkRelay: ByteRelay | null = null;
  const stop = async () => {
    try {
      await pair.stop();
    } finally {
      await linkRelay?.close();
    }
  };
  let initialSyncSeconds: number;
  try {
    await volumeAdopt(pair.primary, imagePath, volumeBytes);
    linkRelay = await ByteRelay.start(relayTargetParse(pair.secondaryAddress));
    initialSyncSeconds = await pair.linkUp(linkMode, initialSyncTimeoutMs, linkRelay.address);
  } catch (error) {
    await stop();
    throw error;
  }
  const running: RunningTarget = {
    fio: { kind: "nbd", uri: pair.primary.uri(volumeName) },
    serverPid: pair.primary.pid,
    command: `${uvNote(pair.primary.env)}node bin/lockstep.js serve --config primary/lockstep.yaml + serve --config secondary/lockstep.yaml ` +
      `(durability: activity-map, logSize: ${operationsLogSize}); link add ${groupName} ${peerName} RELAY --mode ${linkMode} (RELAY: the bench's byte counter in front of ${pair.secondaryAddress})`,
    notes: [
      `volume ${volumeName}: ${volumeBytes / mebibyte} MiB of random data, adopted by the primary; initial sync through the relay: secondary consistent ` +
        `${initialSyncSeconds.toFixed(1)} s after \`link add\``,
    ],
    stateFiles: () => pair.stateFiles(),
    operationRowMeasure: (row) => measure(row),
    stop,
  };
  const bench = new SnapshotBench(targetName, context, pair.primary, groupName, running);
  const relay = linkRelay;
  const measure = (row: string): Promise<OperationsRowResult> => {
    if (row !== operationRowsAll[0]!.name) throw new Error(`${targetName} has no row ${row}`);
    return operationsMeasure({ context, pair, linkRelay: relay, linkMode, imagePath, volumeBytes, changeBytes: context.imageSizeBytes, bench }, row);
  };
  return running;
}

export const operationsTarget: TargetDefinition = {
  name: targetName,
  description: "lockstep primary and async secondary: snapshot create and restore in band against re-replicating the changed data",
  tools: ["nbdkit", "nbdcopy", "sha256sum", "bash"],
  fioRows: [],
  ownRows: operationRowsAll.map((row) => row.name),
  memoryCheck: false,
  // the volume on each node, the baseline's copy of it, a log each, and each node's snapshot
  // store (the change preserved twice: for s0, then for s1)
  extraDiskBytes: (imageSizeBytes) => 3 * volumeScale * imageSizeBytes + 2 * logBytes + 4 * imageSizeBytes,
  start: operationsStart,
};
