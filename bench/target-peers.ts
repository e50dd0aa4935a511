// The peers Lockstep is compared with, on the same image in the same run.
//
//   nbdkit    file plugin, defaults: 16 worker threads ("parallel" model), buffered I/O,
//             fadvise=normal, cache=default. --exit-with-parent as a safety net.
//   qemu-nbd  raw format, --cache=writeback --aio=threads (its defaults, written out),
//             -t (stay up across connections) -e 4 (up to 4 clients).
//   raw       no server: fio on the file with io_uring (default) at the same iodepth,
//             buffered. The ceiling an NBD server can approach.

import { join } from "node:path";
import { childStart, childStop } from "./process-tree.js";
import { nbdExportWait } from "./nbd-export-wait.js";
import type { RunningTarget, TargetContext, TargetDefinition } from "./target.js";

const serveTimeoutMs = 20_000;

async function serverStart(
  context: TargetContext,
  command: string,
  argsFor: (socketPath: string) => string[],
): Promise<RunningTarget> {
  const socketPath = join(context.workDir, "nbd.sock");
  const args = argsFor(socketPath);
  const server = childStart(command, args, { logPath: join(context.workDir, `${command}.log`) });
  const uri = `nbd+unix:///?socket=${socketPath}`;
  try {
    await nbdExportWait(uri, socketPath, server, context.imageSizeBytes, serveTimeoutMs);
  } catch (error) {
    await childStop(server);
    throw error;
  }
  return {
    fio: { kind: "nbd", uri },
    serverPid: server.pid,
    command: [command, ...args].join(" "),
    stateFiles: () => [],
    stop: () => childStop(server),
  };
}

const nbdkit: TargetDefinition = {
  name: "nbdkit",
  description: "nbdkit file plugin (defaults: 16 threads, buffered)",
  tools: ["nbdkit"],
  start: (context) =>
    serverStart(context, "nbdkit", (socketPath) => [
      "--exit-with-parent", "-f", "-U", socketPath, "file", context.imagePath,
    ]),
};

const qemuNbd: TargetDefinition = {
  name: "qemu-nbd",
  description: "qemu-nbd raw, cache=writeback, aio=threads",
  tools: ["qemu-nbd"],
  start: (context) =>
    serverStart(context, "qemu-nbd", (socketPath) => [
      "-t", "-e", "4", "-f", "raw", "--cache=writeback", "--aio=threads", "-k", socketPath,
      context.imagePath,
    ]),
};

const raw: TargetDefinition = {
  name: "raw",
  description: "fio on the file itself (no server)",
  tools: [],
  start: async (context) => ({
    fio: { kind: "file", path: context.imagePath, engine: context.rawEngine },
    serverPid: null,
    command: `fio --ioengine=${context.rawEngine} --direct=0 --invalidate=0 --filename=${context.imagePath}`,
    stateFiles: () => [],
    stop: async () => {},
  }),
};

export const peerTargets: readonly TargetDefinition[] = [nbdkit, qemuNbd, raw];
