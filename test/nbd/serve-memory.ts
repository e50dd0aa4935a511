// Manual micro-benchmark helper (not a test): serves one in-memory export on a unix socket
// until SIGINT/SIGTERM, then prints the process's CPU time per request handled.
//   node dist/test/nbd/serve-memory.js /tmp/x.sock [sizeMiB]
//   fio --name=t --ioengine=nbd --uri='nbd+unix:///mem?socket=/tmp/x.sock' --rw=randwrite \
//       --bs=4k --iodepth=16 --size=256m --time_based --runtime=10

import { silentLogger } from "../../src/logger.js";
import { NbdServer } from "../../src/nbd/server.js";
import { MemoryExport, MemoryRegistry } from "./memory-export.js";
import { RecordingObserver } from "./harness.js";

class CountingObserver extends RecordingObserver {
  count = 0;
  override request(): void {
    this.count += 1;
  }
}

// Does nothing without a socket path: test runners that execute every file stay unharmed.
const socketPath = process.argv[2];
if (socketPath === undefined) process.exit(0);
const sizeMiB = Number(process.argv[3] ?? "512");
const observer = new CountingObserver();
const server = new NbdServer(new MemoryRegistry([new MemoryExport("mem", sizeMiB * 1024 * 1024)]), observer, silentLogger);
await server.listenUnix(socketPath as string);
process.stdout.write(`listening ${socketPath}\n`);
const cpuStart = process.cpuUsage();
const wallStart = performance.now();
const stop = async (): Promise<void> => {
  const cpu = process.cpuUsage(cpuStart);
  const wallMs = performance.now() - wallStart;
  const cpuUs = cpu.user + cpu.system;
  process.stdout.write(
    `requests ${observer.count} cpu ${(cpuUs / 1000).toFixed(0)} ms (user ${(cpu.user / 1000).toFixed(0)}, sys ${(cpu.system / 1000).toFixed(0)}) ` +
      `wall ${wallMs.toFixed(0)} ms: ${(cpuUs / Math.max(1, observer.count)).toFixed(2)} µs CPU per request\n`,
  );
  await server.close();
  process.exit(0);
};
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());
