// What one replicated 4 KiB write costs the kernel and the cipher on this machine, whatever
// program does it: the floor under the async row's CPU (docs/BENCHMARKS.md, "Replication").
//
//   node dist/bench/link-floor.js [--tmp DIR] [--runtime SECONDS]
//
// Each part is measured with a standard tool doing only that part, its CPU (user + system,
// from the shell's `times` over the tool's whole run) divided by the 4 KiB records it did:
//
//   image write   the secondary applies the record: fio, psync, buffered 4 KiB random writes
//                 into a 1 GiB file out of the page cache, ending with an fdatasync (writeback)
//   log write     each side's log holds the record: fio, O_DIRECT 256 KiB sequential writes,
//                 the share of one 4 KiB record, counted twice (primary and secondary)
//   TLS           openssl speed, AES-128-GCM (the link's first cipher suite) on 16 KiB
//                 records: sealed once and opened once
//   TCP loopback  fio's net engine, 256 KiB sends to a receiver on 127.0.0.1: both ends
//   CRC-32C       the secondary checks the record once (the project's native CRC, in process)
//
// fio's own loop is in its figures, so the image and log parts are slightly high. Nothing of
// the link's program (framing, bookkeeping, the event loops, the garbage collector) is in the
// sum: it is what a link costs on this machine before any code of its own runs.

import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { crc32c } from "../src/io/crc32c.js";
import { commandCheck, commandRun } from "./process-tree.js";

interface Part {
  readonly name: string;
  readonly usPerRecord: number;
  readonly count: number; // times per replicated write
  readonly how: string;
}

const recordBytes = 4096;
const imageBytes = 1024 ** 3;
const batchBytes = 256 * 1024;
const toolSlackMs = 120_000;

// CPU seconds (user + system) of a command and its children, from bash's `times`.
async function cpuOf(dir: string, command: string): Promise<{ cpuSeconds: number; stdout: string }> {
  const output = join(dir, "tool.out");
  const result = await commandRun("bash", ["-c", `${command} > ${output} 2>&1; status=$?; times; cat ${output}; exit $status`], { timeoutMs: toolSlackMs });
  if (result.code !== 0 || result.timedOut) throw new Error(`${command}: exit ${result.code}: ${result.stdout.slice(-2000)} ${result.stderr.slice(-2000)}`);
  const lines = result.stdout.split("\n");
  // `times` prints the shell's user/system, then its children's: "0m1.234s 0m0.567s"
  const children = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(lines[1]!.trim());
  if (children === null) throw new Error(`cannot read times: ${lines.slice(0, 2).join(" | ")}`);
  const cpuSeconds = Number(children[1]) * 60 + Number(children[2]) + Number(children[3]) * 60 + Number(children[4]);
  return { cpuSeconds, stdout: lines.slice(2).join("\n") };
}

function fioBytes(json: string, direction: "read" | "write"): number {
  const parsed = JSON.parse(json.slice(json.indexOf("{"))) as { jobs: { [key: string]: { io_bytes: number } }[] };
  return parsed.jobs.reduce((sum, job) => sum + job[direction]!.io_bytes, 0);
}

async function imageWrite(dir: string, runtime: number): Promise<Part> {
  const image = join(dir, "image");
  await commandCheck("fio", ["--name=fill", `--filename=${image}`, "--rw=write", "--bs=1M", `--size=${imageBytes}`, "--ioengine=psync", "--end_fsync=1", "--output=/dev/null"], { timeoutMs: toolSlackMs });
  await commandCheck("dd", [`if=${image}`, "iflag=nocache", "count=0", "status=none"], { timeoutMs: toolSlackMs });
  const { cpuSeconds, stdout } = await cpuOf(dir, `fio --name=image --filename=${image} --rw=randwrite --bs=${recordBytes} --size=${imageBytes} --ioengine=psync --time_based --runtime=${runtime} --end_fsync=1 --output-format=json`);
  const records = fioBytes(stdout, "write") / recordBytes;
  return { name: "image write (secondary)", usPerRecord: (cpuSeconds * 1e6) / records, count: 1, how: `${Math.round(records / runtime)} writes/s, fdatasync at the end` };
}

async function logWrite(dir: string, runtime: number): Promise<Part> {
  const log = join(dir, "log");
  const { cpuSeconds, stdout } = await cpuOf(dir, `fio --name=log --filename=${log} --rw=write --bs=${batchBytes} --size=${imageBytes} --ioengine=psync --direct=1 --time_based --runtime=${runtime} --output-format=json`);
  const records = fioBytes(stdout, "write") / recordBytes;
  return { name: "log write (each side)", usPerRecord: (cpuSeconds * 1e6) / records, count: 2, how: `O_DIRECT ${batchBytes / 1024} KiB writes, per 4 KiB` };
}

async function tls(seconds: number): Promise<Part> {
  const result = await commandRun("openssl", ["speed", "-evp", "aes-128-gcm", "-bytes", "16384", "-seconds", String(seconds)], { timeoutMs: toolSlackMs });
  // last line: "AES-128-GCM    4826699.09k" (thousands of bytes per second)
  const match = /AES-128-GCM\s+([\d.]+)k\s*$/m.exec(result.stdout);
  if (result.code !== 0 || match === null) throw new Error(`openssl speed: ${result.stdout.slice(-500)} ${result.stderr.slice(-500)}`);
  const bytesPerSecond = Number(match[1]) * 1000;
  return { name: "TLS seal / open", usPerRecord: (recordBytes / bytesPerSecond) * 1e6, count: 2, how: `AES-128-GCM ${(bytesPerSecond / 1e9).toFixed(2)} GB/s on one core` };
}

async function tcp(dir: string, runtime: number): Promise<Part> {
  const port = 20_000 + (process.pid % 20_000);
  const job = join(dir, "net.fio");
  const text = [
    "[global]", "ioengine=net", "protocol=tcp", `port=${port}`, `bs=${batchBytes}`, "size=1000g", `runtime=${runtime}`, "time_based",
    "[receive]", "listen", "rw=read",
    "[send]", "hostname=127.0.0.1", "rw=write", "startdelay=1",
  ].join("\n");
  await commandCheck("bash", ["-c", `cat > ${job} <<'EOF'\n${text}\nEOF`], { timeoutMs: toolSlackMs });
  const { cpuSeconds, stdout } = await cpuOf(dir, `fio ${job} --output-format=json`);
  const records = fioBytes(stdout, "write") / recordBytes;
  return { name: "TCP loopback (both ends)", usPerRecord: (cpuSeconds * 1e6) / records, count: 1, how: `${batchBytes / 1024} KiB sends, sender and receiver` };
}

function crc(): Part {
  // 1 MiB, in the CPU's cache as a record just received is
  const data = Buffer.alloc(1024 ** 2, 0x5a);
  const slices = data.length / recordBytes;
  const rounds = 256;
  let value = 0;
  const startNs = process.hrtime.bigint();
  for (let round = 0; round < rounds; round++) for (let index = 0; index < slices; index++) value = crc32c(data.subarray(index * recordBytes, (index + 1) * recordBytes), value);
  const ns = Number(process.hrtime.bigint() - startNs);
  return { name: "CRC-32C check", usPerRecord: ns / 1000 / (rounds * slices), count: 1, how: `native, 1 MiB ${rounds} times (CRC ${value.toString(16)})` };
}

async function main(): Promise<void> {
  const tmpIndex = process.argv.indexOf("--tmp");
  const runtimeIndex = process.argv.indexOf("--runtime");
  const parent = tmpIndex > 0 ? process.argv[tmpIndex + 1]! : "/var/tmp";
  const runtime = runtimeIndex > 0 ? Number(process.argv[runtimeIndex + 1]) : 8;
  if (!Number.isInteger(runtime) || runtime < 1 || runtime > 120) throw new Error("--runtime: whole seconds, 1 to 120");
  const dir = await mkdtemp(join(parent, "lockstep-bench-floor-"));
  try {
    const parts = [await imageWrite(dir, runtime), await logWrite(dir, runtime), await tls(Math.min(runtime, 5)), await tcp(dir, runtime), crc()];
    const lines = parts.map((part) => `${part.name.padEnd(26)} ${part.usPerRecord.toFixed(2).padStart(6)} µs × ${part.count}   ${part.how}`);
    const total = parts.reduce((sum, part) => sum + part.usPerRecord * part.count, 0);
    process.stdout.write(`Kernel and cipher work per replicated 4 KiB write (CPU µs):\n${lines.join("\n")}\n${"floor".padEnd(26)} ${total.toFixed(2).padStart(6)} µs\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`link-floor: ${(error as Error).message}\n`);
  process.exit(1);
});
