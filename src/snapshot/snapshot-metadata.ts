// A volume's snapshot metadata: the catalog of its images, its lines and the chunk maps, in
// LMDB (the `lmdb` package), the embedded transactional store. Why LMDB and not a format of
// our own: every change here is a small multi-key transaction (a preserved chunk's version,
// the origin chunk's birth, the slot taken from the free list, the store's high-water mark)
// that must be atomic and durable before the origin is overwritten; the maps must be indexed
// on disk (a TiB of rewritten volume is 16 Mi entries, which cannot live in memory); and a
// crash at any point must leave the last committed state. LMDB is a copy-on-write B+tree
// with exactly those properties, reads are synchronous and cost about a microsecond, and the
// package batches concurrent commits (group commit). This is the one file that knows LMDB.
//
// Tables (keys in LMDB's ordered-binary encoding, so ranges are ordered by number):
//
//   state     "state"               → StoreState
//   lines     lineId                → LineEntry            (line 0: the volume itself)
//   images    name                  → ImageEntry           (snapshots; the volume is implicit)
//   versions  [line, chunk, death]  → [birth, slot]        (preserved chunk versions)
//   current   [line, chunk]         → [birth, slot]        (slot -1: the volume's own chunk)
//   free      slot                  → 1                    (free slots below slotsHigh)
//   restore   page                  → bitmap bytes         (a restore's chunks left to copy)
//
// Opened with overlappingSync off: a commit's promise resolves once it is durable.

import { open, type Database, type RootDatabase } from "lmdb";
import { snapshotMetadataMapBytes } from "../constants.js";
import { OperatingError } from "../errors.js";
import { scheduleIo } from "../io/io-scheduler.js";
import type { PendingPage } from "./pending-chunks.js";

export const liveEpoch = -1; // a chain link that reads the line's current content

export interface ChainLink {
  readonly line: number;
  readonly epoch: number; // liveEpoch, or the line's epoch the image was frozen at
}

export interface ImageEntry {
  readonly id: number;
  readonly name: string; // without "volume@"
  readonly parent: string | null; // the image it was taken of; null: the volume
  readonly writable: boolean;
  readonly size: number;
  readonly createdLsn: string;
  readonly createdAtMs: number;
  readonly refreshedAtMs: number | null;
  readonly chain: readonly ChainLink[]; // top first; the last link is always line 0
}

export interface LineEntry {
  readonly id: number;
  readonly epoch: number; // the epoch changes to this line are written in now
}

export interface StoreState {
  readonly version: 1 | 2; // 2 while a restore is pending: a build that knows no pending restore refuses the store
  readonly chunkSize: number;
  readonly slotsMax: number;
  readonly nextLineId: number;
  readonly nextImageId: number;
  readonly slotsHigh: number; // slots at or above are unused (the store file is at most this long)
  readonly gcPending: boolean; // an image was removed and its chunks may not all be freed yet
  readonly restoring: string | null; // a restore from this snapshot began and has not finished
  readonly appliedOperationLsn: string; // the LSN of the last operation performed (bigint as text)
  readonly durableThroughLsn?: string; // every change below this LSN is durable in the volume (synced by an operation)
  // A restore performed at `lsn` whose chunks left (the `restore` table) the volume reads from
  // `image` (a frozen copy of snapshot `from` at that LSN) until they are copied.
  readonly restorePending?: RestorePending | null;
}

export interface RestorePending {
  readonly from: string;
  readonly image: string;
  readonly lsn: string;
}

export interface ChunkVersion {
  readonly chunk: number;
  readonly death: number; // readable by epochs below this
  readonly birth: number; // ... and at or above this
  readonly slot: number;
}

export interface ChunkCurrent {
  readonly chunk: number;
  readonly birth: number;
  readonly slot: number; // -1 for line 0: the chunk lives in the volume's image
}

export interface MetadataChange {
  state?: StoreState;
  lines?: LineEntry[];
  deleteLines?: number[];
  images?: ImageEntry[];
  deleteImages?: string[];
  versions?: { line: number; version: ChunkVersion }[];
  deleteVersions?: { line: number; chunk: number; death: number }[];
  currents?: { line: number; current: ChunkCurrent }[];
  deleteCurrents?: { line: number; chunk: number }[];
  freed?: number[]; // slots that join the free table
  taken?: number[]; // slots that leave it
  // pages of the pending restore's bitmap (bits null: the page goes); a function is called
  // inside the transaction, so the pages written are those of the moment it runs
  restorePages?: PendingPage[] | (() => PendingPage[]);
}

type Pair = [number, number];

export class SnapshotMetadata {
  private constructor(
    private readonly path: string,
    private readonly root: RootDatabase,
    private readonly stateTable: Database<StoreState, string>,
    private readonly lineTable: Database<LineEntry, number>,
    private readonly imageTable: Database<ImageEntry, string>,
    private readonly versionTable: Database<Pair, number[]>,
    private readonly currentTable: Database<Pair, number[]>,
    private readonly freeTable: Database<number, number>,
    private readonly restoreTable: Database<Buffer, number>,
  ) {}

  static open(path: string): SnapshotMetadata {
    try {
      const root = open({ path, overlappingSync: false, compression: false, mapSize: snapshotMetadataMapBytes, maxDbs: 8 });
      const table = <V, K extends string | number | number[]>(name: string) => root.openDB<V, K>(name, { keyEncoding: "ordered-binary" });
      return new SnapshotMetadata(path, root, table("state"), table("lines"), table("images"), table("versions"), table("current"), table("free"), root.openDB<Buffer, number>("restore", { keyEncoding: "ordered-binary", encoding: "binary" }));
    } catch (error) {
      throw new OperatingError("DISK_IO", { what: `open snapshot metadata ${path}` }, { cause: error });
    }
  }

  get state(): StoreState | undefined {
    return this.stateTable.get("state");
  }

  lines(): LineEntry[] {
    return [...this.lineTable.getRange({}).map(({ value }) => value)];
  }

  images(): ImageEntry[] {
    return [...this.imageTable.getRange({}).map(({ value }) => value)];
  }

  // The first preserved version of the chunk that died after `epoch` (the one an image frozen
  // at `epoch` reads, if it was born by then).
  versionAfter(line: number, chunk: number, epoch: number): ChunkVersion | undefined {
    for (const { key, value } of this.versionTable.getRange({ start: [line, chunk, epoch + 1], end: [line, chunk + 1], limit: 1 })) {
      return { chunk, death: key[2]!, birth: value[0], slot: value[1] };
    }
    return undefined;
  }

  current(line: number, chunk: number): ChunkCurrent | undefined {
    const value = this.currentTable.get([line, chunk]);
    return value === undefined ? undefined : { chunk, birth: value[0], slot: value[1] };
  }

  // A line's versions, then its current chunks, with chunk in [fromChunk, endChunk), in key
  // order and in pages of at most pageEntries: each page is read when the caller asks for it,
  // after whatever it committed for the page before (garbage collection deletes as it goes).
  *versionPages(line: number, pageEntries: number, fromChunk = 0, endChunk = Number.MAX_SAFE_INTEGER): Generator<ChunkVersion[]> {
    let start: number[] = [line, fromChunk, 0];
    for (;;) {
      const page: ChunkVersion[] = [];
      for (const { key, value } of this.versionTable.getRange({ start, end: [line, endChunk], limit: pageEntries })) {
        page.push({ chunk: key[1]!, death: key[2]!, birth: value[0], slot: value[1] });
      }
      if (page.length > 0) yield page;
      if (page.length < pageEntries) return;
      const last = page[page.length - 1]!;
      start = [line, last.chunk, last.death + 1];
    }
  }

  *currentPages(line: number, pageEntries: number, fromChunk = 0, endChunk = Number.MAX_SAFE_INTEGER): Generator<ChunkCurrent[]> {
    let start = fromChunk;
    for (;;) {
      const page: ChunkCurrent[] = [];
      for (const { key, value } of this.currentTable.getRange({ start: [line, start], end: [line, endChunk], limit: pageEntries })) {
        page.push({ chunk: key[1]!, birth: value[0], slot: value[1] });
      }
      if (page.length > 0) yield page;
      if (page.length < pageEntries) return;
      start = page[page.length - 1]!.chunk + 1;
    }
  }

  // The pending restore's bitmap pages.
  restorePages(): PendingPage[] {
    return [...this.restoreTable.getRange({}).map(({ key, value }) => ({ page: key, bits: Uint8Array.from(value) }))];
  }

  get freeSlotCount(): number {
    return this.freeTable.getKeysCount();
  }

  // Up to `count` free slots that are not in `skip` (slots handed out but not yet committed).
  freeSlots(count: number, skip: ReadonlySet<number>): number[] {
    const slots: number[] = [];
    if (count <= 0) return slots;
    for (const slot of this.freeTable.getKeys({})) {
      if (skip.has(slot)) continue;
      slots.push(slot);
      if (slots.length >= count) break;
    }
    return slots;
  }

  private apply(change: MetadataChange): void {
    if (change.state !== undefined) void this.stateTable.put("state", change.state);
    for (const line of change.lines ?? []) void this.lineTable.put(line.id, line);
    for (const line of change.deleteLines ?? []) void this.lineTable.remove(line);
    for (const image of change.images ?? []) void this.imageTable.put(image.name, image);
    for (const name of change.deleteImages ?? []) void this.imageTable.remove(name);
    for (const { line, version } of change.versions ?? []) void this.versionTable.put([line, version.chunk, version.death], [version.birth, version.slot]);
    for (const { line, chunk, death } of change.deleteVersions ?? []) void this.versionTable.remove([line, chunk, death]);
    for (const { line, current } of change.currents ?? []) void this.currentTable.put([line, current.chunk], [current.birth, current.slot]);
    for (const { line, chunk } of change.deleteCurrents ?? []) void this.currentTable.remove([line, chunk]);
    for (const slot of change.freed ?? []) void this.freeTable.put(slot, 1);
    for (const slot of change.taken ?? []) void this.freeTable.remove(slot);
    const restorePages = typeof change.restorePages === "function" ? change.restorePages() : (change.restorePages ?? []);
    for (const { page, bits } of restorePages) {
      if (bits === null) void this.restoreTable.remove(page);
      else void this.restoreTable.put(page, Buffer.from(bits));
    }
  }

  // Atomic and durable when it resolves. Concurrent commits share one LMDB transaction.
  async commit(change: MetadataChange): Promise<void> {
    try {
      await scheduleIo(this.path, () => this.root.transaction(() => this.apply(change)));
    } catch (error) {
      throw new OperatingError("DISK_IO", { what: "commit snapshot metadata" }, { cause: error });
    }
  }

  async close(): Promise<void> {
    await scheduleIo(this.path, () => this.root.close());
  }
}
