// The on-disk and in-memory cost of snapshot metadata, measured on the real metadata store
// (LMDB, src/snapshot/snapshot-metadata.ts): commit the entries a volume accumulates as its
// chunks are preserved, in the store's own batch size, and read the environment's file size.
//
//   node --expose-gc dist/bench/snapshot-metadata-cost.js [--chunks N] [--dir DIR]
//
// Prints bytes per preserved chunk for a first snapshot epoch (a version plus the chunk's birth)
// and for each later one (a version; the birth is updated in place), scaled to a TiB of volume
// rewritten at the default chunk size; and the heap each snapshot costs (256 snapshots, a mix of
// read-only, writable and snapshots of snapshots, in a store on simulated disks).

import { mkdtempSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { snapshotChunkSizeDefault, snapshotFreshPageBits, snapshotFreshPagesMax } from "../src/constants.js";
import { SnapshotMetadata, type MetadataChange } from "../src/snapshot/snapshot-metadata.js";
import { SnapshotStore } from "../src/snapshot/snapshot-store.js";
import { SimDisk } from "../src/sim/sim-disk.js";
import { Volume } from "../src/volume/volume.js";

const snapshotsMeasured = 256;

async function heapPerSnapshot(dir: string): Promise<number | null> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc === undefined) return null;
  const volume = new Volume(1, "vol", new SimDisk("volume", 1 << 20), 1 << 20, () => 0);
  const store = await SnapshotStore.open(volume, new SimDisk("store", 0), dir, { chunkSize: snapshotChunkSizeDefault, storeSizeMax: 2 ** 30, nowMs: () => 0 });
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let index = 0; index < snapshotsMeasured; index += 1) {
    const from = index % 2 === 0 || index === 1 ? null : `snap-${index - 1}`;
    await store.create({ name: `snap-${index}`, from, writable: index % 4 === 1, lsn: BigInt(index + 1) });
  }
  gc();
  const bytes = (process.memoryUsage().heapUsed - before) / snapshotsMeasured;
  await store.close();
  return bytes;
}

const batch = 4096;
const tebibyte = 2 ** 40;

async function epoch(metadata: SnapshotMetadata, chunks: number, birth: number, death: number, slotBase: number): Promise<void> {
  for (let start = 0; start < chunks; start += batch) {
    const change: MetadataChange = { versions: [], currents: [] };
    for (let chunk = start; chunk < Math.min(chunks, start + batch); chunk += 1) {
      change.versions!.push({ line: 0, version: { chunk, death, birth, slot: slotBase + chunk } });
      change.currents!.push({ line: 0, current: { chunk, birth: death, slot: -1 } });
    }
    await metadata.commit(change);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { chunks: { type: "string", default: "262144" }, dir: { type: "string", default: "/var/tmp" } } });
  const chunks = Number(values.chunks);
  const dir = mkdtempSync(join(values.dir!, "lockstep-metadata-cost-"));
  try {
    const metadata = SnapshotMetadata.open(dir);
    const size = () => statSync(join(dir, "data.mdb")).size;
    const empty = size();
    await epoch(metadata, chunks, 0, 5, 0);
    const first = size();
    await epoch(metadata, chunks, 5, 9, chunks);
    const second = size();
    await metadata.close();
    const perTiB = tebibyte / snapshotChunkSizeDefault;
    const firstPerChunk = (first - empty) / chunks;
    const laterPerChunk = (second - first) / chunks;
    const freshCacheMax = snapshotFreshPagesMax * (snapshotFreshPageBits / 8);
    console.log(`chunks preserved per epoch: ${chunks} (chunk size ${snapshotChunkSizeDefault / 1024} KiB: ${perTiB} chunks per TiB)`);
    console.log(`first epoch: ${firstPerChunk.toFixed(1)} bytes per preserved chunk on disk; a fully rewritten TiB: ${((firstPerChunk * perTiB) / 2 ** 30).toFixed(2)} GiB`);
    console.log(`each later epoch: ${laterPerChunk.toFixed(1)} bytes per preserved chunk; a fully rewritten TiB: ${((laterPerChunk * perTiB) / 2 ** 30).toFixed(2)} GiB`);
    console.log(`in memory: fresh-chunk cache ${(perTiB / 8 / 2 ** 20).toFixed(1)} MiB per TiB touched since the newest snapshot, capped at ${freshCacheMax / 2 ** 20} MiB per volume; chunk maps 0 (on disk)`);
    const perSnapshot = await heapPerSnapshot(join(dir, "heap"));
    console.log(perSnapshot === null ? "heap per snapshot: run with node --expose-gc to measure" : `heap per snapshot: ${Math.round(perSnapshot)} bytes (${snapshotsMeasured} snapshots)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
