// A quick measurement, not a test: appends/s and MB/s of 4 KiB records on a real file, where
// every client appends 16 records and then waits for durable() of the last one. The peer,
// measured in the same run on the same file system: one writer doing write + fdatasync of the
// same bytes (16 records' worth per round: the 1-client ceiling; 1024: the batch ceiling).
//
//   node dist/test/log/append-rate.js [directory=/tmp] [seconds=5] [clients=1,8,64]

import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { logSizeDefault } from "../../src/constants.js";
import { NodeBlockFile } from "../../src/io/node-block-file.js";
import { GroupLog } from "../../src/log/group-log.js";
import { RecordKind, recordDiskSize } from "../../src/log/record.js";

const recordBytes = 4096;
const appendsPerWait = 16;

async function measure(directory: string, seconds: number, clients: number): Promise<void> {
  const path = join(directory, `append-rate-${clients}.log`);
  const file = await NodeBlockFile.open(path, { create: 0 });
  const log = await GroupLog.create(file, { sizeBytes: logSizeDefault, groupId: "bench" });
  const payload = Buffer.alloc(recordBytes, 0x5a); // never modified: safe to share
  const deadline = performance.now() + seconds * 1000;
  let appends = 0;
  const client = async () => {
    while (performance.now() < deadline) {
      let lsn = 0n;
      for (let index = 0; index < appendsPerWait; index++) {
        if (!log.hasRoom(recordBytes)) await log.waitForRoom(recordBytes);
        lsn = log.append({ kind: RecordKind.write, flags: 0, volumeId: 0, offset: appends * recordBytes, length: recordBytes, payload });
        appends += 1;
      }
      await log.durable(lsn);
      log.release(log.usage().durableLsn); // nobody else needs the records
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: clients }, client));
  const elapsed = (performance.now() - started) / 1000;
  const usage = log.usage();
  await log.close();
  await file.close();
  await rm(path);
  const rate = appends / elapsed;
  console.log(
    JSON.stringify({
      clients,
      appends,
      seconds: Number(elapsed.toFixed(2)),
      appendsPerSecond: Math.round(rate),
      payloadMBPerSecond: Number(((rate * recordBytes) / 1e6).toFixed(1)),
      datasyncs: usage.syncs,
      recordsPerDatasync: Number((appends / usage.syncs).toFixed(1)),
      batches: usage.batches,
    }),
  );
}

async function measureRaw(directory: string, seconds: number, recordsPerRound: number): Promise<number> {
  const path = join(directory, "raw.img");
  const file = await NodeBlockFile.open(path, { create: logSizeDefault });
  const round = Buffer.alloc(recordsPerRound * recordDiskSize(recordBytes), 0x5a);
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  let position = 0;
  let records = 0;
  while (performance.now() < deadline) {
    await file.write([round], position);
    await file.datasync();
    position = position + 2 * round.length > logSizeDefault ? 0 : position + round.length;
    records += recordsPerRound;
  }
  const rate = records / ((performance.now() - started) / 1000);
  await file.close();
  await rm(path);
  console.log(JSON.stringify({ peer: `write+fdatasync of ${recordsPerRound} records`, recordsPerSecond: Math.round(rate), MBPerSecond: Number(((rate * recordBytes) / 1e6).toFixed(1)) }));
  return rate;
}

const directory = await mkdtemp(join(process.argv[2] ?? "/tmp", "lockstep-append-rate-"));
const seconds = Number(process.argv[3] ?? 5);
const clientCounts = (process.argv[4] ?? "1,8,64").split(",").map(Number);
try {
  await measureRaw(directory, seconds, appendsPerWait);
  for (const clients of clientCounts) await measure(directory, seconds, clients);
  await measureRaw(directory, seconds, 1024);
} finally {
  await rm(directory, { recursive: true, force: true });
}
