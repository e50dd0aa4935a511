// Lockstep itself, as an operator would run it: `lockstep serve` on a fresh node directory,
// then `lockstep volume create` adopting the bench image, then fio over the node's socket.
//
//   lockstep      group durability "activity-map"
//   lockstep-wal  group durability "write-ahead"
//
// UV_USE_IO_URING is left as the environment and the lockstep bin have it unless the bench
// is given --uv-io-uring on|off, so the two can be compared run against run.

import { existsSync, readdirSync, readFileSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { childStart, childStop, commandCheck, logTail, sleep, type ChildHandle } from "./process-tree.js";
import { nbdExportWait } from "./nbd-export-wait.js";
import {
  TargetUnavailableError,
  type RunningTarget,
  type TargetContext,
  type TargetDefinition,
} from "./target.js";

const apiReadyTimeoutMs = 30_000;
const volumeCreateTimeoutMs = 60_000;
const serveTimeoutMs = 20_000;
const pollIntervalMs = 100;
const stateFileCountMax = 1_000;
const volumeName = "disk0";
const groupName = "bench";

type Durability = "activity-map" | "write-ahead";

function configText(dataDir: string, socketPath: string, durability: Durability): string {
  return [
    "node:",
    "  name: bench",
    `  dataDir: ${JSON.stringify(dataDir)}`,
    "api:",
    "  listen: 127.0.0.1:0",
    "nbd:",
    `  socket: ${JSON.stringify(socketPath)}`,
    "groups:",
    `  - name: ${groupName}`,
    "    logSize: 1GiB",
    `    durability: ${durability}`,
    "",
  ].join("\n");
}

async function apiReadyWait(dataDir: string, server: ChildHandle): Promise<void> {
  const apiPath = join(dataDir, "api.json");
  const deadline = Date.now() + apiReadyTimeoutMs;
  while (Date.now() < deadline) {
    if (server.process.exitCode !== null || server.process.signalCode !== null) {
      throw new Error(`lockstep serve exited (${server.process.exitCode ?? server.process.signalCode}) before ready:\n${logTail(server.logPath)}`);
    }
    if (existsSync(apiPath)) {
      try {
        const api = JSON.parse(readFileSync(apiPath, "utf8")) as { url?: unknown };
        if (typeof api.url === "string") return;
      } catch {
        // written but not complete yet
      }
    }
    await sleep(pollIntervalMs);
  }
  throw new Error(`lockstep serve: no ${apiPath} after ${apiReadyTimeoutMs} ms:\n${logTail(server.logPath)}`);
}

/** Regular files under dir (the node's log, maps, metadata), for the page cache reset. */
function filesUnder(dir: string): string[] {
  const files: string[] = [];
  const pending = [dir];
  while (pending.length > 0 && files.length < stateFileCountMax) {
    const current = pending.pop() as string;
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) pending.push(path);
      else if (entry.isFile() && statSync(path).size > 0) files.push(path);
    }
  }
  return files;
}

async function lockstepStart(context: TargetContext, durability: Durability): Promise<RunningTarget> {
  const binPath = join(context.repoRoot, "bin", "lockstep.js");
  if (!existsSync(binPath)) {
    throw new TargetUnavailableError(`${binPath} does not exist: the lockstep CLI is not built yet`);
  }
  const dataDir = join(context.workDir, "node");
  mkdirSync(dataDir, { recursive: true });
  const socketPath = join(dataDir, "nbd.sock");
  const configPath = join(context.workDir, "lockstep.yaml");
  writeFileSync(configPath, configText(dataDir, socketPath, durability));
  const env = { ...process.env };
  if (context.uvIoUring === "on") env.UV_USE_IO_URING = "1";
  if (context.uvIoUring === "off") env.UV_USE_IO_URING = "0";
  const serveArgs = [binPath, "serve", "--config", configPath];
  const server = childStart(process.execPath, serveArgs, {
    cwd: context.repoRoot,
    env,
    logPath: join(context.workDir, "lockstep.log"),
  });
  const uri = `nbd+unix:///${volumeName}?socket=${socketPath}`;
  try {
    await apiReadyWait(dataDir, server);
    await commandCheck(
      process.execPath,
      [binPath, "--node", dataDir, "volume", "create", volumeName, "--group", groupName, "--path", context.imagePath],
      { timeoutMs: volumeCreateTimeoutMs, cwd: context.repoRoot, env },
    );
    await nbdExportWait(uri, socketPath, server, context.imageSizeBytes, serveTimeoutMs);
  } catch (error) {
    await childStop(server);
    throw error;
  }
  const uvNote = env.UV_USE_IO_URING === undefined ? "" : `UV_USE_IO_URING=${env.UV_USE_IO_URING} `;
  return {
    fio: { kind: "nbd", uri },
    serverPid: server.pid,
    command: `${uvNote}node bin/lockstep.js serve --config lockstep.yaml (durability: ${durability})`,
    stateFiles: () => filesUnder(dataDir),
    stop: () => childStop(server),
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
