// Shared test plumbing: a server on a unix socket in a temp dir, a recording observer, and a
// child-process runner that always reaps what it starts (killed by PID on timeout).

import { run as runChild, type RunResult } from "../child-process.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../../src/logger.js";
import type { NbdObserver, NbdRequestKind } from "../../src/nbd/export.js";
import { NbdServer, type NbdServerOptions } from "../../src/nbd/server.js";
import { command } from "../../src/nbd/protocol.js";
import { MemoryRegistry, type MemoryExport } from "./memory-export.js";
import type { RawClient } from "./raw-client.js";

export class RecordingObserver implements NbdObserver {
  opened = 0;
  closed: string[] = [];
  requests: { kind: NbdRequestKind; exportName: string; bytes: number; errorCode: string | undefined }[] = [];
  protocolErrors: { code: string; message: string }[] = [];
  connectionOpened(): void {
    this.opened += 1;
  }
  connectionClosed(_remote: string, reason: string): void {
    this.closed.push(reason);
  }
  request(kind: NbdRequestKind, exportName: string, bytes: number, _latencyMs: number, errorCode: string | undefined): void {
    this.requests.push({ kind, exportName, bytes, errorCode });
  }
  protocolError(_remote: string, code: string, message: string): void {
    this.protocolErrors.push({ code, message });
  }
}

export interface Harness {
  readonly server: NbdServer;
  readonly registry: MemoryRegistry;
  readonly observer: RecordingObserver;
  readonly socketPath: string;
  uri(name: string): string;
  close(): Promise<void>;
}

export async function startHarness(exports: readonly MemoryExport[], options: NbdServerOptions = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), "lockstep-nbd-"));
  const registry = new MemoryRegistry(exports);
  const observer = new RecordingObserver();
  const server = new NbdServer(registry, observer, silentLogger, options);
  const socketPath = join(dir, "nbd.sock");
  await server.listenUnix(socketPath);
  return {
    server,
    registry,
    observer,
    socketPath,
    uri: (name) => `nbd+unix:///${name}?socket=${socketPath}`,
    close: async () => {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export type { RunResult };

export function run(file: string, args: readonly string[], timeoutMs = 15_000): Promise<RunResult> {
  return runChild(file, args, { timeoutMs });
}

// Runs Python with Debian's libnbd binding (python3-libnbd); the script prints JSON.
export async function python(script: string, timeoutMs = 15_000): Promise<unknown> {
  const result = await run("/usr/bin/python3", ["-c", script], timeoutMs);
  if (result.code !== 0) throw new Error(`python failed (${result.code}): ${result.stderr}`);
  return JSON.parse(result.stdout.trim().split("\n").pop() ?? "null");
}

export async function waitFor(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not reached in time");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

// Sends FLUSH 1, which the export holds for 200 ms, then FLUSH 2, which it answers at once:
// the reply to 2 comes first while 1 is still in flight.
export async function flushSlowThenFast(client: RawClient, disk: MemoryExport): Promise<void> {
  disk.delayMs = 200;
  client.request(command.flush, 1, 0, 0);
  await new Promise((resolve) => setTimeout(resolve, 20));
  disk.delayMs = 0;
  client.request(command.flush, 2, 0, 0);
}
