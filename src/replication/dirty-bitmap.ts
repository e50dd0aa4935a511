// The dirty-region bitmap of one link of a group: which regions of which volumes the peer may
// lack. A write marks its regions while the peer cannot receive it (link down, or behind the
// log's tail); resync ships the dirty regions (runs()) and clears what the peer has applied;
// an initial sync starts from the allocated regions (volume/allocated-regions.ts). Kept as a
// file per link, replaced atomically (io/atomic-file.ts), so a restart resumes the resync
// instead of starting a full one.
//
// Dense: one bit per region of each volume. A volume's region size is the smallest power of
// two, at least dirtyRegionBytesMin (64 KiB), that covers the volume in at most
// dirtyBitmapBitsMax (2^24) regions, so a volume's bitmap is at most 2 MiB even at
// volumeSizeMax (1 PiB, 64 MiB regions). The region size depends on the size only; a resize
// re-maps the bits conservatively (a new region is dirty when it overlaps a dirty old one).
//
// Encoding (docs/FORMAT.md §4), little-endian:
//
//   0  u32 checksum   CRC32C of bytes 4 … end
//   4  u32 magic      0x4244534c ("LSDB")
//   8  u16 version    1                  10 u16 reserved (0)
//   12 u32 volumeCount (≤ volumesPerGroupMax)
//   16 u32 encodedSize (the whole encoding, bytes)   20 u32 reserved (0)
//   24 + 24i: volume table, ascending volumeId
//        u32 volumeId │ u32 regionBytes │ u64 size │ u32 bitCount │ u32 reserved (0)
//   24 + 24 × volumeCount: each volume's bits, table order, ceil(bitCount / 8) bytes each;
//        region j is bit (j mod 8) of byte (j div 8), least significant first; bits past
//        bitCount are zero.
//
// Byte counts are JS numbers: every one is a multiple of 512 below 2^62 (256 volumes of at
// most 2^50 bytes), which a double holds exactly, so dirtyBytes is exact.

import { assert } from "../assert.js";
import { dirtyBitmapBitsMax, dirtyRegionBytesMin, sectorSize, volumeIdMax, volumeSizeMax, volumesPerGroupMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { readFileBounded, writeFileAtomic } from "../io/atomic-file.js";
import { crc32c } from "../io/crc32c.js";
import { replicationRegionDataSizeMax } from "./limits.js";
import type { VolumeRegion } from "./resync.js";

const magic = 0x4244534c; // "LSDB" little-endian
const version = 1;
const headerSize = 24;
const entrySize = 24;

export const dirtyBitmapEncodedSizeMax = headerSize + volumesPerGroupMax * (entrySize + dirtyBitmapBitsMax / 8);
assert(dirtyBitmapEncodedSizeMax <= 0xffff_ffff, "an encoded bitmap's size fits its u32 field");

// A piece of dirty bytes: offset and length are multiples of 512, length > 0 (what a
// bitmapRegions announcement and a regionData frame carry).
export type DirtyRun = VolumeRegion;

interface VolumeBits {
  readonly id: number;
  readonly size: number;
  readonly regionBytes: number;
  readonly bitCount: number; // ceil(size / regionBytes)
  readonly bits: Uint8Array; // ceil(bitCount / 8) bytes
  dirtyCount: number; // set bits
}

// The region size of a volume of `size` bytes: a power of two, ≥ dirtyRegionBytesMin, with at
// most dirtyBitmapBitsMax regions.
export function dirtyRegionBytes(size: number): number {
  let regionBytes = dirtyRegionBytesMin;
  while (regionBytes * dirtyBitmapBitsMax < size) regionBytes *= 2;
  return regionBytes;
}

export class DirtyBitmap {
  private readonly volumes = new Map<number, VolumeBits>();

  private constructor() {}

  static create(volumes: readonly { id: number; size: number }[]): DirtyBitmap {
    const bitmap = new DirtyBitmap();
    for (const volume of volumes) {
      assert(!bitmap.volumes.has(volume.id), `volume ${volume.id} listed twice`);
      bitmap.setVolume(volume.id, volume.size);
    }
    return bitmap;
  }

  // Adds a volume (nothing dirty) or resizes one: regions past the new end are dropped, and
  // when the region size changes every new region that overlaps a dirty old one is dirty.
  setVolume(id: number, size: number): void {
    assert(Number.isInteger(id) && id >= 0 && id <= volumeIdMax, `volume id ${id}`);
    assertVolumeSize(size);
    const existing = this.volumes.get(id);
    if (existing === undefined) {
      assert(this.volumes.size < volumesPerGroupMax, "too many volumes in one bitmap");
      this.volumes.set(id, emptyVolume(id, size));
      return;
    }
    if (existing.size === size) return;
    const resized = emptyVolume(id, size);
    for (const [first, end] of dirtyBitRuns(existing)) {
      const offset = first * existing.regionBytes;
      const runEnd = Math.min(end * existing.regionBytes, existing.size, size);
      if (offset < runEnd) markBytes(resized, offset, runEnd - offset);
    }
    this.volumes.set(id, resized);
  }

  removeVolume(id: number): void {
    assert(this.volumes.delete(id), `volume ${id} is not in the bitmap`);
  }

  hasVolume(id: number): boolean {
    return this.volumes.has(id);
  }

  get volumeIds(): number[] {
    return [...this.volumes.keys()].sort((left, right) => left - right);
  }

  regionBytesOf(volumeId: number): number {
    return this.volumeOf(volumeId).regionBytes;
  }

  // Marks every region that [offset, offset + length) touches.
  mark(volumeId: number, offset: number, length: number): void {
    const volume = this.volumeOf(volumeId);
    assertRange(volume, offset, length);
    if (length > 0) markBytes(volume, offset, length);
  }

  markAll(volumeId: number): void {
    const volume = this.volumeOf(volumeId);
    volume.dirtyCount += writeBits(volume.bits, 0, volume.bitCount, true);
  }

  clear(): void {
    for (const volume of this.volumes.values()) {
      volume.bits.fill(0);
      volume.dirtyCount = 0;
    }
  }

  // Clears the regions that lie wholly inside [offset, offset + length); the volume's last
  // region counts as ending at the volume's end.
  clearRegion(volumeId: number, offset: number, length: number): void {
    const volume = this.volumeOf(volumeId);
    assertRange(volume, offset, length);
    const end = offset + length;
    const first = Math.ceil(offset / volume.regionBytes);
    const last = end === volume.size ? volume.bitCount : Math.floor(end / volume.regionBytes);
    if (first < last) volume.dirtyCount += writeBits(volume.bits, first, last, false);
  }

  // Bytes of the dirty regions, the last region clipped at the volume's end.
  get dirtyBytes(): number {
    let total = 0;
    for (const volume of this.volumes.values()) total += volumeDirtyBytes(volume);
    return total;
  }

  get empty(): boolean {
    for (const volume of this.volumes.values()) if (volume.dirtyCount > 0) return false;
    return true;
  }

  // The dirty bytes as runs in (volumeId, offset) order: adjacent dirty regions merged, each
  // run cut into pieces of at most pieceBytesMax, clipped at the volume's end. Lazy: it reads
  // the live bits as it goes, so a region marked or cleared ahead of it while it runs is seen
  // as it is then; volumes added while it runs are not visited, removed ones are left.
  *runs(pieceBytesMax: number = replicationRegionDataSizeMax): Generator<DirtyRun> {
    assert(Number.isSafeInteger(pieceBytesMax) && pieceBytesMax > 0 && pieceBytesMax % sectorSize === 0, `piece size ${pieceBytesMax}`);
    for (const volumeId of this.volumeIds) {
      let cursor = 0;
      for (;;) {
        const volume = this.volumes.get(volumeId);
        const piece = volume === undefined ? null : nextPiece(volume, cursor, pieceBytesMax);
        if (piece === null) break;
        yield { volumeId, offset: piece.offset, length: piece.length };
        cursor = piece.offset + piece.length;
      }
    }
  }

  encode(): Buffer {
    const volumes = this.volumeIds.map((id) => this.volumes.get(id)!);
    const encodedSize = headerSize + volumes.reduce((sum, volume) => sum + entrySize + volume.bits.length, 0);
    assert(encodedSize <= dirtyBitmapEncodedSizeMax, "bitmap within its encoded size limit");
    const target = Buffer.alloc(encodedSize);
    target.writeUInt32LE(magic, 4);
    target.writeUInt16LE(version, 8);
    target.writeUInt32LE(volumes.length, 12);
    target.writeUInt32LE(encodedSize, 16);
    let bitsAt = headerSize + entrySize * volumes.length;
    volumes.forEach((volume, index) => {
      const entryAt = headerSize + entrySize * index;
      target.writeUInt32LE(volume.id, entryAt);
      target.writeUInt32LE(volume.regionBytes, entryAt + 4);
      target.writeBigUInt64LE(BigInt(volume.size), entryAt + 8);
      target.writeUInt32LE(volume.bitCount, entryAt + 16);
      target.set(volume.bits, bitsAt);
      bitsAt += volume.bits.length;
    });
    target.writeUInt32LE(crc32c(target.subarray(4)), 0);
    return target;
  }

  // Trusts nothing: every size is checked against the buffer before anything is allocated,
  // and any damage is LOG_CORRUPT with reason "dirty-bitmap-…".
  static decode(source: Buffer): DirtyBitmap {
    const volumeCount = checkHeader(source);
    const entries: VolumeEntry[] = [];
    let bitsAt = headerSize + entrySize * volumeCount;
    for (let index = 0; index < volumeCount; index++) {
      const entry = readEntry(source, index, entries[index - 1]);
      if (bitsAt + entry.byteCount > source.length) throw dirtyBitmapCorrupt("length", { index });
      entries.push({ ...entry, bitsAt });
      bitsAt += entry.byteCount;
    }
    if (bitsAt !== source.length) throw dirtyBitmapCorrupt("length", { expected: bitsAt, actual: source.length });
    const bitmap = new DirtyBitmap();
    for (const entry of entries) bitmap.volumes.set(entry.id, readVolume(source, entry));
    return bitmap;
  }

  private volumeOf(volumeId: number): VolumeBits {
    const volume = this.volumes.get(volumeId);
    assert(volume !== undefined, () => `volume ${volumeId} is not in the bitmap`);
    return volume;
  }
}

// ---- Persistence ----

// Replaces the file atomically: a crash leaves the old bitmap or the new one.
export async function dirtyBitmapSave(path: string, bitmap: DirtyBitmap): Promise<void> {
  await writeFileAtomic(path, bitmap.encode());
}

// The saved bitmap, or null when there is none. A damaged one is LOG_CORRUPT: the caller
// cannot know what the peer lacks and must fall back to a full resync.
export async function dirtyBitmapLoad(path: string): Promise<DirtyBitmap | null> {
  const bytes = await readFileBounded(path, dirtyBitmapEncodedSizeMax, (size) => dirtyBitmapCorrupt("length", { path, actual: size }));
  return bytes === null ? null : DirtyBitmap.decode(bytes);
}

// ---- Bits ----

const popcount = Uint8Array.from({ length: 256 }, (_, byte) => {
  let count = 0;
  for (let value = byte; value !== 0; value >>= 1) count += value & 1;
  return count;
});

function emptyVolume(id: number, size: number): VolumeBits {
  const regionBytes = dirtyRegionBytes(size);
  const bitCount = Math.ceil(size / regionBytes);
  return { id, size, regionBytes, bitCount, bits: Buffer.alloc(Math.ceil(bitCount / 8)), dirtyCount: 0 };
}

function assertVolumeSize(size: number): void {
  assert(Number.isSafeInteger(size) && size >= 0 && size <= volumeSizeMax && size % sectorSize === 0, `volume size ${size}`);
}

function assertRange(volume: VolumeBits, offset: number, length: number): void {
  assert(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0, () => `range ${offset}+${length}`);
  assert(offset + length <= volume.size, () => `volume ${volume.id}: range ${offset}+${length} past ${volume.size}`);
}

function markBytes(volume: VolumeBits, offset: number, length: number): void {
  const first = Math.floor(offset / volume.regionBytes);
  const end = Math.ceil((offset + length) / volume.regionBytes);
  volume.dirtyCount += writeBits(volume.bits, first, end, true);
}

// Sets or clears bits [first, end) a byte at a time; returns the change in set bits.
function writeBits(bits: Uint8Array, first: number, end: number, dirty: boolean): number {
  let change = 0;
  for (let index = first; index < end; ) {
    const low = index & 7;
    const high = Math.min(8, low + (end - index));
    const mask = (0xff >> (8 - high)) & (0xff << low);
    const before = bits[index >>> 3]!;
    const after = dirty ? before | mask : before & ~mask;
    bits[index >>> 3] = after;
    change += popcount[after]! - popcount[before]!;
    index += high - low;
  }
  return change;
}

function isDirty(bits: Uint8Array, index: number): boolean {
  return (bits[index >>> 3]! & (1 << (index & 7))) !== 0;
}

// The first bit ≥ from that equals `dirty`, or end. Skips whole bytes that cannot hold it.
function nextBit(bits: Uint8Array, from: number, end: number, dirty: boolean): number {
  const skip = dirty ? 0 : 0xff;
  let index = from;
  while (index < end) {
    if (bits[index >>> 3] === skip) index = (index | 7) + 1;
    else if (isDirty(bits, index) === dirty) return index;
    else index += 1;
  }
  return end;
}

// Runs of dirty bits as [first, end).
function* dirtyBitRuns(volume: VolumeBits): Generator<[number, number]> {
  let index = nextBit(volume.bits, 0, volume.bitCount, true);
  while (index < volume.bitCount) {
    const end = nextBit(volume.bits, index, volume.bitCount, false);
    yield [index, end];
    index = nextBit(volume.bits, end, volume.bitCount, true);
  }
}

function volumeDirtyBytes(volume: VolumeBits): number {
  const { regionBytes, bitCount, size } = volume;
  const tailShortfall = bitCount > 0 && isDirty(volume.bits, bitCount - 1) ? bitCount * regionBytes - size : 0;
  return volume.dirtyCount * regionBytes - tailShortfall;
}

// The next piece at or after byte `cursor`: from the first dirty byte, through the adjacent
// dirty regions, at most pieceBytesMax long and not past the volume's end.
function nextPiece(volume: VolumeBits, cursor: number, pieceBytesMax: number): { offset: number; length: number } | null {
  const { regionBytes, size, bits, bitCount } = volume;
  if (cursor >= size) return null;
  const firstBit = nextBit(bits, Math.floor(cursor / regionBytes), bitCount, true);
  if (firstBit === bitCount) return null;
  const offset = Math.max(cursor, firstBit * regionBytes);
  const limit = Math.min(offset + pieceBytesMax, size);
  let bit = Math.floor(offset / regionBytes) + 1;
  while (bit * regionBytes < limit && isDirty(bits, bit)) bit += 1;
  return { offset, length: Math.min(bit * regionBytes, limit) - offset };
}

// ---- Decoding ----

interface VolumeEntry {
  readonly id: number;
  readonly size: number;
  readonly regionBytes: number;
  readonly bitCount: number;
  readonly byteCount: number;
  readonly bitsAt: number;
}

export function dirtyBitmapCorrupt(reason: string, detail: Record<string, string | number> = {}): OperatingError<"LOG_CORRUPT"> {
  return new OperatingError("LOG_CORRUPT", { reason: `dirty-bitmap-${reason}`, ...detail });
}

// Checks everything the header says against the buffer, and the checksum; returns volumeCount.
function checkHeader(source: Buffer): number {
  if (source.length < headerSize) throw dirtyBitmapCorrupt("length", { actual: source.length });
  if (source.readUInt32LE(4) !== magic) throw dirtyBitmapCorrupt("magic");
  if (source.readUInt16LE(8) !== version) throw dirtyBitmapCorrupt("version", { version: source.readUInt16LE(8) });
  const encodedSize = source.readUInt32LE(16);
  if (encodedSize !== source.length) throw dirtyBitmapCorrupt("length", { expected: encodedSize, actual: source.length });
  if (crc32c(source.subarray(4)) !== source.readUInt32LE(0)) throw dirtyBitmapCorrupt("checksum");
  if (source.readUInt16LE(10) !== 0 || source.readUInt32LE(20) !== 0) throw dirtyBitmapCorrupt("reserved");
  const volumeCount = source.readUInt32LE(12);
  if (volumeCount > volumesPerGroupMax) throw dirtyBitmapCorrupt("volume-count", { volumeCount });
  if (headerSize + entrySize * volumeCount > source.length) throw dirtyBitmapCorrupt("length", { volumeCount });
  return volumeCount;
}

function readEntry(source: Buffer, index: number, previous: VolumeEntry | undefined): Omit<VolumeEntry, "bitsAt"> {
  const at = headerSize + entrySize * index;
  const id = source.readUInt32LE(at);
  const regionBytes = source.readUInt32LE(at + 4);
  const sizeField = source.readBigUInt64LE(at + 8);
  const bitCount = source.readUInt32LE(at + 16);
  const problem = (field: string) => dirtyBitmapCorrupt("volume", { index, field });
  if (id > volumeIdMax || (previous !== undefined && id <= previous.id)) throw problem("volumeId");
  if (sizeField > BigInt(volumeSizeMax) || sizeField % BigInt(sectorSize) !== 0n) throw problem("size");
  const size = Number(sizeField);
  if (regionBytes !== dirtyRegionBytes(size)) throw problem("regionBytes");
  if (bitCount !== Math.ceil(size / regionBytes)) throw problem("bitCount");
  if (source.readUInt32LE(at + 20) !== 0) throw problem("reserved");
  return { id, size, regionBytes, bitCount, byteCount: Math.ceil(bitCount / 8) };
}

function readVolume(source: Buffer, entry: VolumeEntry): VolumeBits {
  const bits = Buffer.alloc(entry.byteCount);
  bits.set(source.subarray(entry.bitsAt, entry.bitsAt + entry.byteCount));
  const spareBits = entry.byteCount * 8 - entry.bitCount;
  if (spareBits > 0 && (bits[entry.byteCount - 1]! & (0xff << (8 - spareBits)) & 0xff) !== 0) {
    throw dirtyBitmapCorrupt("volume", { volumeId: entry.id, field: "bits past the end" });
  }
  let dirtyCount = 0;
  for (const byte of bits) dirtyCount += popcount[byte]!;
  return { id: entry.id, size: entry.size, regionBytes: entry.regionBytes, bitCount: entry.bitCount, bits, dirtyCount };
}
