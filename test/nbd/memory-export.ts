// A test-only NbdExport kept in memory, with allocation tracked per 4 KiB block so that
// BLOCK_STATUS, TRIM and WRITE_ZEROES(NO_HOLE) have something to show. It records what it was
// asked to do (FUA writes, flushes, zero options, peak concurrency) for tests to assert on,
// and can be told to fail or to delay.

import { createHash } from "node:crypto";
import { assert } from "../../src/assert.js";
import type { Extent } from "../../src/io/block-file.js";
import type { NbdExport, NbdExportFlags, NbdExportRegistry, WriteOptions, ZeroOptions } from "../../src/nbd/export.js";

export const memoryBlockSize = 4096;

export class MemoryExport implements NbdExport {
  readonly flags: NbdExportFlags;
  readonly data: Buffer;
  readonly allocated: Uint8Array; // one byte per block: 1 = data
  attached = 0;
  flushes = 0;
  writesFua = 0;
  zeroCalls: ZeroOptions[] = [];
  cacheCalls = 0;
  inflight = 0;
  inflightPeak = 0;
  delayMs = 0; // each call waits this long (to test concurrency and flow control)
  // Any request touching this byte (or any FLUSH, for offset -1) rejects with this error.
  failAt: { offset: number; error: unknown } | undefined;

  constructor(
    readonly name: string,
    size: number,
    flags: Partial<NbdExportFlags> = {},
    readonly description = "",
  ) {
    this.data = Buffer.alloc(size);
    this.allocated = new Uint8Array(Math.ceil(size / memoryBlockSize));
    this.flags = {
      readOnly: false,
      canTrim: true,
      canZero: true,
      canFastZero: true,
      canCache: true,
      canMultiConn: true,
      ...flags,
    };
  }

  size(): number {
    return this.data.length;
  }

  hash(): string {
    return createHash("sha256").update(this.data).digest("hex");
  }

  async read(offset: number, target: Buffer): Promise<void> {
    await this.enter(offset, target.length);
    try {
      this.data.copy(target, 0, offset, offset + target.length);
    } finally {
      this.inflight -= 1;
    }
  }

  async write(offset: number, data: Buffer, options: WriteOptions): Promise<void> {
    assert(!this.flags.readOnly, "no write reaches a read-only export");
    await this.enter(offset, data.length);
    try {
      data.copy(this.data, offset);
      this.mark(offset, data.length, 1, false);
      if (options.fua) this.writesFua += 1;
    } finally {
      this.inflight -= 1;
    }
  }

  async flush(): Promise<void> {
    await this.enter(-1, 0);
    this.inflight -= 1;
    this.flushes += 1;
  }

  async trim(offset: number, length: number, _options: WriteOptions): Promise<void> {
    await this.enter(offset, length);
    try {
      this.deallocate(offset, length);
    } finally {
      this.inflight -= 1;
    }
  }

  async zero(offset: number, length: number, options: ZeroOptions): Promise<void> {
    await this.enter(offset, length);
    try {
      this.zeroCalls.push(options);
      if (options.noHole) {
        this.data.fill(0, offset, offset + length);
        this.mark(offset, length, 1, false);
      } else {
        this.deallocate(offset, length);
      }
    } finally {
      this.inflight -= 1;
    }
  }

  async cache(offset: number, length: number): Promise<void> {
    await this.enter(offset, length);
    this.inflight -= 1;
    this.cacheCalls += 1;
  }

  async allocation(offset: number, length: number, extentsMax: number): Promise<Extent[] | null> {
    await this.enter(offset, length);
    this.inflight -= 1;
    const extents: Extent[] = [];
    const end = offset + length;
    let block = Math.floor(offset / memoryBlockSize);
    while (block * memoryBlockSize < end && extents.length < extentsMax) {
      if (this.allocated[block] !== 1) {
        block += 1;
        continue;
      }
      const first = block;
      while (block * memoryBlockSize < end && this.allocated[block] === 1) block += 1;
      const from = first * memoryBlockSize;
      extents.push({ offset: from, length: Math.min(block * memoryBlockSize, this.data.length) - from });
    }
    return extents;
  }

  attach(): void {
    this.attached += 1;
  }

  detach(): void {
    this.attached -= 1;
  }

  // Makes the range read as zero and drops the blocks it covers entirely.
  private deallocate(offset: number, length: number): void {
    this.data.fill(0, offset, offset + length);
    this.mark(offset, length, 0, true);
  }

  private mark(offset: number, length: number, value: number, wholeBlocksOnly: boolean): void {
    if (length === 0) return;
    const end = offset + length;
    const first = wholeBlocksOnly ? Math.ceil(offset / memoryBlockSize) : Math.floor(offset / memoryBlockSize);
    const last = wholeBlocksOnly
      ? end === this.data.length ? this.allocated.length : Math.floor(end / memoryBlockSize)
      : Math.ceil(end / memoryBlockSize);
    for (let block = first; block < last; block += 1) this.allocated[block] = value;
  }

  private async enter(offset: number, length: number): Promise<void> {
    assert(offset + length <= this.data.length, "requests arrive checked");
    this.inflight += 1;
    this.inflightPeak = Math.max(this.inflightPeak, this.inflight);
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    const fail = this.failAt;
    if (fail !== undefined && offset <= fail.offset && fail.offset < offset + Math.max(length, 1)) {
      this.inflight -= 1;
      throw fail.error;
    }
  }
}

export class MemoryRegistry implements NbdExportRegistry {
  readonly exports = new Map<string, MemoryExport>();

  constructor(exports: readonly MemoryExport[]) {
    for (const entry of exports) this.exports.set(entry.name, entry);
  }

  lookup(name: string): MemoryExport | undefined {
    return this.exports.get(name);
  }

  list(): readonly { name: string; description: string }[] {
    return [...this.exports.values()].map((entry) => ({ name: entry.name, description: entry.description }));
  }
}
