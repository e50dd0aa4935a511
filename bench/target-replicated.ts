// Lockstep with replication on: the `lockstep` target's primary (same group, durability
// activity-map, 1 GiB log, the bench image adopted) with one secondary on this machine, over
// loopback, in its own data dir with its own replica image.
//
//   lockstep-async  link --mode async: writes are acknowledged once durable locally
//   lockstep-sync   link --mode sync: writes wait until the secondary holds them durably
//
// Before the first row the link's initial sync (the whole 1 GiB image) must be done: the
// secondary consistent and the primary's `link progress` satisfied. After each row the bench
// records the link's lag as fio ended and times a `drain` (node-pair.ts). The primary is the
// "server" whose CPU the row's srv CPU and CPU µs/IO figures count; the secondary's CPU is
// measured in the same window and reported beside them (peerCpuPercent): on a two-core
// machine fio, the primary and the secondary share the processors.
//
// Only the 4k random write row runs by default on these targets (`fioRows`): it is the
// replication-overhead figure DESIGN.md §8 asks for; add a row name to run more.

import { uvNote } from "./lockstep-node.js";
import { NodePair, peerName, type LinkMode } from "./node-pair.js";
import type { RunningTarget, TargetContext, TargetDefinition } from "./target.js";
import { groupName, logSize, volumeAdopt, volumeName } from "./target-lockstep.js";

const initialSyncTimeoutMs = 600_000;
const drainTimeoutMs = 600_000;
const replicatedFioRows = ["randwrite-4k-qd16"];
const replicaLogBytes = 1024 ** 3; // the secondary's own 1 GiB log

async function replicatedStart(context: TargetContext, mode: LinkMode): Promise<RunningTarget> {
  const pair = await NodePair.start(context, { groupName, logSize, durability: "activity-map" });
  let initialSyncSeconds: number;
  try {
    await volumeAdopt(pair.primary, context.imagePath, context.imageSizeBytes);
    initialSyncSeconds = await pair.linkUp(mode, initialSyncTimeoutMs);
  } catch (error) {
    await pair.stop();
    throw error;
  }
  const nudges = pair.nudges;
  return {
    fio: { kind: "nbd", uri: pair.primary.uri(volumeName) },
    serverPid: pair.primary.pid,
    command: `${uvNote(pair.primary.env)}node bin/lockstep.js serve --config primary/lockstep.yaml (durability: activity-map) ` +
      `+ serve --config secondary/lockstep.yaml (role: secondary); link add ${groupName} ${peerName} ${pair.secondaryAddress} --mode ${mode}`,
    notes: [
      `initial sync of the ${context.imageSizeBytes / 2 ** 20} MiB image before the rows: secondary consistent ${initialSyncSeconds.toFixed(1)} s after \`link add\`` +
        (nudges > 0 ? ` (the primary said consistent only after ${nudges} nudge write(s), see node-pair.ts)` : ""),
    ],
    stateFiles: () => pair.stateFiles(),
    peerPids: () => [pair.secondary.pid],
    afterRow: () => pair.catchUp(drainTimeoutMs),
    stop: () => pair.stop(),
  };
}

function replicated(mode: LinkMode): TargetDefinition {
  return {
    name: `lockstep-${mode}`,
    description: `lockstep primary with one ${mode} secondary on loopback`,
    tools: [],
    fioRows: replicatedFioRows,
    memoryCheck: false,
    extraDiskBytes: (imageSizeBytes) => imageSizeBytes + replicaLogBytes,
    start: (context) => replicatedStart(context, mode),
  };
}

export const replicatedTargets: readonly TargetDefinition[] = [replicated("async"), replicated("sync")];
