// The activity map: which fixed extents of which volumes may hold writes that the log does
// not yet hold durably. Before a write touches an extent that is not "hot", the extent is
// made hot and the map is made durable; afterwards writes to a hot extent cost nothing.
// After a crash, the hot extents are exactly the places where a volume may be ahead of its
// log, so recovery hands them to replication to resync to every peer (the volume never
// silently keeps a write the replicas cannot get).
//
// An extent may cool when no write is pending in it and both the log and the volume's image are
// durable past its last LSN (coolLsn). Cooling is lazy and least-recently-written first, and
// only while more than activityExtentsKeep extents are hot (the idea of DRBD's activity log):
// a working set that fits stays hot, so its writes never wait for the map, even with a FLUSH
// every few writes (cooling everything at each persist made a random-write workload with
// frequent flushes re-mark, and fdatasync the map, about 7 times per 32 writes). A stale hot
// entry on disk only costs a little extra resync after a crash.
//
// On disk: two slots (alternating, like the log superblock), each:
//   0  u32 crc32c over bytes 4..end of the used part
//   4  u32 magic "LSAM"
//   8  u16 version (1)   10 u16 reserved
//   12 u32 count
//   16 u64 sequence
//   24 count × { u32 volumeId, u32 reserved, u64 extentIndex }

import { assert } from "../assert.js";
import { activityExtentSize, activityExtentsKeep, activityExtentsMax, sectorSize, volumeIdMax, volumeSizeMax } from "../constants.js";
import type { BlockFile } from "../io/block-file.js";
import { crc32c } from "../io/crc32c.js";
import { extentIndices } from "../volume/region.js";
import { SyncCoalescer } from "../volume/sync-coalescer.js";

const magic = 0x4d41534c; // "LSAM" little-endian
const version = 1;
const headerSize = 24;
const entrySize = 16;
const extentIndexLimitForKeys = 2 ** 28;
export const activitySlotSize = headerSize + activityExtentsMax * entrySize;
assert(volumeSizeMax / activityExtentSize <= extentIndexLimitForKeys && volumeIdMax < 2 ** 20, "extent keys are exact");

interface HotExtent {
  readonly volumeId: number;
  readonly index: number;
  pending: number; // writes between mark() and done()
  lastLsn: bigint;
}

export interface ActivityShape {
  readonly keep: number;
  readonly extentSize: number;
}

export const activityShapeDefault: ActivityShape = { keep: activityExtentsKeep, extentSize: activityExtentSize };

export interface ActivityExtent {
  readonly volumeId: number;
  readonly offset: number;
  readonly length: number;
}

// One number per (volume, extent): volume ids stay at most volumeIdMax < 2^20 and extent
// indices below 2^28 (volumeSizeMax / activityExtentSize; smaller extents, in the simulator,
// on small volumes: ActivityMap.extentsOf checks): the key is exact (< 2^48) and
// allocation-free.
function key(volumeId: number, index: number): number {
  return volumeId * extentIndexLimitForKeys + index;
}

export class ActivityMap {
  private readonly hot = new Map<number, HotExtent>();
  private readonly persisted = new Set<number>();
  private sequence = 0n;
  private idleWaiters: (() => void)[] = []; // marks waiting for an extent to go idle (map full)
  private readonly writer: SyncCoalescer;
  readonly stats = { persists: 0, cooled: 0 };

  private constructor(
    private readonly file: BlockFile,
    private readonly coolLsn: (volumeId: number) => bigint,
    private readonly syncAll: () => Promise<unknown>,
    private readonly keep: number,
    private readonly extentSize: number,
  ) {
    this.writer = new SyncCoalescer(() => this.persist());
  }

  // Opens the map and returns the extents that were hot at the last stop or crash.
  // coolLsn(volume): changes up to it are durable in the log and the image. syncAll(): makes
  // the log and every image durable (when the map is full, so that idle extents can cool).
  // shape: how many hot extents cooling leaves, and their size. Nodes use the constants; the
  // simulator (`npm run sim -- --activity-keep N`) keeps few small extents so that its small
  // volumes cool and re-mark all the time. A map is read with the extent size it was written
  // with (the simulator's is fixed for a run).
  static async open(file: BlockFile, coolLsn: (volumeId: number) => bigint, syncAll: () => Promise<unknown>, shape: ActivityShape = activityShapeDefault): Promise<{ map: ActivityMap; recovered: ActivityExtent[] }> {
    const { keep, extentSize } = shape;
    assert(Number.isInteger(keep) && keep > 0 && keep < activityExtentsMax, "activity map: keep fewer extents than it holds");
    assert(extentSize >= sectorSize && extentSize % sectorSize === 0 && extentSize <= activityExtentSize, "activity map: extents of whole sectors");
    const map = new ActivityMap(file, coolLsn, syncAll, keep, extentSize);
    const recovered = await map.load();
    return { map, recovered };
  }

  get hotCount(): number {
    return this.hot.size;
  }

  private async load(): Promise<ActivityExtent[]> {
    const best = await this.readBestSlot();
    if (best === null) return [];
    this.sequence = best.sequence;
    return best.entries.map(({ volumeId, index }) => ({ volumeId, offset: index * this.extentSize, length: this.extentSize }));
  }

  private async readBestSlot(): Promise<{ sequence: bigint; entries: { volumeId: number; index: number }[] } | null> {
    let best: { sequence: bigint; entries: { volumeId: number; index: number }[] } | null = null;
    for (const slot of [0, 1]) {
      const buffer = Buffer.alloc(activitySlotSize);
      await this.file.read(buffer, slot * activitySlotSize);
      if (buffer.readUInt32LE(4) !== magic || buffer.readUInt16LE(8) !== version) continue;
      const count = buffer.readUInt32LE(12);
      if (count > activityExtentsMax) continue;
      const used = headerSize + count * entrySize;
      if (crc32c(buffer.subarray(4, used)) !== buffer.readUInt32LE(0)) continue;
      const sequence = buffer.readBigUInt64LE(16);
      if (best !== null && sequence <= best.sequence) continue;
      const entries = [];
      for (let at = headerSize; at < used; at += entrySize) {
        entries.push({ volumeId: buffer.readUInt32LE(at), index: Number(buffer.readBigUInt64LE(at + 8)) });
      }
      best = { sequence, entries };
    }
    return best;
  }

  // The extents a range touches; their keys exact (checked once per range, not per extent).
  private extentsOf(offset: number, length: number): { first: number; last: number } {
    const extents = extentIndices(offset, length, this.extentSize);
    assert(extents.last < extentIndexLimitForKeys, "activity map: an extent index past the key's range");
    return extents;
  }

  // Whether the map on disk covers the range already: mark() would then need no I/O.
  covers(volumeId: number, offset: number, length: number): boolean {
    const { first, last } = this.extentsOf(offset, length);
    for (let index = first; index <= last; index++) if (!this.persisted.has(key(volumeId, index))) return false;
    return true;
  }

  // Marks the extents of a write as pending. Returns null when they were all hot already (the
  // common case: no I/O), or a promise that resolves once the map on disk covers them.
  mark(volumeId: number, offset: number, length: number): Promise<void> | null {
    const { first, last } = this.extentsOf(offset, length);
    let missing: number[] | null = null;
    for (let index = first; index <= last; index++) {
      const id = key(volumeId, index);
      let extent = this.hot.get(id);
      if (extent === undefined) {
        extent = { volumeId, index, pending: 0, lastLsn: 0n };
        this.hot.set(id, extent);
      }
      extent.pending += 1;
      if (!this.persisted.has(id)) (missing ??= []).push(id);
    }
    return missing === null ? null : this.persistCovering(missing);
  }

  // The write with this LSN is applied (or failed): its extents may cool once the log is
  // durable past lastLsn. A failed write leaves its extents hot until a resync (keepHot).
  done(volumeId: number, offset: number, length: number, lsn: bigint, keepHot = false): void {
    const { first, last } = this.extentsOf(offset, length);
    for (let index = first; index <= last; index++) {
      const extent = this.hot.get(key(volumeId, index));
      assert(extent !== undefined && extent.pending > 0, "activity map: done() without mark()");
      extent.pending -= 1;
      if (lsn > extent.lastLsn) extent.lastLsn = lsn;
      if (keepHot) extent.lastLsn = BigInt(Number.MAX_SAFE_INTEGER) * 1024n;
      if (extent.pending === 0 && this.idleWaiters.length > 0) for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  // A write to extents the map on disk covers (covers()) was done at once, without mark() and
  // done(): only their last LSN moves.
  written(volumeId: number, offset: number, length: number, lsn: bigint): void {
    const { first, last } = this.extentsOf(offset, length);
    for (let index = first; index <= last; index++) {
      const id = key(volumeId, index);
      const extent = this.hot.get(id);
      if (extent === undefined) this.hot.set(id, { volumeId, index, pending: 0, lastLsn: lsn });
      else if (lsn > extent.lastLsn) extent.lastLsn = lsn;
    }
  }

  // Resolves once the map on disk names every extent in `ids`. A persist that started before
  // they were added does not cover them, so this loops; when a persist could not include them
  // because every slot holds an extent with a write in flight, it waits for one to go idle
  // instead of spinning on fdatasyncs.
  private async persistCovering(ids: readonly number[]): Promise<void> {
    for (;;) {
      await this.writer.sync();
      if (ids.every((id) => this.persisted.has(id))) return;
      if (this.hot.size > activityExtentsMax) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
  }

  // Whether extents would cool at the next persist if log and images were durable: the caller
  // (a FLUSH) needs to make the log durable only then.
  get wantsCooling(): boolean {
    return this.hot.size > this.keep;
  }

  // Cools idle extents, least recently written first, until at most `keep` are hot.
  private cool(): void {
    if (!this.wantsCooling) return;
    const idle: [number, HotExtent][] = [];
    for (const entry of this.hot) {
      const extent = entry[1];
      if (extent.pending === 0 && extent.lastLsn <= this.coolLsn(extent.volumeId)) idle.push(entry);
    }
    idle.sort((a, b) => (a[1].lastLsn < b[1].lastLsn ? -1 : a[1].lastLsn > b[1].lastLsn ? 1 : 0));
    for (const [id] of idle) {
      if (!this.wantsCooling) return;
      this.hot.delete(id);
      this.stats.cooled += 1;
    }
  }

  private async persist(): Promise<void> {
    this.cool();
    if (this.hot.size > activityExtentsMax) {
      await this.syncAll(); // makes the log and images durable so idle extents can cool
      this.cool();
    }
    // Still over the limit: every extent has a write in flight. Persist the limit's worth;
    // the rest loop in persistCovering() until writes finish and their extents cool.
    const entries = [...this.hot.values()].slice(0, activityExtentsMax);
    // What this map leaves out (cooled, or past the limit) stops counting as covered now, not
    // once the map is on disk: meanwhile a write there would take the map being replaced as
    // its cover, and a crash after the new map lands would leave it in the image and unnamed.
    const named = new Set(entries.map((extent) => key(extent.volumeId, extent.index)));
    for (const id of this.persisted) if (!named.has(id)) this.persisted.delete(id);
    this.sequence += 1n;
    const buffer = Buffer.alloc(headerSize + entries.length * entrySize);
    buffer.writeUInt32LE(magic, 4);
    buffer.writeUInt16LE(version, 8);
    buffer.writeUInt32LE(entries.length, 12);
    buffer.writeBigUInt64LE(this.sequence, 16);
    entries.forEach((extent, position) => {
      const at = headerSize + position * entrySize;
      buffer.writeUInt32LE(extent.volumeId, at);
      buffer.writeBigUInt64LE(BigInt(extent.index), at + 8);
    });
    buffer.writeUInt32LE(crc32c(buffer.subarray(4)), 0);
    await this.file.write([buffer], Number(this.sequence % 2n) * activitySlotSize);
    await this.file.datasync();
    this.stats.persists += 1;
    this.persisted.clear();
    for (const extent of entries) this.persisted.add(key(extent.volumeId, extent.index));
  }

  // After recovery handed the recovered extents on, and at a clean stop: an empty map.
  async clear(): Promise<void> {
    assert([...this.hot.values()].every((extent) => extent.pending === 0), "activity map: clear with writes pending");
    this.hot.clear();
    await this.writer.sync();
  }

  close(): Promise<void> {
    return this.file.close();
  }
}
