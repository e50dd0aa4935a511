// The fio jobs ("rows") and how their JSON output is read.
//
// Every target runs the same job; only the engine differs: fio's `nbd` engine (libnbd,
// one connection, asynchronous, up to iodepth commands in flight) for the NBD servers, and
// io_uring on the file itself, buffered like the servers' own I/O, for `raw`.
//
// On `fsync=32` with an asynchronous engine: fio sends a sync (NBD_CMD_FLUSH on the nbd
// engine) after every 32 writes only at iodepth 1. At iodepth 16 fio 3.33 issues far more
// flushes than 1 in 32 (about 1 per 3 writes was measured here), and the ratio depends on
// the server's timing, so targets would not run the same workload. The flush row therefore
// runs at iodepth 1; the QD16 variant is available by name, and every result records the
// flushes actually sent (`syncs`).

export interface Row {
  readonly name: string;
  readonly title: string;
  readonly readWrite: "randwrite" | "randread" | "write" | "read";
  readonly blockSize: string;
  readonly ioDepth: number;
  readonly fsyncEvery: number; // 0: no flushes
  readonly headline: "iops" | "bandwidth";
}

export const rowsAll: readonly Row[] = [
  { name: "randwrite-4k-qd16", title: "4k random write, QD16", readWrite: "randwrite", blockSize: "4k", ioDepth: 16, fsyncEvery: 0, headline: "iops" },
  { name: "randread-4k-qd16", title: "4k random read, QD16", readWrite: "randread", blockSize: "4k", ioDepth: 16, fsyncEvery: 0, headline: "iops" },
  { name: "write-1m-qd4", title: "1M sequential write, QD4", readWrite: "write", blockSize: "1M", ioDepth: 4, fsyncEvery: 0, headline: "bandwidth" },
  { name: "randwrite-4k-qd1-fsync32", title: "4k random write, flush every 32 writes, QD1", readWrite: "randwrite", blockSize: "4k", ioDepth: 1, fsyncEvery: 32, headline: "iops" },
  { name: "randwrite-4k-qd16-fsync32", title: "4k random write, fio fsync=32, QD16 (flush ratio not exact)", readWrite: "randwrite", blockSize: "4k", ioDepth: 16, fsyncEvery: 32, headline: "iops" },
];

export const rowsDefault = [
  "randwrite-4k-qd16",
  "randread-4k-qd16",
  "write-1m-qd4",
  "randwrite-4k-qd1-fsync32",
];

/** Where fio does its I/O: an NBD URI, or the file itself with a local engine. */
export type FioTarget =
  | { readonly kind: "nbd"; readonly uri: string }
  | { readonly kind: "file"; readonly path: string; readonly engine: string };

export function fioTargetArgs(target: FioTarget): string[] {
  if (target.kind === "nbd") return ["--ioengine=nbd", `--uri=${target.uri}`];
  // direct=0: the NBD servers measured here do buffered I/O on the image too.
  // invalidate=0: by default fio drops the file's page cache when a job starts and again at
  // every pass over the file (time_based loops), which it cannot do to a server's cache: raw
  // would read cold and stall on writeback at each pass while the servers run warm. The
  // bench resets the cache itself before every job, for every target alike.
  return [`--ioengine=${target.engine}`, `--filename=${target.path}`, "--direct=0", "--invalidate=0"];
}

export function fioRowArgs(
  row: Row,
  timing: { runtimeSeconds: number; rampSeconds: number },
  outputPath: string,
): string[] {
  const args = [
    `--name=${row.name}`,
    `--rw=${row.readWrite}`,
    `--bs=${row.blockSize}`,
    `--iodepth=${row.ioDepth}`,
    "--time_based",
    `--runtime=${timing.runtimeSeconds}`,
    `--ramp_time=${timing.rampSeconds}`,
    "--output-format=json",
    `--output=${outputPath}`, // the nbd engine prints a line on stdout: keep the JSON apart
  ];
  if (row.fsyncEvery > 0) args.push(`--fsync=${row.fsyncEvery}`);
  // LOCKSTEP_BENCH_FIO_ARGS: extra fio options for every job, e.g. "--rate_iops=5000" to
  // compare CPU per I/O of two builds at the same load on a machine whose free CPU swings.
  args.push(...(process.env.LOCKSTEP_BENCH_FIO_ARGS ?? "").split(" ").filter((arg) => arg !== ""));
  return args;
}

export interface FioFigures {
  readonly ios: number; // data I/Os completed after the ramp
  readonly syncs: number; // flushes (NBD_CMD_FLUSH / fsync) completed after the ramp
  readonly iops: number;
  readonly bandwidthBytesPerSecond: number;
  readonly latencyMeanUs: number; // completion latency of the data I/Os
  readonly latencyP99Us: number;
  readonly syncLatencyMeanUs: number | null;
  readonly runtimeMs: number;
  readonly clientCpuPercent: number; // fio's own usr + sys
}

interface FioDirection {
  total_ios: number;
  iops: number;
  bw_bytes: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}

interface FioJob {
  error: number;
  job_runtime: number;
  read: FioDirection;
  write: FioDirection;
  sync?: { total_ios: number; lat_ns: { mean: number } };
  usr_cpu: number;
  sys_cpu: number;
}

/** Reads the one job of a fio JSON report; fio may put text before the JSON. */
export function fioFiguresParse(text: string, row: Row): FioFigures {
  const start = text.indexOf("{");
  if (start < 0) throw new Error("fio wrote no JSON");
  const report = JSON.parse(text.slice(start)) as { jobs: FioJob[] };
  const job = report.jobs[0];
  if (job === undefined) throw new Error("fio JSON has no job");
  if (job.error !== 0) throw new Error(`fio job ${row.name} failed: error ${job.error}`);
  const direction = row.readWrite.includes("read") ? job.read : job.write;
  const syncs = job.sync?.total_ios ?? 0;
  return {
    ios: direction.total_ios,
    syncs,
    iops: direction.iops,
    bandwidthBytesPerSecond: direction.bw_bytes,
    latencyMeanUs: direction.clat_ns.mean / 1000,
    latencyP99Us: (direction.clat_ns.percentile?.["99.000000"] ?? Number.NaN) / 1000,
    syncLatencyMeanUs: syncs > 0 && job.sync !== undefined ? job.sync.lat_ns.mean / 1000 : null,
    runtimeMs: job.job_runtime,
    clientCpuPercent: job.usr_cpu + job.sys_cpu,
  };
}
