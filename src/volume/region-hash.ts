// Region hashes for `verify`: the primary and a secondary each hash their copy of a volume,
// region by region, and only the hashes cross the link; the regions whose hashes differ are
// what a resync has to ship. A digest is SHA-256 of the region's bytes truncated to 16 bytes
// (collisions between two versions of one region are not a concern at 2^-64 odds per pair).
//
// Region i is bytes [i × R, min((i + 1) × R, size)) with R = verifyRegionBytes (1 MiB) unless
// told otherwise; both sides must use the same R. A region the file system reports as a hole
// (BlockFile.dataExtents) is not read: it reads as zeros, so its digest is that of zeros of
// its length, computed once per call. So a hole and explicit zeros hash alike, as they must.
//
// Memory is bounded whatever the volume's size: one read buffer of at most verifyReadBytesMax
// per call, at most verifyRegionsPerCallMax digests per call (a caller walks a large volume
// with fromRegion), and allocation queries in batches of allocationQueryExtentsMax. Between
// regions the call yields to the event loop, so a verify never starves client I/O.

import { createHash } from "node:crypto";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { assert } from "../assert.js";
import { allocationQueryExtentsMax, sectorSize, verifyReadBytesMax, verifyRegionBytes, verifyRegionsPerCallMax } from "../constants.js";
import type { BlockFile, Extent } from "../io/block-file.js";

export const regionDigestBytes = 16;

export interface RegionHashOptions {
  readonly regionBytes?: number; // default verifyRegionBytes
  readonly fromRegion?: number; // the first region to hash; default 0
  readonly regionsMax?: number; // default and at most verifyRegionsPerCallMax
}

export interface RegionDifference {
  readonly regions: { offset: number; length: number }[]; // in offset order, adjacent ones merged
  readonly differingBytes: number;
}

export function regionCount(size: number, regionBytes: number): number {
  return Math.ceil(size / regionBytes);
}

// The digests (regionDigestBytes each, in region order) of regions fromRegion … fromRegion +
// min(regionsMax, regions left) − 1. Fewer than asked means the volume ended; as many as asked
// may leave more: the caller continues with fromRegion advanced by the count returned.
export async function regionHashes(file: BlockFile, size: number, options: RegionHashOptions = {}): Promise<Buffer> {
  const { regionBytes = verifyRegionBytes, fromRegion = 0, regionsMax = verifyRegionsPerCallMax } = options;
  assert(Number.isSafeInteger(size) && size >= 0, `volume size ${size}`);
  assert(Number.isSafeInteger(regionBytes) && regionBytes > 0 && regionBytes % sectorSize === 0, `region size ${regionBytes}`);
  assert(Number.isInteger(regionsMax) && regionsMax >= 0 && regionsMax <= verifyRegionsPerCallMax, `regions per call ${regionsMax}`);
  const total = regionCount(size, regionBytes);
  assert(Number.isInteger(fromRegion) && fromRegion >= 0 && fromRegion <= total, `first region ${fromRegion} of ${total}`);
  const count = Math.min(regionsMax, total - fromRegion);
  const digests = Buffer.alloc(count * regionDigestBytes);
  const hasher = new RegionHasher(file, Math.min(regionBytes, verifyReadBytesMax));
  const holes = new HoleFinder(file, Math.min(size, (fromRegion + count) * regionBytes));
  for (let index = 0; index < count; index++) {
    const offset = (fromRegion + index) * regionBytes;
    const length = Math.min(regionBytes, size - offset);
    const digest = holes.isHole(offset, offset + length) ? hasher.zeroDigest(length) : await hasher.digest(offset, length);
    digest.copy(digests, index * regionDigestBytes, 0, regionDigestBytes);
    await yieldToEventLoop();
  }
  return digests;
}

// The regions whose digests differ, as byte ranges of a volume of `size` bytes (the larger of
// the two sides' sizes). A side with fewer digests (a smaller volume) differs in every region
// the other has and it lacks.
export function hashesDiffer(a: Buffer, b: Buffer, regionBytes: number, size: number, fromRegion = 0): RegionDifference {
  assert(a.length % regionDigestBytes === 0 && b.length % regionDigestBytes === 0, "whole digests");
  const count = Math.max(a.length, b.length) / regionDigestBytes;
  assert(fromRegion + count <= regionCount(size, regionBytes), `${count} digests from region ${fromRegion} fit a volume of ${size}`);
  const regions: { offset: number; length: number }[] = [];
  let differingBytes = 0;
  for (let index = 0; index < count; index++) {
    const at = index * regionDigestBytes;
    if (at + regionDigestBytes <= Math.min(a.length, b.length) && a.compare(b, at, at + regionDigestBytes, at, at + regionDigestBytes) === 0) continue;
    const offset = (fromRegion + index) * regionBytes;
    const length = Math.min(regionBytes, size - offset);
    const previous = regions[regions.length - 1];
    if (previous !== undefined && previous.offset + previous.length === offset) previous.length += length;
    else regions.push({ offset, length });
    differingBytes += length;
  }
  return { regions, differingBytes };
}

// Hashes regions through one reusable buffer; digests of all-zero regions are computed once
// per length (a call sees at most two: whole regions and the volume's short last one).
class RegionHasher {
  private readonly buffer: Buffer;
  private readonly zeroDigests = new Map<number, Buffer>();

  constructor(
    private readonly file: BlockFile,
    bufferBytes: number,
  ) {
    this.buffer = Buffer.alloc(bufferBytes);
  }

  async digest(offset: number, length: number): Promise<Buffer> {
    const hash = createHash("sha256");
    for (let at = 0; at < length; at += this.buffer.length) {
      const view = this.view(length - at);
      await this.file.read(view, offset + at);
      hash.update(view);
    }
    return hash.digest();
  }

  zeroDigest(length: number): Buffer {
    const known = this.zeroDigests.get(length);
    if (known !== undefined) return known;
    this.buffer.fill(0);
    const hash = createHash("sha256");
    for (let at = 0; at < length; at += this.buffer.length) hash.update(this.view(length - at));
    const digest = hash.digest();
    this.zeroDigests.set(length, digest);
    return digest;
  }

  // The buffer, or its first `remaining` bytes for a region's short last chunk.
  private view(remaining: number): Buffer {
    return remaining >= this.buffer.length ? this.buffer : this.buffer.subarray(0, remaining);
  }
}

// Answers "is [start, end) a hole?" for ascending, non-overlapping ranges, asking the file
// system for allocated extents a batch at a time. When the platform cannot tell, nothing is a
// hole (every region is read).
class HoleFinder {
  private extents: Extent[] = [];
  private index = 0;
  private knownTo = 0; // the extents describe every allocated byte below this
  private unknown = false;

  constructor(
    private readonly file: BlockFile,
    private readonly end: number,
  ) {}

  isHole(start: number, end: number): boolean {
    assert(end <= this.end, "a range inside the hashed span");
    for (;;) {
      if (this.unknown) return false;
      while (this.index < this.extents.length && extentEnd(this.extents[this.index]!) <= start) this.index += 1;
      if (this.index < this.extents.length) return this.extents[this.index]!.offset >= end;
      if (this.knownTo >= end) return true;
      this.refill(start);
    }
  }

  private refill(from: number): void {
    const batch = this.file.dataExtents(from, this.end - from, allocationQueryExtentsMax);
    if (batch === null) {
      this.unknown = true;
      return;
    }
    this.extents = batch;
    this.index = 0;
    this.knownTo = batch.length < allocationQueryExtentsMax ? this.end : extentEnd(batch[batch.length - 1]!);
    assert(this.knownTo > from, "an allocation query makes progress");
  }
}

function extentEnd(extent: Extent): number {
  return extent.offset + extent.length;
}

// The digest of one region's bytes, as regionHashes computes it (for content already in memory).
export function regionDigest(data: Buffer): Buffer {
  return createHash("sha256").update(data).digest().subarray(0, regionDigestBytes);
}
