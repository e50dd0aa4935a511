// One volume's snapshots: the copy-on-write store (a file of fixed-size slots), its metadata
// (snapshot-metadata.ts, LMDB), and every operation on them. The model is in image-chain.ts.
//
// The volume's own changes pass this store as their guard (volume/change-guard.ts):
//
//   reserve (before the LSN)  chunks whose birth ≤ the newest snapshot epoch need a slot each;
//                             too few left → SNAPSHOT_STORE_FULL, nothing logged or written
//   preserve (before the image write), per such chunk, under its chunk lock:
//       read the chunk from the volume ─▶ write it to a slot ─▶ store fdatasync
//       ─▶ commit {version (0, chunk, death = epoch) → slot; birth = epoch} (durable)
//       ─▶ wait for snapshot reads that resolved to the volume's chunk ─▶ (image write)
//
// so a kill -9 anywhere leaves every snapshot readable and unchanged: before the commit the
// volume still holds the old chunk; after it the slot does, durably.
//
// Writes to a writable snapshot go to its own line: a chunk it already owns and no snapshot of
// it needs is overwritten in its slot; otherwise a new slot is filled (old content + the
// write), made durable and committed before the write is acknowledged.
//
// Operations (create, delete, refresh, restore, resize) run exclusively: the caller has the
// group quiet (Group.quiesce), and exclusive() waits for snapshot exports' I/O in flight.
//
// A restore runs in the background (docs/DESIGN-NOTES.md §7, "instant restore"). At its LSN,
// inside the pause, it only syncs the volume and commits, in one transaction: a frozen copy
// `~restore.<lsn>` of the snapshot, the bitmap of the chunks where the volume differs from it
// (the diff, from metadata), and the LSNs. From then on the volume's content is the copy's for
// every chunk still pending:
//
//   reads       Volume.read asks the overlay installed here: pending pieces come from the copy
//   a change    the guard first restores each pending chunk of its range, under the chunk's
//               lock: preserve the old chunk (as any change) ─▶ write the copy's chunk into the
//               volume ─▶ volume sync ─▶ commit "no longer pending" ─▶ (the change's write)
//   the copier  the same, restoreBatchChunksMax chunks at a time (one sync, one commit), paced
//   operations  that capture or compare the volume's chunks complete the restore first
//
// A kill -9 before a chunk's commit leaves it pending (the volume's own copy of it is never
// read then); after it the volume holds the restored chunk durably. A chunk stops being pending
// only under its lock and before the change that wanted it writes, so the copier, which checks
// under the same lock, never writes over a later change.

import { assert } from "../assert.js";
import { restoreBatchChunksMax, restoreCopyBytesPerSecondMax, restoreRetryMs, sectorSize, snapshotChainLengthMax, snapshotChunksInflightMax, snapshotDiffRegionsMax, snapshotNameLengthMax, snapshotsPerVolumeMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { settleAll } from "../settle-all.js";
import type { BlockFile, Extent } from "../io/block-file.js";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import type { ChangeGuard, ChangeTicket, ReadOverlay } from "../volume/change-guard.js";
import { SyncCoalescer } from "../volume/sync-coalescer.js";
import type { Volume } from "../volume/volume.js";
import { ChunkLocks } from "./chunk-locks.js";
import { FreshChunks } from "./fresh-chunks.js";
import { currentNeeded, frozenChain, frozenEpochs, liveLines, mustPreserve, resolveChunk, sameLocation, versionNeeded, type ChunkLocation } from "./image-chain.js";
import { ChunkBuffers } from "./chunk-buffers.js";
import { PendingChunks } from "./pending-chunks.js";
import { isName, nameRuleText } from "../names.js";
import { liveEpoch, SnapshotMetadata, type RestorePending, type ChainLink, type ChunkCurrent, type ImageEntry, type LineEntry, type MetadataChange, type StoreState } from "./snapshot-metadata.js";


// An operator's snapshot name (the node's own start with '~', outside this alphabet).
export function checkSnapshotName(name: string): void {
  if (!isName(name, snapshotNameLengthMax)) {
    throw new OperatingError("REQUEST_INVALID", `snapshot name "${name}": 1-${snapshotNameLengthMax} ${nameRuleText}`);
  }
}

// The chain of the volume itself: its line, live.
const volumeChain: readonly ChainLink[] = [{ line: 0, epoch: liveEpoch }];
const gcBatchEntries = 4096; // metadata entries examined per garbage-collection commit
const diffWindowChunks = 65_536; // chunks whose candidates are gathered at once by a diff
const restoreCopyPrefix = "~restore."; // the frozen copy a restore in the background reads from

function isRestoreCopy(name: string): boolean {
  return name.startsWith(restoreCopyPrefix);
}

export interface SnapshotStoreOptions {
  readonly chunkSize: number; // used when the store is created; an existing store keeps its own
  readonly storeSizeMax: number;
  readonly nowMs: () => number;
  // The background copier's pause between batches (a timer of the node's clock); without it the
  // copier only yields to the event loop. restoreInBackground false: no copier at all (tests
  // drive copyRestoreBatch() themselves).
  readonly sleep?: (ms: number) => Promise<void>;
  readonly restoreInBackground?: boolean;
}

export interface RestoreResult {
  readonly bytesWritten: number; // what the restore writes back into the volume (all of it after the pause)
  readonly chunks: number; // chunks where the volume differed from the snapshot
  readonly chunksPending: number; // left to the background copy
  readonly bytesPending: number;
}

export interface RestoreStatus {
  readonly from: string;
  readonly lsn: string;
  readonly chunksLeft: number;
  readonly bytesLeft: number;
  readonly error: string | null; // the copier's last disk error (it tries again)
}

export interface SnapshotStats {
  preservedChunks: number;
  snapshotWrites: number;
  slotsAllocated: number;
  slotsFreed: number;
  storeFullErrors: number;
}

export interface DiffResult {
  readonly regions: { offset: number; length: number }[];
  readonly totalBytes: number;
  readonly truncated: boolean; // more regions than snapshotDiffRegionsMax (totalBytes is still exact)
}

export interface SnapshotInfo {
  readonly name: string; // volume@snapshot
  readonly volume: string;
  readonly snapshot: string;
  readonly parent: string; // volume or volume@snapshot
  readonly writable: boolean;
  readonly size: number;
  readonly createdLsn: string;
  readonly createdAtMs: number;
  readonly refreshedAtMs: number | null;
  readonly depth: number;
  readonly storeBytes: number | null; // null where not counted (an operation's answer; `list` counts)
}

export interface Reservation {
  count: number;
}

export class SnapshotStore implements ChangeGuard {
  private state!: StoreState;
  private readonly lines = new Map<number, LineEntry>();
  private readonly images = new Map<string, ImageEntry>();
  private epochs = new Map<number, number[]>(); // frozen epochs per line (image-chain.ts)
  private live = new Set<number>([0]);
  private readonly fresh = new FreshChunks();
  private readonly locks = new ChunkLocks();
  private readonly storeSync: SyncCoalescer;
  private buffers!: ChunkBuffers;
  private reserved = 0; // slots promised to changes between reserve() and preserve()
  private readonly uncommitted = new Set<number>(); // slots handed out, not yet in a commit
  private slotsFree = 0;
  private ioActive = 0;
  private ioIdle: (() => void)[] = [];
  private paused: Promise<void> | null = null;
  private pending: PendingChunks | null = null; // a restore's chunks left (null: none pending)
  private restoreChain: readonly ChainLink[] | null = null; // the frozen copy they read from
  private copyCursor = 0;
  private copier: Promise<void> | null = null;
  private copierBatch: Promise<number> | null = null;
  private closing = false;
  private restoreError: string | null = null;
  readonly stats: SnapshotStats = { preservedChunks: 0, snapshotWrites: 0, slotsAllocated: 0, slotsFreed: 0, storeFullErrors: 0 };
  lastStoreFullAtMs: number | null = null;

  private constructor(
    private readonly volume: Volume,
    private readonly store: BlockFile,
    private readonly metadata: SnapshotMetadata,
    private readonly options: SnapshotStoreOptions,
  ) {
    this.storeSync = new SyncCoalescer(() => this.store.datasync());
  }

  static async open(volume: Volume, store: BlockFile, metadataPath: string, options: SnapshotStoreOptions): Promise<SnapshotStore> {
    const metadata = SnapshotMetadata.open(metadataPath);
    const snapshots = new SnapshotStore(volume, store, metadata, options);
    await snapshots.load();
    return snapshots;
  }

  private async load(): Promise<void> {
    const stored = this.metadata.state;
    if (stored === undefined) {
      assert(Number.isInteger(Math.log2(this.options.chunkSize)) && this.options.chunkSize % sectorSize === 0, "chunk size");
      this.state = { version: 1, chunkSize: this.options.chunkSize, slotsMax: 0, nextLineId: 1, nextImageId: 1, slotsHigh: 0, gcPending: false, restoring: null, appliedOperationLsn: "0" };
      await this.metadata.commit({ state: this.state, lines: [{ id: 0, epoch: 1 }] });
    } else {
      if (stored.version !== 1 && stored.version !== 2) throw new OperatingError("CONFIG_INVALID", `the snapshot store of volume ${this.volume.name} has format version ${String(stored.version)}; this build reads versions 1 and 2`);
      this.state = stored;
    }
    this.state = { ...this.state, slotsMax: Math.floor(this.options.storeSizeMax / this.state.chunkSize) };
    this.buffers = new ChunkBuffers(this.state.chunkSize);
    for (const line of this.metadata.lines()) this.lines.set(line.id, line);
    for (const image of this.metadata.images()) this.images.set(image.name, image);
    this.slotsFree = this.metadata.freeSlotCount;
    this.indexImages();
    if (this.state.gcPending) await this.collectGarbage();
    const restorePending = this.state.restorePending ?? null;
    if (restorePending !== null) {
      const pending = PendingChunks.fromPages(this.metadata.restorePages());
      assert(this.images.has(restorePending.image), "a pending restore has its copy");
      if (pending.count > 0) this.beginBackground(pending, this.images.get(restorePending.image)!.chain);
      else {
        // every chunk was restored; the crash came before the commit that says so
        this.state = { ...this.state, version: 1, restorePending: null };
        await this.metadata.commit({ state: this.state });
      }
    }
    await this.dropRestoreCopies();
    this.volume.changeGuard = this;
  }

  get chunkSize(): number {
    return this.state.chunkSize;
  }

  // The LSN of the last operation performed here (each operation commits it with its effect).
  get appliedOperationLsn(): bigint {
    return BigInt(this.state.appliedOperationLsn ?? "0");
  }

  // Every change with a smaller LSN is durable in the volume: an operation synced it there.
  // Redo skips them: replaying an older write over a restored (or snapshotted) volume would
  // undo the operation.
  get durableThroughLsn(): bigint {
    return BigInt(this.state.durableThroughLsn ?? "0");
  }

  get snapshotCount(): number {
    return this.names().length;
  }

  private indexImages(): void {
    this.epochs = frozenEpochs(this.images.values());
    this.live = liveLines(this.images.values());
  }

  // ---- Slots ----

  private get slotsAvailable(): number {
    return this.slotsFree + (this.state.slotsMax - this.state.slotsHigh) - this.reserved;
  }

  private storeFull(what: string): OperatingError {
    this.stats.storeFullErrors += 1;
    this.lastStoreFullAtMs = this.options.nowMs();
    return new OperatingError("SNAPSHOT_STORE_FULL", { volume: this.volume.name, what, storeBytesMax: this.state.slotsMax * this.state.chunkSize });
  }

  // Slots promised to one change: taken from `reserved` as they are used.
  private reservation(count: number): Reservation {
    if (count > this.slotsAvailable) throw this.storeFull(`${count} chunk(s) to preserve`);
    this.reserved += count;
    return { count };
  }

  private unreserve(reservation: Reservation): void {
    this.reserved -= reservation.count;
    reservation.count = 0;
  }

  // A slot for one commit: from the free table, else past the high-water mark.
  private takeSlot(reservation: Reservation | null): { slot: number; fromFree: boolean } {
    if (reservation !== null && reservation.count > 0) {
      reservation.count -= 1;
      this.reserved -= 1;
    } else if (this.slotsAvailable <= 0) {
      throw this.storeFull("a snapshot write");
    }
    let slot: number;
    let fromFree = false;
    const free = this.slotsFree > 0 ? this.metadata.freeSlots(1, this.uncommitted) : [];
    if (free.length > 0) {
      slot = free[0]!;
      fromFree = true;
      this.slotsFree -= 1;
    } else {
      assert(this.state.slotsHigh < this.state.slotsMax, "a slot was available");
      slot = this.state.slotsHigh;
      this.state = { ...this.state, slotsHigh: slot + 1 };
    }
    this.uncommitted.add(slot);
    this.stats.slotsAllocated += 1;
    return { slot, fromFree };
  }

  private slotCommitted(slot: number): void {
    this.uncommitted.delete(slot);
  }

  private returnSlot(slot: number, fromFree: boolean): void {
    this.uncommitted.delete(slot);
    if (fromFree) this.slotsFree += 1; // still in the free table: nothing committed took it
  }

  private slotOffset(slot: number): number {
    return slot * this.state.chunkSize;
  }

  // ---- The volume's changes (ChangeGuard) ----

  private chunkRange(offset: number, length: number): { first: number; last: number } {
    const first = Math.floor(offset / this.state.chunkSize);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / this.state.chunkSize);
    return { first, last };
  }

  // Whether a change to the volume's chunk must preserve it first (and caches "no").
  private volumeChunkNeedsPreserving(chunk: number): boolean {
    if (this.fresh.has(chunk)) return false;
    const birth = this.metadata.current(0, chunk)?.birth ?? 0;
    if (mustPreserve(birth, this.epochs.get(0))) return true;
    this.fresh.add(chunk);
    return false;
  }

  reserve(offset: number, length: number): ChangeTicket | null {
    const { first, last } = this.chunkRange(offset, length);
    const restoring = this.pending !== null && this.pending.anyIn(first, last);
    if (!this.epochs.has(0) && !restoring) return null; // no snapshot reads the volume's line
    let needed = 0;
    if (this.epochs.has(0)) for (let chunk = first; chunk <= last; chunk += 1) if (this.volumeChunkNeedsPreserving(chunk)) needed += 1;
    if (needed === 0 && !restoring) return null;
    const reservation = this.reservation(needed);
    return {
      preserve: async () => {
        // a pending chunk gets the snapshot's content first (a partial write keeps the rest)
        if (this.pending !== null) await this.restoreChunks(this.pendingIn(first, last), reservation);
        await this.preserveVolumeChunks(first, last, reservation);
        for (let chunk = first; chunk <= last; chunk += 1) await this.locks.drained(chunk);
      },
      release: () => this.unreserve(reservation),
    };
  }

  // The chunks first..last of one change, snapshotChunksInflightMax at a time: their store
  // syncs and metadata commits run together (one fdatasync, few transactions), where one chunk
  // after another cost a sync and a commit each (a 4 MiB resync piece at 64 KiB chunks waited
  // for 64 of each in turn). Each chunk is still preserved under its own lock.
  private async preserveVolumeChunks(first: number, last: number, reservation: Reservation | null): Promise<void> {
    for (let start = first; start <= last; start += snapshotChunksInflightMax) {
      const end = Math.min(last, start + snapshotChunksInflightMax - 1);
      const window: Promise<boolean>[] = [];
      for (let chunk = start; chunk <= end; chunk += 1) window.push(this.preserveVolumeChunk(chunk, reservation));
      await settleAll(window);
    }
  }

  // Copies the volume's chunk into a slot and commits it as a version, unless that is no longer
  // needed (another change did it meanwhile). Returns whether a slot was used.
  private preserveVolumeChunk(chunk: number, reservation: Reservation | null): Promise<boolean> {
    return this.locks.run(`0:${chunk}`, () => this.preserveVolumeChunkLocked(chunk, reservation));
  }

  // The same, with the chunk's lock held by the caller.
  private async preserveVolumeChunkLocked(chunk: number, reservation: Reservation | null): Promise<boolean> {
    if (!this.volumeChunkNeedsPreserving(chunk)) return false;
    const line = this.lines.get(0)!;
    const birth = this.metadata.current(0, chunk)?.birth ?? 0;
    const { slot, fromFree } = this.takeSlot(reservation);
    const data = this.buffers.take();
    try {
      const offset = chunk * this.state.chunkSize;
      const inVolume = Math.max(0, Math.min(this.state.chunkSize, this.volume.size - offset));
      if (inVolume > 0) await this.volume.readPhysical(data.subarray(0, inVolume), offset);
      data.fill(0, inVolume);
      await this.store.write([data], this.slotOffset(slot));
      await this.storeSync.sync();
      await this.metadata.commit({
        state: this.state,
        versions: [{ line: 0, version: { chunk, death: line.epoch, birth, slot } }],
        currents: [{ line: 0, current: { chunk, birth: line.epoch, slot: -1 } }],
        taken: fromFree ? [slot] : [],
      });
    } catch (error) {
      this.returnSlot(slot, fromFree);
      throw error;
    } finally {
      this.buffers.give(data);
    }
    this.slotCommitted(slot);
    this.fresh.add(chunk);
    this.stats.preservedChunks += 1;
    return true;
  }

  // ---- Snapshot exports' I/O ----

  private async io<T>(action: () => Promise<T>): Promise<T> {
    while (this.paused !== null) await this.paused;
    this.ioActive += 1;
    try {
      return await action();
    } finally {
      this.ioActive -= 1;
      if (this.ioActive === 0) for (const wake of this.ioIdle.splice(0)) wake();
    }
  }

  // Runs an operation with no snapshot I/O in flight and none starting. The caller holds the
  // group quiet for the volume's own changes.
  async exclusive<T>(action: () => Promise<T>): Promise<T> {
    while (this.paused !== null) await this.paused;
    let resume!: () => void;
    this.paused = new Promise<void>((resolve) => (resume = resolve));
    try {
      if (this.ioActive > 0) await new Promise<void>((resolve) => this.ioIdle.push(resolve));
      return await action();
    } finally {
      this.paused = null;
      resume();
    }
  }

  image(name: string): ImageEntry {
    const image = isRestoreCopy(name) ? undefined : this.images.get(name);
    if (image === undefined) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: `${this.volume.name}@${name}` });
    return image;
  }

  // A restore's frozen copy is no snapshot: no operation, export or list names it.
  has(name: string): boolean {
    return !isRestoreCopy(name) && this.images.has(name);
  }

  names(): string[] {
    return [...this.images.keys()].filter((name) => !isRestoreCopy(name));
  }

  private locate(chain: readonly ChainLink[], chunk: number): ChunkLocation {
    return resolveChunk(chain, chunk, this.metadata);
  }

  // Reads an image's range; the NBD layer has checked it against the image's size.
  read(name: string, offset: number, target: Buffer): Promise<void> {
    return this.io(() => this.readChain(this.image(name).chain, offset, target));
  }

  private async readChain(chain: readonly ChainLink[], offset: number, target: Buffer): Promise<void> {
    const pieces: Promise<void>[] = [];
    const releases: (() => void)[] = [];
    try {
      this.forEachPiece(offset, target.length, (chunk, inner, at, length) => {
        const piece = target.subarray(at, at + length);
        const location = this.locate(chain, chunk);
        if (location.kind === "volume") {
          releases.push(this.locks.hold(chunk)); // a preserving change waits for this read
          pieces.push(this.readVolume(piece, chunk * this.state.chunkSize + inner));
        } else if (location.kind === "slot") {
          pieces.push(this.store.read(piece, this.slotOffset(location.slot) + inner));
        } else {
          piece.fill(0);
        }
      });
      await Promise.all(pieces);
    } finally {
      for (const release of releases) release();
    }
  }

  // The volume may be smaller now than when the image was taken: past its end it reads zero
  // there only if no version was preserved, which happens when nothing needed it.
  private async readVolume(target: Buffer, offset: number): Promise<void> {
    const inVolume = Math.max(0, Math.min(target.length, this.volume.size - offset));
    if (inVolume > 0) await this.volume.readPhysical(target.subarray(0, inVolume), offset);
    target.fill(0, inVolume);
  }

  private forEachPiece(offset: number, length: number, visit: (chunk: number, inner: number, at: number, length: number) => void): void {
    const size = this.state.chunkSize;
    for (let at = 0; at < length; ) {
      const position = offset + at;
      const chunk = Math.floor(position / size);
      const inner = position - chunk * size;
      const pieceLength = Math.min(size - inner, length - at);
      visit(chunk, inner, at, pieceLength);
      at += pieceLength;
    }
  }

  // A write to a writable snapshot (data null: zeroes). durable: FUA.
  // Before a write to a writable snapshot is logged: the slots it may need (a chunk it does not
  // own yet, or one a snapshot of it still reads), or SNAPSHOT_STORE_FULL while nothing is
  // logged. The write then takes them (release() returns what it did not use).
  reserveWrite(name: string, offset: number, length: number): { reservation: Reservation; release: () => void } {
    const image = this.image(name);
    if (!image.writable) throw new OperatingError("READ_ONLY", { snapshot: `${this.volume.name}@${name}` });
    const line = image.chain[0]!.line;
    const { first, last } = this.chunkRange(offset, length);
    let needed = 0;
    for (let chunk = first; chunk <= last; chunk += 1) {
      const current = this.metadata.current(line, chunk);
      if (current === undefined || mustPreserve(current.birth, this.epochs.get(line))) needed += 1;
    }
    const reservation = this.reservation(needed);
    return { reservation, release: () => this.unreserve(reservation) };
  }

  write(name: string, offset: number, data: Buffer | null, length: number, durable: boolean, reservation: Reservation | null = null): Promise<void> {
    const image = this.image(name);
    if (!image.writable) return Promise.reject(new OperatingError("READ_ONLY", { snapshot: `${this.volume.name}@${name}` }));
    return this.writeImage(image, offset, data, length, durable, reservation);
  }

  private writeImage(image: ImageEntry, offset: number, data: Buffer | null, length: number, durable: boolean, reservation: Reservation | null): Promise<void> {
    return this.io(async () => {
      const pieces: { chunk: number; inner: number; at: number; length: number }[] = [];
      this.forEachPiece(offset, length, (chunk, inner, at, pieceLength) => pieces.push({ chunk, inner, at, length: pieceLength }));
      // a bounded number of chunks at once: a large trim must not hold a chunk buffer per chunk
      for (let start = 0; start < pieces.length; start += snapshotChunksInflightMax) {
        await Promise.all(pieces.slice(start, start + snapshotChunksInflightMax).map((piece) =>
          this.writeChunk(image, piece.chunk, piece.inner, data === null ? null : data.subarray(piece.at, piece.at + piece.length), piece.length, durable, reservation)));
      }
      this.stats.snapshotWrites += 1;
    });
  }

  private writeChunk(image: ImageEntry, chunk: number, inner: number, data: Buffer | null, length: number, durable: boolean, reservation: Reservation | null): Promise<void> {
    const line = image.chain[0]!.line;
    return this.locks.run(`${line}:${chunk}`, async () => {
      const current = this.metadata.current(line, chunk);
      const epoch = this.lines.get(line)!.epoch;
      if (current !== undefined && !mustPreserve(current.birth, this.epochs.get(line))) {
        await this.store.write([data ?? Buffer.alloc(length)], this.slotOffset(current.slot) + inner, durable);
        return;
      }
      const content = this.buffers.take();
      content.fill(0);
      try {
        await this.fillAndCommit(image, line, chunk, epoch, current, content, inner, data, length, reservation);
      } finally {
        this.buffers.give(content);
      }
    });
  }

  // A new slot for the chunk: its content so far, the change on top, durable before the commit.
  private async fillAndCommit(image: ImageEntry, line: number, chunk: number, epoch: number, current: ChunkCurrent | undefined, content: Buffer, inner: number, data: Buffer | null, length: number, reservation: Reservation | null): Promise<void> {
    if (length < this.state.chunkSize) {
      // the chunk's content so far: the line's own, or the image below it
      const below = current !== undefined ? ({ kind: "slot", slot: current.slot } as const) : this.locate(image.chain.slice(1), chunk);
      await this.readLocation(below, chunk, content);
    }
    if (data !== null) data.copy(content, inner);
    else content.fill(0, inner, inner + length);
    const { slot, fromFree } = this.takeSlot(reservation);
    try {
      await this.store.write([content], this.slotOffset(slot));
      await this.storeSync.sync();
      const change: MetadataChange = {
        state: this.state,
        currents: [{ line, current: { chunk, birth: epoch, slot } }],
        taken: fromFree ? [slot] : [],
      };
      if (current !== undefined) change.versions = [{ line, version: { chunk, death: epoch, birth: current.birth, slot: current.slot } }];
      await this.metadata.commit(change);
    } catch (error) {
      this.returnSlot(slot, fromFree);
      throw error;
    }
    this.slotCommitted(slot);
  }

  private async readLocation(location: ChunkLocation, chunk: number, target: Buffer): Promise<void> {
    if (location.kind === "slot") await this.store.read(target, this.slotOffset(location.slot));
    else if (location.kind === "volume") {
      const release = this.locks.hold(chunk);
      try {
        await this.readVolume(target, chunk * this.state.chunkSize);
      } finally {
        release();
      }
    } else target.fill(0);
  }

  // Everything written to writable snapshots before the call is durable when it resolves.
  flush(): Promise<void> {
    return this.storeSync.sync();
  }

  // Allocated extents of an image in [offset, offset+length): chunks in the store are data,
  // chunks in the volume are what the volume's allocation says.
  async allocation(name: string, offset: number, length: number, extentsMax: number): Promise<Extent[] | null> {
    const chain = this.image(name).chain;
    const extents: Extent[] = [];
    const add = (extentOffset: number, extentLength: number) => {
      const last = extents[extents.length - 1];
      if (last !== undefined && last.offset + last.length === extentOffset) extents[extents.length - 1] = { offset: last.offset, length: last.length + extentLength };
      else extents.push({ offset: extentOffset, length: extentLength });
    };
    let stop = false;
    this.forEachPiece(offset, length, (chunk, _inner, at, pieceLength) => {
      if (stop) return;
      const location = this.locate(chain, chunk);
      const position = offset + at;
      if (location.kind === "slot") add(position, pieceLength);
      else if (location.kind === "volume") {
        const inVolume = Math.max(0, Math.min(pieceLength, this.volume.size - position));
        const found = inVolume > 0 ? this.volume.allocation(position, inVolume, extentsMax) : [];
        if (found === null) add(position, inVolume);
        else for (const extent of found) add(extent.offset, extent.length);
      }
      if (extents.length >= extentsMax) stop = true;
    });
    return extents.slice(0, extentsMax);
  }

  // ---- Operations (the caller holds the group quiet and runs them through exclusive()) ----

  // An image's chain and size (null: the volume).
  private chainOf(name: string | null): readonly ChainLink[] {
    return name === null ? volumeChain : this.image(name).chain;
  }

  private sizeOf(name: string | null): number {
    return name === null ? this.volume.size : this.image(name).size;
  }

  // The chain of an image taken now of `source` (null: the volume), and the line epochs it moves.
  private frozenChainOf(source: string | null): { chain: ChainLink[]; lines: LineEntry[] } {
    const sourceChain = this.chainOf(source);
    const chain = frozenChain(sourceChain, (line) => this.lines.get(line)!.epoch);
    const top = sourceChain[0]!;
    const lines = top.epoch === liveEpoch ? [{ id: top.line, epoch: this.lines.get(top.line)!.epoch + 1 }] : [];
    return { chain, lines };
  }

  // The chain of image `name` made now of `source` (null: the volume), with a line of its own
  // on top when writable, and the line epochs that moves (create, refresh, a twin's build).
  private newChain(source: string | null, writable: boolean, name: string): { chain: ChainLink[]; lines: LineEntry[]; nextLineId: number } {
    const frozen = this.frozenChainOf(source);
    const id = this.state.nextLineId;
    const made = writable ? { chain: [{ line: id, epoch: liveEpoch }, ...frozen.chain], lines: [...frozen.lines, { id, epoch: 1 }], nextLineId: id + 1 } : { ...frozen, nextLineId: id };
    if (made.chain.length > snapshotChainLengthMax) throw new OperatingError("REQUEST_TOO_LARGE", { snapshot: name, chainLengthMax: snapshotChainLengthMax });
    return made;
  }

  // Takes images and line epochs a commit just made durable into memory. An image that froze
  // the volume's line makes every chunk of it one a change must preserve again.
  private adopt(images: readonly ImageEntry[], lines: readonly LineEntry[]): void {
    for (const line of lines) this.lines.set(line.id, line);
    for (const image of images) this.images.set(image.name, image);
    this.indexImages();
    if (images.some((image) => image.chain.some((link) => link.line === 0 && link.epoch !== liveEpoch))) this.fresh.clear();
  }

  // What the volume and the store hold is on disk (before an image freezes it, after a restore).
  private async syncVolumeAndStore(): Promise<void> {
    await Promise.all([this.volume.flush(), this.storeSync.sync()]);
  }

  // internal: a snapshot the node takes for itself (a name outside the operators' alphabet).
  async create(request: { name: string; from: string | null; writable: boolean; lsn: bigint; internal?: boolean }): Promise<SnapshotInfo> {
    if (!request.internal) checkSnapshotName(request.name);
    if (this.images.has(request.name)) throw new OperatingError("SNAPSHOT_EXISTS", { snapshot: `${this.volume.name}@${request.name}` });
    if (request.from === null) await this.completeRestore(); // the snapshot freezes the volume's chunks
    if (this.images.size >= snapshotsPerVolumeMax) throw new OperatingError("REQUEST_TOO_LARGE", { volume: this.volume.name, snapshotsMax: snapshotsPerVolumeMax });
    const size = this.sizeOf(request.from);
    const { chain, lines, nextLineId } = this.newChain(request.from, request.writable, request.name);
    await this.syncVolumeAndStore(); // what the snapshot reads from the volume is on disk
    const image: ImageEntry = {
      id: this.state.nextImageId,
      name: request.name,
      parent: request.from,
      writable: request.writable,
      size,
      createdLsn: String(request.lsn),
      createdAtMs: this.options.nowMs(),
      refreshedAtMs: null,
      chain,
    };
    const state = { ...this.state, nextImageId: image.id + 1, nextLineId, appliedOperationLsn: String(request.lsn), durableThroughLsn: String(request.lsn) };
    await this.metadata.commit({ state, images: [image], lines });
    this.state = { ...this.state, nextImageId: state.nextImageId, nextLineId, appliedOperationLsn: state.appliedOperationLsn, durableThroughLsn: state.durableThroughLsn };
    this.adopt([image], lines);
    return this.info(image);
  }

  // Gives a snapshot another name (a secondary keeping a twin its policy would not delete);
  // snapshots taken of it follow.
  async rename(name: string, to: string): Promise<void> {
    const image = this.image(name);
    assert(!this.images.has(to), `rename ${name}: ${to} exists`);
    const renamed = { ...image, name: to };
    const children = this.children(name).map((child) => ({ ...child, parent: to }));
    await this.metadata.commit({ deleteImages: [name], images: [renamed, ...children] });
    this.images.delete(name);
    for (const entry of [renamed, ...children]) this.images.set(entry.name, entry);
  }

  // The replica's log restarts at lsn + 1 on another history (a resync after the primary lost
  // records this node had applied): the LSNs the store remembers (the last operation performed,
  // what is durable through) belong to the old history, and LSNs of the new one at or below
  // them would be taken for done. Everything the store holds is durable now (the replica
  // checkpointed first), so they become lsn.
  async rebase(lsn: bigint): Promise<void> {
    if (this.appliedOperationLsn <= lsn && this.durableThroughLsn <= lsn) return;
    await this.storeSync.sync();
    this.state = { ...this.state, appliedOperationLsn: String(lsn), durableThroughLsn: String(lsn) };
    await this.metadata.commit({ state: this.state });
  }

  // A twin built at the end of a resync (docs/DESIGN-NOTES.md §8, "when the exact point is
  // lost"): the snapshot `entry.name` becomes, in O(1), an image of `entry.parent` (null: the
  // volume) as it is now, with a line of its own on top, whatever it was before (an existing
  // twin keeps its children and their content, as a refresh does). The primary then ships the
  // regions where its snapshot differs from that base (writeTwin). The twin has the primary's
  // size, creation LSN and writability; a read-only one simply never takes a write through the
  // stream again, so its own line stays as the build left it.
  async buildTwin(entry: { name: string; parent: string | null; writable: boolean; size: number; createdLsn: bigint }, lsn: bigint): Promise<void> {
    await this.completeRestore(); // the twin is built on the volume's (or a snapshot's) content now
    const existing = this.images.get(entry.name);
    if (existing === undefined && this.images.size >= snapshotsPerVolumeMax) throw new OperatingError("REQUEST_TOO_LARGE", { volume: this.volume.name, snapshotsMax: snapshotsPerVolumeMax });
    if (entry.parent !== null && (entry.parent === entry.name || this.isDescendantOf(entry.parent, entry.name))) throw new OperatingError("REQUEST_INVALID", `${entry.name} cannot be built on its own descendant ${entry.parent}`);
    const { chain, lines, nextLineId } = this.newChain(entry.parent, true, entry.name);
    await this.syncVolumeAndStore();
    const id = existing?.id ?? this.state.nextImageId;
    const image: ImageEntry = {
      id,
      name: entry.name,
      parent: entry.parent,
      writable: entry.writable,
      size: entry.size,
      createdLsn: String(entry.createdLsn),
      createdAtMs: existing?.createdAtMs ?? this.options.nowMs(),
      refreshedAtMs: existing === undefined ? null : this.options.nowMs(),
      chain,
    };
    const applied = this.appliedOperationLsn > lsn ? this.appliedOperationLsn : lsn;
    this.state = { ...this.state, nextImageId: existing === undefined ? id + 1 : this.state.nextImageId, nextLineId, gcPending: existing !== undefined, appliedOperationLsn: String(applied), durableThroughLsn: String(lsn) };
    await this.metadata.commit({ state: this.state, images: [image], lines });
    this.adopt([image], lines);
    if (existing !== undefined) await this.collectGarbage();
  }

  // Local read-only copies of images (source null: the volume) as they are now, in one commit:
  // what a twin build reads at one point while the images go on changing (and are refreshed,
  // deleted or written) after it. The copies change nothing the store's LSNs say.
  async freezeImages(copies: readonly { name: string; source: string | null }[]): Promise<void> {
    if (copies.length === 0) return;
    assert(copies.every((copy) => copy.name.startsWith("~") && !this.images.has(copy.name)), "frozen copies have new local names");
    assert(new Set(copies.map((copy) => copy.source)).size === copies.length, "one copy per image");
    if (copies.some((copy) => copy.source === null)) await this.completeRestore();
    await this.syncVolumeAndStore();
    const images: ImageEntry[] = [];
    const lines: LineEntry[] = [];
    let nextImageId = this.state.nextImageId;
    for (const copy of copies) {
      const frozen = this.frozenChainOf(copy.source); // each image's live line is its own: one bump each
      lines.push(...frozen.lines);
      // no parent: a copy is nobody's child (its source may be deleted or refreshed meanwhile)
      images.push({ id: nextImageId++, name: copy.name, parent: null, writable: false, size: this.sizeOf(copy.source), createdLsn: String(this.appliedOperationLsn), createdAtMs: this.options.nowMs(), refreshedAtMs: null, chain: frozen.chain });
    }
    this.state = { ...this.state, nextImageId };
    await this.metadata.commit({ state: this.state, images, lines });
    this.adopt(images, lines);
  }

  // Drops local images no other image was taken of (frozen copies), in one commit, and frees
  // what only they held.
  async dropImages(names: readonly string[]): Promise<void> {
    const present = names.filter((name) => this.images.has(name));
    if (present.length === 0) return;
    assert(present.every((name) => name.startsWith("~") && this.children(name).length === 0), "only local images nothing was taken of are dropped");
    this.state = { ...this.state, gcPending: true };
    await this.metadata.commit({ state: this.state, deleteImages: present });
    for (const name of present) this.images.delete(name);
    this.indexImages();
    await this.collectGarbage();
  }

  // A region of a twin being built (data null: zeroes), into its own line. Durable with flush().
  writeTwin(name: string, offset: number, data: Buffer | null, length: number): Promise<void> {
    return this.writeImage(this.image(name), offset, data, length, false, null);
  }

  children(name: string): ImageEntry[] {
    return [...this.images.values()].filter((image) => image.parent === name);
  }

  // Deletes the snapshot (and, recursive, every snapshot taken of it), then frees the chunks
  // no other image reads. Returns the names deleted, children first.
  async delete(name: string, recursive: boolean, lsn: bigint): Promise<string[]> {
    this.image(name);
    await this.dropRestoreCopies(); // a finished restore's copy goes with the next operation
    const doomed: string[] = [];
    const collect = (parent: string) => {
      for (const child of this.children(parent)) {
        if (!recursive) throw new OperatingError("SNAPSHOT_HAS_CHILDREN", { snapshot: `${this.volume.name}@${parent}`, children: this.children(parent).map((image) => image.name).join(",") });
        collect(child.name);
      }
      doomed.push(parent);
    };
    collect(name);
    this.state = { ...this.state, gcPending: true, appliedOperationLsn: String(lsn) };
    await this.metadata.commit({ state: this.state, deleteImages: doomed });
    for (const gone of doomed) this.images.delete(gone);
    this.indexImages();
    await this.collectGarbage();
    return doomed;
  }

  // Makes a snapshot equal to the current content of its parent (or of the volume), keeping its
  // name, its children and their content. O(1) but for freeing what the old content held.
  async refresh(name: string, fromVolume: boolean, lsn: bigint): Promise<SnapshotInfo> {
    const image = this.image(name);
    const source = fromVolume ? null : image.parent;
    if (source !== null && this.isDescendantOf(source, name)) throw new OperatingError("REQUEST_INVALID", `${name} cannot be refreshed from its own descendant ${source}`);
    const refreshed = await this.rechain(image, source, image.writable, lsn, { parent: fromVolume ? null : image.parent, refreshedAtMs: this.options.nowMs() });
    return this.info(refreshed);
  }

  // Gives an image a new chain over `source`'s (null: the volume; its own line if writable) and
  // the source's size, in one commit, keeping its name and its children and their content; then
  // frees what only the old chain held. O(1) but for that freeing. A pending restore completes
  // first when the chain takes the volume's chunks. Refresh and sync.
  private async rechain(image: ImageEntry, source: string | null, writable: boolean, lsn: bigint, fields: Partial<ImageEntry>): Promise<ImageEntry> {
    if (source === null) await this.completeRestore();
    const size = this.sizeOf(source);
    const { chain, lines, nextLineId } = this.newChain(source, writable, image.name);
    await this.syncVolumeAndStore(); // what it reads from the volume is on disk
    const rechained: ImageEntry = { ...image, ...fields, chain, size };
    this.state = { ...this.state, nextLineId, gcPending: true, appliedOperationLsn: String(lsn), durableThroughLsn: String(lsn) };
    await this.metadata.commit({ state: this.state, images: [rechained], lines });
    this.adopt([rechained], lines);
    await this.collectGarbage();
    return rechained;
  }

  private isDescendantOf(candidate: string, ancestor: string): boolean {
    for (let at: string | null = candidate; at !== null; at = this.images.get(at)?.parent ?? null) if (at === ancestor) return true;
    return false;
  }

  // Frees versions and chunks that no image reads any more, in bounded commits.
  private async collectGarbage(): Promise<void> {
    const lineIds = [...this.lines.keys()];
    for (const line of lineIds) {
      const epochs = this.epochs.get(line);
      const live = this.live.has(line);
      for (const versions of this.metadata.versionPages(line, gcBatchEntries)) {
        const dead = versions.filter((version) => !versionNeeded(version.birth, version.death, epochs));
        if (dead.length > 0) await this.free({ deleteVersions: dead.map((version) => ({ line, chunk: version.chunk, death: version.death })) }, dead.map((version) => version.slot));
      }
      if (line === 0) continue; // the volume's current chunks are the volume itself
      for (const currents of this.metadata.currentPages(line, gcBatchEntries)) {
        const dead = currents.filter((current) => !currentNeeded(current.birth, live, epochs));
        if (dead.length > 0) await this.free({ deleteCurrents: dead.map((current) => ({ line, chunk: current.chunk })) }, dead.map((current) => current.slot));
      }
      if (!live && epochs === undefined) {
        await this.metadata.commit({ deleteLines: [line] });
        this.lines.delete(line);
      }
    }
    this.state = { ...this.state, gcPending: false };
    await this.metadata.commit({ state: this.state });
  }

  // The space goes back first, and only then may the slots be taken again: a change to the
  // volume that preserves a chunk meanwhile (a twin build's frozen copies are dropped while
  // writes go on) could otherwise take a freed slot, fill it, and have it punched after (the
  // simulator found a snapshot reading zeroes so). Nothing reads a dead version, so a crash
  // between the two leaves only what the next collection frees again.
  private async free(change: MetadataChange, slots: number[]): Promise<void> {
    await this.releaseSpace(slots);
    await this.metadata.commit({ ...change, freed: slots });
    this.slotsFree += slots.length;
    this.stats.slotsFreed += slots.length;
  }

  // Gives freed slots' space back to the file system (a hint: a slot is rewritten whole anyway).
  private async releaseSpace(slots: number[]): Promise<void> {
    if (this.store.isBlockDevice) return;
    slots.sort((a, b) => a - b);
    for (let index = 0; index < slots.length; ) {
      let end = index + 1;
      while (end < slots.length && slots[end] === slots[end - 1]! + 1) end += 1;
      await this.store.punchHole(this.slotOffset(slots[index]!), (end - index) * this.state.chunkSize).catch(() => undefined);
      index = end;
    }
  }

  // Regions where two images (null: the volume) may differ, from metadata alone: a chunk
  // differs when the two resolve to different places. Sizes that differ add the tail.
  diff(a: string | null, b: string | null): DiffResult {
    const regions: { offset: number; length: number }[] = [];
    let totalBytes = 0;
    let truncated = false;
    for (const region of this.diffRegions(a, b)) {
      totalBytes += region.length;
      if (regions.length < snapshotDiffRegionsMax) regions.push(region);
      else truncated = true;
    }
    return { regions, totalBytes, truncated };
  }

  // The same regions, merged where adjacent, one at a time and without a bound on their number
  // (a twin's build at the end of a resync walks them all). Chunk by chunk, a window of chunks'
  // metadata at a time.
  *diffRegions(a: string | null, b: string | null): Generator<{ offset: number; length: number }> {
    const chainA = this.chainOf(a);
    const chainB = this.chainOf(b);
    const sizeA = this.sizeOf(a);
    const sizeB = this.sizeOf(b);
    const common = Math.min(sizeA, sizeB);
    // the volume's pending chunks are where the restore's copy has them
    const restoring = (a === null || b === null) && this.restoreChain !== null && this.pending !== null ? this.restoreChain : [];
    const lines = [...new Set([...chainA, ...chainB, ...restoring].map((link) => link.line))];
    const locateA = (chunk: number) => (a === null ? this.locateVolume(chunk) : this.locate(chainA, chunk));
    const locateB = (chunk: number) => (b === null ? this.locateVolume(chunk) : this.locate(chainB, chunk));
    let pending: { offset: number; length: number } | null = null;
    const chunks = Math.ceil(common / this.state.chunkSize);
    for (let windowStart = 0; windowStart < chunks; windowStart += diffWindowChunks) {
      const windowEnd = Math.min(chunks, windowStart + diffWindowChunks);
      for (const chunk of this.candidates(lines, windowStart, windowEnd)) {
        if (sameLocation(locateA(chunk), locateB(chunk))) continue;
        const offset = chunk * this.state.chunkSize;
        const length = Math.min(this.state.chunkSize, common - offset);
        if (pending !== null && pending.offset + pending.length === offset) pending.length += length;
        else {
          if (pending !== null) yield pending;
          pending = { offset, length };
        }
      }
    }
    if (sizeA !== sizeB) {
      const tail = { offset: common, length: Math.max(sizeA, sizeB) - common };
      if (pending !== null && pending.offset + pending.length === tail.offset) pending.length += tail.length;
      else {
        if (pending !== null) yield pending;
        pending = tail;
      }
    }
    if (pending !== null) yield pending;
  }

  // Chunks in [start, end) that any of the lines has metadata for, ascending.
  private candidates(lines: readonly number[], start: number, end: number): number[] {
    const found = new Set<number>();
    for (const line of lines) {
      for (const versions of this.metadata.versionPages(line, gcBatchEntries, start, end)) for (const version of versions) found.add(version.chunk);
      for (const currents of this.metadata.currentPages(line, gcBatchEntries, start, end)) for (const current of currents) found.add(current.chunk);
    }
    return [...found].sort((x, y) => x - y);
  }

  // Makes the volume's content (and size) equal to the snapshot's. Inside the caller's pause only
  // metadata work: the volume synced (redo skips every change before the LSN from here on), then
  // one commit of a frozen copy of the snapshot, the chunks where the volume differs from it
  // (the diff), and the LSNs. The chunks are copied afterwards (see the top of the file). The
  // caller runs it exclusively with the group quiet; `restoring` marks the part before that
  // commit (a resize), which redo of the operation record runs again.
  async restore(name: string, lsn: bigint, resize: (size: number) => Promise<void>): Promise<RestoreResult> {
    await this.completeRestore();
    const image = this.image(name);
    if (image.size !== this.volume.size) {
      this.state = { ...this.state, restoring: name };
      await this.metadata.commit({ state: this.state });
      await resize(image.size);
    }
    await this.syncVolumeAndStore();
    const pending = new PendingChunks();
    for (const region of this.diffRegions(null, name)) {
      const end = Math.min(region.offset + region.length, this.volume.size);
      if (end <= region.offset) continue;
      const last = Math.floor((end - 1) / this.state.chunkSize);
      for (let chunk = Math.floor(region.offset / this.state.chunkSize); chunk <= last; chunk += 1) pending.add(chunk);
    }
    let copy: ImageEntry | null = null;
    let lines: LineEntry[] = [];
    let restorePending: RestorePending | null = null;
    if (pending.count > 0) {
      const frozen = this.frozenChainOf(name); // the snapshot may change later; the restore reads it as it is now
      const copyName = `${restoreCopyPrefix}${lsn}`;
      assert(!this.images.has(copyName), "no earlier restore's copy is left");
      copy = { id: this.state.nextImageId, name: copyName, parent: null, writable: false, size: image.size, createdLsn: String(lsn), createdAtMs: this.options.nowMs(), refreshedAtMs: null, chain: frozen.chain };
      lines = frozen.lines;
      restorePending = { from: name, image: copyName, lsn: String(lsn) };
    }
    this.state = { ...this.state, version: copy === null ? 1 : 2, nextImageId: this.state.nextImageId + (copy === null ? 0 : 1), restoring: null, restorePending, appliedOperationLsn: String(lsn), durableThroughLsn: String(lsn) };
    await this.metadata.commit({ state: this.state, images: copy === null ? [] : [copy], lines, restorePages: pending.allPages() });
    this.adopt(copy === null ? [] : [copy], lines);
    if (copy !== null) this.beginBackground(pending, copy.chain);
    const bytesPending = this.pendingBytes();
    return { bytesWritten: bytesPending, chunks: pending.count, chunksPending: pending.count, bytesPending };
  }

  // ---- A restore in the background ----

  // Where the volume's chunk is, as its readers see it: a pending chunk is the restore's copy's.
  private locateVolume(chunk: number): ChunkLocation {
    if (this.pending === null || this.restoreChain === null || !this.pending.has(chunk)) return { kind: "volume" };
    return this.locate(this.restoreChain, chunk);
  }

  private pendingIn(first: number, last: number): number[] {
    const chunks: number[] = [];
    for (let chunk = first; chunk <= last && this.pending !== null; chunk += 1) if (this.pending.has(chunk)) chunks.push(chunk);
    return chunks;
  }

  private pendingBytes(): number {
    return this.pending === null ? 0 : Math.min(this.pending.count * this.state.chunkSize, this.volume.size);
  }

  // Pending chunks from now on read from the copy's chain; changes restore them first.
  private beginBackground(pending: PendingChunks, chain: readonly ChainLink[]): void {
    this.pending = pending;
    this.restoreChain = chain;
    this.copyCursor = 0;
    this.volume.readOverlay = this.overlay;
    this.startCopier();
  }

  private readonly overlay: ReadOverlay = {
    covers: (offset, length) => {
      if (this.pending === null) return false;
      const { first, last } = this.chunkRange(offset, length);
      return this.pending.anyIn(first, last);
    },
    read: (target, offset) => this.readRestoring(target, offset),
    dataExtents: (offset, length) => {
      const extents: { offset: number; length: number }[] = [];
      const { first, last } = this.chunkRange(offset, length);
      for (const chunk of this.pendingIn(first, last)) {
        const start = Math.max(offset, chunk * this.state.chunkSize);
        const end = Math.min(offset + length, (chunk + 1) * this.state.chunkSize);
        const previous = extents[extents.length - 1];
        if (previous !== undefined && previous.offset + previous.length === start) previous.length += end - start;
        else extents.push({ offset: start, length: end - start });
      }
      return extents;
    },
  };

  // A read of the volume that touches pending chunks: those pieces from the copy, the rest from
  // the image (adjacent pieces in one read). As snapshot I/O, so the copy (dropped only by an
  // exclusive operation once nothing is pending) outlives it.
  private readRestoring(target: Buffer, offset: number): Promise<void> {
    return this.io(async () => {
      const reads: Promise<void>[] = [];
      let run: { at: number; length: number } | null = null;
      const flush = () => {
        if (run !== null) reads.push(this.volume.readPhysical(target.subarray(run.at, run.at + run.length), offset + run.at));
        run = null;
      };
      this.forEachPiece(offset, target.length, (chunk, inner, at, length) => {
        const location = this.locateVolume(chunk);
        if (location.kind === "volume") {
          if (run !== null && run.at + run.length === at) run.length += length;
          else {
            flush();
            run = { at, length };
          }
          return;
        }
        flush();
        const piece = target.subarray(at, at + length);
        if (location.kind === "slot") reads.push(this.store.read(piece, this.slotOffset(location.slot) + inner));
        else piece.fill(0);
      });
      flush();
      await Promise.all(reads);
    });
  }

  // Runs the action holding the volume's chunk locks of `chunks` (ascending: every holder of
  // several takes them in that order, so none waits for another in a cycle).
  private withChunkLocks<T>(chunks: readonly number[], action: () => Promise<T>, index = 0): Promise<T> {
    if (index >= chunks.length) return action();
    return this.locks.run(`0:${chunks[index]!}`, () => this.withChunkLocks(chunks, action, index + 1));
  }

  // Restores those of `chunks` (ascending) still pending: each one's old content preserved where
  // a snapshot reads it, the copy's written in; the volume synced; then one commit says they
  // are no longer pending. All under their locks, so no change to them comes in between.
  private restoreChunks(chunks: readonly number[], reservation: Reservation | null): Promise<number> {
    if (chunks.length === 0) return Promise.resolve(0);
    return this.withChunkLocks(chunks, async () => {
      const left = chunks.filter((chunk) => this.pending?.has(chunk) === true);
      if (left.length === 0) return 0;
      for (const chunk of left) await this.copyChunkBack(chunk, reservation);
      await this.volume.flush(); // the restored content is durable before the chunks stop being pending
      await this.commitRestored(left);
      if (this.pending !== null) this.startCopier(); // again, if a disk error had stopped it
      return left.length;
    });
  }

  private async copyChunkBack(chunk: number, reservation: Reservation | null): Promise<void> {
    const offset = chunk * this.state.chunkSize;
    const length = Math.min(this.state.chunkSize, this.volume.size - offset);
    assert(length > 0 && this.restoreChain !== null, "a pending chunk is inside the volume");
    await this.preserveVolumeChunkLocked(chunk, reservation);
    await this.locks.drained(chunk); // snapshot reads of the old chunk in the volume finish first
    const location = this.locate(this.restoreChain, chunk);
    assert(location.kind !== "volume", `pending chunk ${chunk} is not the volume's own`);
    const data = this.buffers.take();
    try {
      const content = data.subarray(0, length);
      if (location.kind === "slot") await this.store.read(content, this.slotOffset(location.slot));
      else content.fill(0);
      await this.volume.write(content, offset);
    } finally {
      this.buffers.give(data);
    }
  }

  // The chunks' restored content is durable: one commit says they are no longer pending (the
  // pages written are those of the moment the transaction runs: see pending-chunks.ts). The
  // restore ends with the commit that finds nothing left.
  private async commitRestored(chunks: readonly number[]): Promise<void> {
    const pending = this.pending!;
    pending.beginLeaving(chunks);
    try {
      await this.metadata.commit({ restorePages: () => pending.pagesNow(chunks) });
    } catch (error) {
      pending.abortLeaving(chunks);
      throw error;
    }
    pending.finishLeaving(chunks);
    if (pending.count > 0 || this.pending !== pending) return;
    this.pending = null;
    if (this.volume.readOverlay === this.overlay) this.volume.readOverlay = null;
    this.state = { ...this.state, version: 1, restorePending: null };
    await this.metadata.commit({ state: this.state });
  }

  // Copies up to `chunksMax` pending chunks (the background copier's batch; tests call it).
  async copyRestoreBatch(chunksMax = restoreBatchChunksMax): Promise<number> {
    if (this.pending === null || this.closing) return 0;
    const chunks = this.pending.next(this.copyCursor, chunksMax).sort((x, y) => x - y);
    if (chunks.length === 0) return 0;
    this.copyCursor = chunks[chunks.length - 1]! + 1;
    return this.restoreChunks(chunks, null);
  }

  private startCopier(): void {
    if (this.copier !== null || this.options.restoreInBackground === false) return;
    this.copier = this.runCopier().finally(() => (this.copier = null));
  }

  // One batch at a time as snapshot I/O (an operation waits for at most one), paced to
  // restoreCopyBytesPerSecondMax. A disk error stops it (status shows the error) after one
  // more try restoreRetryMs later; the next change that restores a chunk, the next operation
  // that needs the volume whole, or the next start carries on. (A copier that kept retrying
  // would outlive a process the simulator killed.)
  private async runCopier(): Promise<void> {
    const sleep = this.options.sleep ?? (() => yieldToEventLoop());
    let failures = 0;
    while (!this.closing && this.pending !== null) {
      let copied = 0;
      try {
        const batch = this.io(() => this.copyRestoreBatch());
        this.copierBatch = batch;
        copied = await batch;
        this.restoreError = null;
        failures = 0;
      } catch (error) {
        this.restoreError = error instanceof Error ? error.message : String(error);
        failures += 1;
        if (this.closing || failures > 1) return;
        await sleep(restoreRetryMs);
        continue;
      } finally {
        this.copierBatch = null;
      }
      await sleep(Math.ceil((copied * this.state.chunkSize * 1000) / restoreCopyBytesPerSecondMax));
    }
  }

  // Copies every chunk still pending (an operation that captures or compares the volume's chunks
  // calls it first, inside its pause), then drops finished restores' copies.
  async completeRestore(): Promise<void> {
    while (this.pending !== null) {
      const chunks = this.pending.next(0, restoreBatchChunksMax);
      assert(chunks.length > 0, "a pending restore has chunks left");
      await this.restoreChunks(chunks, null);
    }
    await this.dropRestoreCopies();
  }

  private async dropRestoreCopies(): Promise<void> {
    const current = this.state.restorePending?.image ?? null;
    const finished = [...this.images.keys()].filter((name) => isRestoreCopy(name) && name !== current);
    if (finished.length > 0) await this.dropImages(finished);
  }

  // The pending chunks and where readers find them (the simulator reads images synchronously).
  pendingLocations(): { chunk: number; location: ChunkLocation }[] {
    if (this.pending === null) return [];
    return this.pending.next(0, this.pending.count).map((chunk) => ({ chunk, location: this.locateVolume(chunk) }));
  }

  restoreStatus(): RestoreStatus | null {
    const pending = this.state.restorePending ?? null;
    if (pending === null || this.pending === null) return null;
    return { from: `${this.volume.name}@${pending.from}`, lsn: pending.lsn, chunksLeft: this.pending.count, bytesLeft: this.pendingBytes(), error: this.restoreError };
  }

  // Makes a writable snapshot's content (and size) equal to another image's (from null: the
  // volume) in O(1), as refresh does (rechain). No data moves, so the pause is the same whatever
  // differs. The caller runs it exclusively with the group quiet.
  async sync(from: string | null, to: string, lsn: bigint): Promise<{ bytesWritten: number; chunks: number }> {
    const target = this.image(to);
    if (!target.writable) throw new OperatingError("REQUEST_INVALID", `${this.volume.name}@${to} is read-only: a sync writes into the volume or a writable snapshot`);
    await this.rechain(target, from, true, lsn, {});
    return { bytesWritten: 0, chunks: 0 };
  }

  // Before the volume's size changes: preserve the chunks past the new end that snapshots read.
  // Any resize first completes a pending restore (its chunks are the volume's size).
  async beforeShrink(size: number): Promise<void> {
    await this.completeRestore();
    if (size >= this.volume.size) return;
    const ticket = this.reserve(size, this.volume.size - size);
    if (ticket === null) return;
    try {
      await ticket.preserve();
    } finally {
      ticket.release();
    }
  }

  // ---- Reporting ----

  info(image: ImageEntry, storeBytes: number | null = null): SnapshotInfo {
    return {
      name: `${this.volume.name}@${image.name}`,
      volume: this.volume.name,
      snapshot: image.name,
      parent: image.parent === null ? this.volume.name : `${this.volume.name}@${image.parent}`,
      writable: image.writable,
      size: image.size,
      createdLsn: image.createdLsn,
      createdAtMs: image.createdAtMs,
      refreshedAtMs: image.refreshedAtMs,
      depth: this.depth(image),
      storeBytes,
    };
  }

  private depth(image: ImageEntry): number {
    let depth = 1;
    for (let parent = image.parent; parent !== null; parent = this.images.get(parent)?.parent ?? null) depth += 1;
    return depth;
  }

  // Every snapshot, parents before children, with the store bytes each one reads (chunks
  // shared by several snapshots count for each; a chunk of a writable snapshot's own that
  // shadows one below it counts twice).
  list(): SnapshotInfo[] {
    const bytes = this.storeBytesPerImage();
    const ordered: ImageEntry[] = [];
    const visit = (parent: string | null) => {
      for (const image of [...this.images.values()].filter((entry) => entry.parent === parent && !isRestoreCopy(entry.name)).sort((x, y) => x.id - y.id)) {
        ordered.push(image);
        visit(image.name);
      }
    };
    visit(null);
    return ordered.map((image) => this.info(image, bytes.get(image.name) ?? 0));
  }

  private storeBytesPerImage(): Map<string, number> {
    const bytes = new Map<string, number>();
    const images = [...this.images.values()];
    for (const line of this.lines.keys()) {
      const readers = images.flatMap((image) => image.chain.filter((link) => link.line === line).map((link) => ({ name: image.name, epoch: link.epoch })));
      if (readers.length === 0) continue;
      const count = (birth: number, death: number) => {
        for (const reader of readers) {
          const reads = reader.epoch === liveEpoch ? death === Infinity : birth <= reader.epoch && reader.epoch < death;
          if (reads) bytes.set(reader.name, (bytes.get(reader.name) ?? 0) + this.state.chunkSize);
        }
      };
      for (const versions of this.metadata.versionPages(line, gcBatchEntries)) for (const version of versions) count(version.birth, version.death);
      if (line === 0) continue;
      for (const currents of this.metadata.currentPages(line, gcBatchEntries)) for (const current of currents) count(current.birth, Infinity);
    }
    return bytes;
  }

  usage(): { chunkSize: number; snapshots: number; usedBytes: number; storeBytesMax: number; full: boolean; reservedBytes: number; freshCacheBytes: number; lastStoreFullAtMs: number | null; interruptedRestore: string | null; restore: RestoreStatus | null; stats: SnapshotStats } {
    const used = (this.state.slotsHigh - this.slotsFree) * this.state.chunkSize;
    return {
      chunkSize: this.state.chunkSize,
      snapshots: this.names().length,
      usedBytes: used,
      storeBytesMax: this.state.slotsMax * this.state.chunkSize,
      full: this.slotsAvailable <= 0,
      reservedBytes: this.reserved * this.state.chunkSize,
      freshCacheBytes: this.fresh.bytes,
      lastStoreFullAtMs: this.lastStoreFullAtMs,
      interruptedRestore: this.state.restoring,
      restore: this.restoreStatus(),
      stats: this.stats,
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    await this.copierBatch?.catch(() => undefined);
    if (this.volume.readOverlay === this.overlay) this.volume.readOverlay = null;
    if (this.volume.changeGuard === this) this.volume.changeGuard = null;
    await this.storeSync.sync().catch(() => undefined);
    await this.metadata.close();
    await this.store.close();
  }
}
