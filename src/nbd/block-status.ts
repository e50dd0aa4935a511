// NBD_CMD_BLOCK_STATUS for the "base:allocation" context: turns the export's data extents into
// the descriptors of one reply chunk. Pure.
//
// Data is reported with status 0, everything between data extents as HOLE|ZERO. Data extents
// are widened to whole `alignment` blocks (reporting data where there is a hole is always
// safe; the reverse is not) and clipped to the request. The reply may cover less than the
// request (at most descriptorsMax descriptors, one with REQ_ONE): the spec allows it, and
// clients continue from where it ends.

import type { Extent } from "../io/block-file.js";
import { assert } from "../assert.js";
import { stateFlag } from "./protocol.js";

export interface BlockStatusDescriptor {
  readonly length: number;
  readonly flags: number;
}

const flagsHole = stateFlag.hole | stateFlag.zero;
const flagsData = 0;

export function blockStatusDescriptors(
  offset: number,
  length: number,
  extents: readonly Extent[] | null,
  descriptorsMax: number,
  alignment: number,
): BlockStatusDescriptor[] {
  assert(length > 0 && descriptorsMax > 0 && alignment > 0, "block status over a nonempty range");
  const end = offset + length;
  if (extents === null) return [{ length, flags: flagsData }];
  const sorted = isSorted(extents) ? extents : [...extents].sort((a, b) => a.offset - b.offset);
  const descriptors: { length: number; flags: number }[] = [];
  const push = (flags: number, from: number, to: number): void => {
    if (to <= from) return;
    const last = descriptors[descriptors.length - 1];
    if (last !== undefined && last.flags === flags) last.length += to - from;
    else descriptors.push({ length: to - from, flags });
  };
  let cursor = offset;
  for (const extent of sorted) {
    if (cursor >= end) break;
    if (extent.length <= 0) continue;
    const extentEnd = extent.offset + extent.length;
    const dataStart = Math.max(cursor, extent.offset - (extent.offset % alignment));
    const dataEnd = Math.min(end, extentEnd + ((alignment - (extentEnd % alignment)) % alignment));
    if (dataEnd <= cursor) continue;
    if (dataStart >= end) break;
    push(flagsHole, cursor, dataStart);
    push(flagsData, dataStart, dataEnd);
    cursor = dataEnd;
  }
  push(flagsHole, cursor, end);
  // Descriptor lengths are 32-bit; requests are too, so merged runs never exceed the request.
  return descriptors.length > descriptorsMax ? descriptors.slice(0, descriptorsMax) : descriptors;
}

function isSorted(extents: readonly Extent[]): boolean {
  for (let index = 1; index < extents.length; index += 1) {
    if ((extents[index] as Extent).offset < (extents[index - 1] as Extent).offset) return false;
  }
  return true;
}
