// Waiting for an NBD server to serve: a full handshake by `nbdinfo --size`, not just a
// socket that accepts, and the export's size checked against the image.

import { existsSync } from "node:fs";
import { type ChildHandle, commandRun, logTail, sleep } from "./process-tree.js";

const pollIntervalMs = 100;
const probeTimeoutMs = 5_000;

export async function nbdExportWait(
  uri: string,
  socketPath: string,
  server: ChildHandle,
  sizeBytesExpected: number,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = "socket not created";
  while (Date.now() < deadline) {
    if (server.process.exitCode !== null || server.process.signalCode !== null) {
      throw new Error(`server exited (${server.process.exitCode ?? server.process.signalCode}) before serving ${uri}:\n${logTail(server.logPath)}`);
    }
    if (existsSync(socketPath)) {
      const probe = await commandRun("nbdinfo", ["--size", uri], { timeoutMs: probeTimeoutMs });
      if (probe.code === 0) {
        const sizeBytes = Number(probe.stdout.trim());
        if (sizeBytes !== sizeBytesExpected) {
          throw new Error(`${uri} has size ${sizeBytes}, expected ${sizeBytesExpected}`);
        }
        return;
      }
      lastError = probe.stderr.trim() || `nbdinfo exit ${probe.code}`;
    }
    await sleep(pollIntervalMs);
  }
  throw new Error(`no NBD export at ${uri} after ${timeoutMs} ms (${lastError}):\n${logTail(server.logPath)}`);
}
