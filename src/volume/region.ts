// Region arithmetic on byte ranges.

// Indices of the fixed-size extents that [offset, offset+length) touches.
export function extentIndices(offset: number, length: number, extentSize: number): { first: number; last: number } {
  const first = Math.floor(offset / extentSize);
  const last = Math.floor((offset + Math.max(length, 1) - 1) / extentSize);
  return { first, last };
}
