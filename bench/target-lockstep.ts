// Lockstep itself, as an operator would run it: `lockstep serve` on a fresh node directory,
// then `lockstep volume create` adopting the bench image, then fio over the node's socket.
//
//   lockstep      group durability "activity-map"
//   lockstep-wal  group durability "write-ahead"
//
// UV_USE_IO_URING is left as the environment and the lockstep bin have it unless the bench
// is given --uv-io-uring on|off, so the two can be compared run against run.

import { LockstepNode, uvNote, type Durability, type GroupConfig } from "./lockstep-node.js";
import { nbdExportWait } from "./nbd-export-wait.js";
import type { RunningTarget, TargetContext, TargetDefinition } from "./target.js";

const volumeCreateTimeoutMs = 60_000;
const serveTimeoutMs = 20_000;
export const volumeName = "disk0";
export const groupName = "bench";
export const logSize = "1GiB";

/** `lockstep volume create` adopting the image, then a full NBD handshake on the export. */
export async function volumeAdopt(node: LockstepNode, imagePath: string, sizeBytes: number): Promise<void> {
  await node.cli(["volume", "create", volumeName, "--group", groupName, "--path", imagePath], volumeCreateTimeoutMs);
  await nbdExportWait(node.uri(volumeName), node.socketPath, node.server, sizeBytes, serveTimeoutMs);
}

/** A node as the lockstep targets run it (in the target's directory), the bench image adopted as its volume. */
export async function imageNodeStart(context: TargetContext, group: Omit<GroupConfig, "name" | "role">): Promise<LockstepNode> {
  const node = await LockstepNode.start(context, context.workDir, {
    name: "bench",
    group: { name: groupName, role: "primary", ...group },
    replicationListen: false,
  });
  try {
    await volumeAdopt(node, context.imagePath, context.imageSizeBytes);
  } catch (error) {
    await node.stop();
    throw error;
  }
  return node;
}

async function lockstepStart(context: TargetContext, durability: Durability): Promise<RunningTarget> {
  const node = await imageNodeStart(context, { logSize, durability });
  return {
    fio: { kind: "nbd", uri: node.uri(volumeName) },
    serverPid: node.pid,
    command: `${uvNote(node.env)}node bin/lockstep.js serve --config lockstep.yaml (durability: ${durability})`,
    stateFiles: () => node.stateFiles(),
    stop: () => node.stop(),
  };
}

export const lockstepTargets: readonly TargetDefinition[] = [
  {
    name: "lockstep",
    description: "lockstep serve, durability activity-map",
    tools: [],
    start: (context) => lockstepStart(context, "activity-map"),
  },
  {
    name: "lockstep-wal",
    description: "lockstep serve, durability write-ahead",
    tools: [],
    start: (context) => lockstepStart(context, "write-ahead"),
  },
];
