// Region arithmetic on byte ranges: alignment, clipping, splitting into fixed extents.

import type { Extent } from "../io/block-file.js";

export function rangeEnd(extent: Extent): number {
  return extent.offset + extent.length;
}

export function overlaps(a: Extent, b: Extent): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

export function isAligned(value: number, alignment: number): boolean {
  return value % alignment === 0;
}

// Indices of the fixed-size extents that [offset, offset+length) touches.
export function extentIndices(offset: number, length: number, extentSize: number): { first: number; last: number } {
  const first = Math.floor(offset / extentSize);
  const last = Math.floor((offset + Math.max(length, 1) - 1) / extentSize);
  return { first, last };
}

// The complement of `data` (sorted, non-overlapping) inside [offset, offset+length), with
// each piece tagged: the layout a BLOCK_STATUS base:allocation reply describes.
export function allocationRuns(offset: number, length: number, data: readonly Extent[]): { offset: number; length: number; allocated: boolean }[] {
  const runs: { offset: number; length: number; allocated: boolean }[] = [];
  const end = offset + length;
  let at = offset;
  for (const extent of data) {
    const start = Math.max(extent.offset, at);
    const stop = Math.min(rangeEnd(extent), end);
    if (stop <= start) continue;
    if (start > at) runs.push({ offset: at, length: start - at, allocated: false });
    runs.push({ offset: start, length: stop - start, allocated: true });
    at = stop;
  }
  if (at < end) runs.push({ offset: at, length: end - at, allocated: false });
  return runs;
}
