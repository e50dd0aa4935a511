// The resync messages (docs/PROTOCOL.md §5): after an `accept` with start = resync the
// primary announces the dirty regions (bitmapRegions), ships their current content
// (regionData), and ends with resyncEnd; records from the accept's resumeLsn flow alongside.
// Region content is read after the records that wrote it were streamed, so once the peer has
// applied records through resyncEnd's consistentLsn every announced region equals the
// primary's at that LSN. Initial sync is the same with the allocated regions as the dirty set.
//
//   bitmapRegions (8 + 24 × count bytes)
//   0 count u32 │ 4 reserved u32
//   8 + 24i: volumeId u32 │ reserved u32 │ offset u64 │ length u64
//
//   regionData (16 bytes, + length bytes unless the frame flag `zero` is set)
//   0 volumeId u32 │ 4 length u32 │ 8 offset u64 │ 16 data
//
//   resyncEnd (8 bytes)
//   0 consistentLsn u64

import { assert } from "../assert.js";
import { sectorSize, volumeIdMax, volumeSizeMax } from "../constants.js";
import { FrameError } from "./frame-error.js";
import { replicationRegionDataSizeMax, replicationRegionsPerFrameMax } from "./limits.js";
import { PayloadReader, PayloadWriter } from "./payload-codec.js";

export const regionEntrySize = 24;
export const bitmapRegionsSizeMin = 8 + regionEntrySize;
export const bitmapRegionsSizeMax = 8 + regionEntrySize * replicationRegionsPerFrameMax;
export const regionDataHeaderSize = 16;
export const regionDataSizeMax = regionDataHeaderSize + replicationRegionDataSizeMax;
export const resyncEndSize = 8;

export interface VolumeRegion {
  readonly volumeId: number;
  readonly offset: number; // bytes, a multiple of 512
  readonly length: number; // bytes, a multiple of 512, > 0
}

export interface BitmapRegions {
  readonly kind: "bitmapRegions";
  readonly regions: readonly VolumeRegion[]; // sorted by (volumeId, offset), not overlapping
}

export interface RegionData {
  readonly kind: "regionData";
  readonly volumeId: number;
  readonly offset: number;
  readonly length: number;
  readonly data: Buffer | null; // null: the region reads as zero (frame flag `zero`, no data sent)
}

export interface ResyncEnd {
  readonly kind: "resyncEnd";
  readonly consistentLsn: bigint; // the peer is consistent once it has applied records through this LSN
}

// Why a region is not acceptable (a field name), or null.
function regionProblem(region: VolumeRegion, lengthMax: number): string | null {
  if (!Number.isInteger(region.volumeId) || region.volumeId < 0 || region.volumeId > volumeIdMax) return "volumeId";
  if (!Number.isSafeInteger(region.offset) || region.offset < 0 || region.offset % sectorSize !== 0) return "offset";
  if (!Number.isSafeInteger(region.length) || region.length <= 0 || region.length % sectorSize !== 0 || region.length > lengthMax) return "length";
  if (region.offset + region.length > volumeSizeMax) return "offset";
  return null;
}

// Regions must be in order and apart: one announcement has one meaning.
function orderProblem(previous: VolumeRegion | undefined, region: VolumeRegion): boolean {
  if (previous === undefined || previous.volumeId < region.volumeId) return false;
  return previous.volumeId > region.volumeId || previous.offset + previous.length > region.offset;
}

export function bitmapRegionsEncode(message: BitmapRegions): Buffer {
  const { regions } = message;
  assert(regions.length >= 1 && regions.length <= replicationRegionsPerFrameMax, `regions per frame: ${regions.length}`);
  const writer = new PayloadWriter(8 + regionEntrySize * regions.length).u32(regions.length).u32(0);
  regions.forEach((region, index) => {
    assert(regionProblem(region, volumeSizeMax) === null && !orderProblem(regions[index - 1], region), `region ${index} invalid or out of order`);
    writer.u32(region.volumeId).u32(0).u64(region.offset).u64(region.length);
  });
  return writer.done();
}

export function bitmapRegionsDecode(payload: Buffer): BitmapRegions {
  const reader = new PayloadReader(payload);
  const count = reader.u32();
  reader.zero32("reserved");
  if (count < 1 || count > replicationRegionsPerFrameMax) throw new FrameError("field", { field: "count", value: count });
  if (reader.remaining !== count * regionEntrySize) throw new FrameError("length", { count, bytes: payload.length });
  const regions: VolumeRegion[] = [];
  for (let index = 0; index < count; index++) {
    const volumeId = reader.u32();
    reader.zero32("reserved");
    const region = { volumeId, offset: reader.u64Number("offset"), length: reader.u64Number("length") };
    const problem = regionProblem(region, volumeSizeMax);
    if (problem !== null) throw new FrameError("field", { field: problem, index });
    if (orderProblem(regions[index - 1], region)) throw new FrameError("field", { field: "order", index });
    regions.push(region);
  }
  reader.end();
  return { kind: "bitmapRegions", regions };
}

// The payload as parts for writev: [16-byte header, data]; the data is referenced, not copied.
export function regionDataEncode(message: RegionData): Buffer[] {
  assert(regionProblem(message, replicationRegionDataSizeMax) === null, "regionData region invalid");
  assert(message.data === null || message.data.length === message.length, "regionData length is the data's");
  const header = new PayloadWriter(regionDataHeaderSize).u32(message.volumeId).u32(message.length).u64(message.offset).done();
  return message.data === null ? [header] : [header, message.data];
}

// `zero`: the frame carries the flag `zero` (no data follows the header).
export function regionDataDecode(payload: Buffer, zero: boolean): RegionData {
  const reader = new PayloadReader(payload);
  const volumeId = reader.u32();
  const length = reader.u32();
  const offset = reader.u64Number("offset");
  const problem = regionProblem({ volumeId, offset, length }, replicationRegionDataSizeMax);
  if (problem !== null) throw new FrameError("field", { field: problem });
  const data = zero ? null : reader.bytes(length);
  reader.end();
  return { kind: "regionData", volumeId, offset, length, data };
}

export function resyncEndEncode(message: ResyncEnd): Buffer {
  return new PayloadWriter(resyncEndSize).u64(message.consistentLsn).done();
}

export function resyncEndDecode(payload: Buffer): ResyncEnd {
  const reader = new PayloadReader(payload);
  const consistentLsn = reader.u64();
  reader.end();
  return { kind: "resyncEnd", consistentLsn };
}
