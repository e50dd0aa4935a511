// The allocated regions of a volume's image: what an initial sync has to ship (a hole reads
// as zero on both sides, so only allocated bytes need copying). Asked of the file system with
// SEEK_DATA/SEEK_HOLE (BlockFile.dataExtents) in batches of allocationQueryExtentsMax, so a
// badly fragmented image never yields one huge array. Where the platform cannot tell (a block
// device, a file system without SEEK_DATA), the rest of the volume counts as allocated.
//
// Regions come in offset order, apart (adjacent extents are merged), rounded outward to whole
// sectors and clipped at the volume's end, so each is a valid resync VolumeRegion range.

import { assert } from "../assert.js";
import { allocationQueryExtentsMax, sectorSize } from "../constants.js";
import type { BlockFile, Extent } from "../io/block-file.js";

export function* allocatedRegions(file: BlockFile, size: number, extentsMax = allocationQueryExtentsMax): Generator<Extent> {
  assert(Number.isSafeInteger(size) && size >= 0 && size % sectorSize === 0, `volume size ${size}`);
  assert(Number.isInteger(extentsMax) && extentsMax > 0, `extents per query ${extentsMax}`);
  let pending: Extent | null = null; // held back to merge with an adjacent successor
  for (const extent of sectorExtents(file, size, extentsMax)) {
    if (pending !== null && pending.offset + pending.length >= extent.offset) {
      pending = { offset: pending.offset, length: Math.max(pending.offset + pending.length, extent.offset + extent.length) - pending.offset };
      continue;
    }
    if (pending !== null) yield pending;
    pending = extent;
  }
  if (pending !== null) yield pending;
}

// The file system's data extents in batches, rounded outward to sectors, clipped at `size`.
function* sectorExtents(file: BlockFile, size: number, extentsMax: number): Generator<Extent> {
  let at = 0;
  while (at < size) {
    const batch = file.dataExtents(at, size - at, extentsMax);
    if (batch === null) {
      yield { offset: at, length: size - at }; // the platform cannot tell: all of it counts
      return;
    }
    for (const extent of batch) yield roundToSectors(extent, size);
    if (batch.length < extentsMax) return; // the batch covered the rest of the volume
    const last = batch[batch.length - 1]!;
    assert(last.offset + last.length > at, "an allocation query makes progress");
    at = last.offset + last.length;
  }
}

function roundToSectors(extent: Extent, size: number): Extent {
  const offset = Math.floor(extent.offset / sectorSize) * sectorSize;
  const end = Math.min(size, Math.ceil((extent.offset + extent.length) / sectorSize) * sectorSize);
  assert(offset < end, `extent ${extent.offset}+${extent.length} inside a volume of ${size}`);
  return { offset, length: end - offset };
}
