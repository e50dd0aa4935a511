// A SimDisk that remembers which 4 KiB blocks were ever written (and not punched), and reports
// them through dataExtents as a file system with SEEK_DATA would: for tests of code that skips
// holes. `allocationKnown = false` makes it answer like a platform that cannot tell (null).
// Counts reads, so a test can see that holes were not read.

import type { Extent } from "../../src/io/block-file.js";
import { SimDisk } from "../../src/sim/sim-disk.js";

const blockBytes = 4096;

export class SparseSimDisk extends SimDisk {
  private readonly allocated = new Set<number>();
  allocationKnown = true;
  readCount = 0;
  allocationQueries = 0;

  override async read(target: Buffer, position: number): Promise<void> {
    this.readCount += 1;
    await super.read(target, position);
  }

  override async write(sources: readonly Buffer[], position: number, durable = false): Promise<void> {
    await super.write(sources, position, durable);
    const length = sources.reduce((sum, source) => sum + source.length, 0);
    for (let block = Math.floor(position / blockBytes); block * blockBytes < position + length; block++) this.allocated.add(block);
  }

  override async punchHole(offset: number, length: number): Promise<void> {
    await super.write([Buffer.alloc(length)], offset);
    for (let block = Math.ceil(offset / blockBytes); (block + 1) * blockBytes <= offset + length; block++) this.allocated.delete(block);
  }

  override dataExtents(offset: number, length: number, extentsMax = Number.MAX_SAFE_INTEGER): Extent[] | null {
    this.allocationQueries += 1;
    if (!this.allocationKnown) return null;
    const end = offset + length;
    const blocks = [...this.allocated].filter((block) => (block + 1) * blockBytes > offset && block * blockBytes < end).sort((a, b) => a - b);
    const extents: Extent[] = [];
    for (const block of blocks) {
      const start = Math.max(offset, block * blockBytes);
      const stop = Math.min(end, (block + 1) * blockBytes);
      const last = extents[extents.length - 1];
      if (last !== undefined && last.offset + last.length === start) {
        extents[extents.length - 1] = { offset: last.offset, length: stop - last.offset };
      } else {
        if (extents.length === extentsMax) break;
        extents.push({ offset: start, length: stop - start });
      }
    }
    return extents;
  }
}
