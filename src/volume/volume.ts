// A volume: one raw image (file or block device) and the block I/O on it. It knows nothing
// about logs or groups. Callers (group/) validate ranges; here they are asserted.
//
// Disk faults are remembered (lastError, errorCount) so status can show them, and re-thrown
// as typed errors for the client.

import { assert } from "../assert.js";
import { sectorSize, volumeSizeMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { BlockFile, Extent } from "../io/block-file.js";
import type { ChangeGuard, ReadOverlay } from "./change-guard.js";
import { SyncCoalescer } from "./sync-coalescer.js";

export interface VolumeFault {
  readonly code: string;
  readonly message: string;
  readonly atMs: number;
}

export class Volume {
  private sizeBytes: number;
  private readonly syncer: SyncCoalescer;
  lastError: VolumeFault | null = null;
  // Every change with an LSN up to this is on stable storage in the image (set by the group
  // after a sync that started when they were all applied).
  syncedLsn = 0n;
  errorCount = 0;
  // Set while the volume has a snapshot store: every change passes it first (apply-change.ts).
  changeGuard: ChangeGuard | null = null;
  // Set while part of the volume's content lives elsewhere (a restore in the background): reads
  // and allocation queries of the ranges it covers go to it.
  readOverlay: ReadOverlay | null = null;

  constructor(
    readonly id: number,
    readonly name: string,
    readonly file: BlockFile,
    size: number,
    private readonly nowMs: () => number,
  ) {
    assert(size % sectorSize === 0 && size <= volumeSizeMax, `volume ${name}: bad size ${size}`);
    this.sizeBytes = size;
    this.syncer = new SyncCoalescer(() => this.guard(() => this.file.datasync()));
  }

  get size(): number {
    return this.sizeBytes;
  }

  get path(): string {
    return this.file.path;
  }

  private assertRange(offset: number, length: number): void {
    assert(offset >= 0 && length >= 0 && offset + length <= this.sizeBytes, () => `volume ${this.name}: range ${offset}+${length} past ${this.sizeBytes}`);
  }

  private async guard<T>(action: () => Promise<T>): Promise<T> {
    try {
      return await action();
    } catch (error) {
      const typed = error instanceof OperatingError ? error : new OperatingError("DISK_IO", { volume: this.name }, { cause: error });
      if (typed.code !== "NOT_SUPPORTED") {
        this.lastError = { code: typed.code, message: typed.message, atMs: this.nowMs() };
        this.errorCount += 1;
      }
      throw typed;
    }
  }

  // The volume's content, as every client sees it.
  read(target: Buffer, offset: number): Promise<void> {
    this.assertRange(offset, target.length);
    if (this.readOverlay?.covers(offset, target.length)) return this.readOverlay.read(target, offset);
    return this.guard(() => this.file.read(target, offset));
  }

  // What the image holds, whatever an overlay says: for the overlay itself and for the
  // snapshot store, which preserves the image's old content.
  readPhysical(target: Buffer, offset: number): Promise<void> {
    this.assertRange(offset, target.length);
    return this.guard(() => this.file.read(target, offset));
  }

  // durable: this write alone reaches stable storage before it resolves (NBD FUA).
  write(data: Buffer, offset: number, durable = false): Promise<boolean | void> {
    this.assertRange(offset, data.length);
    return this.guard(() => this.file.write([data], offset, durable));
  }

  // The write done before returning, if the file can do it so (BlockFile.writeNow); false
  // when it did not: nothing is counted as an error here, the caller writes again the usual way.
  writeNow(data: Buffer, offset: number): boolean {
    this.assertRange(offset, data.length);
    return this.file.writeNow?.(data, offset) ?? false;
  }

  // Writes each buffer at its offset, in order (a replica's run of logged writes): one job on
  // the thread pool where the file can, else one write after another. written(n): the first n
  // are in the image, called as it becomes known (once at the end of a batch job, after each
  // write otherwise); while a batch job runs, the image holds any prefix of the run.
  writeRun(sources: readonly Buffer[], offsets: readonly number[], written: (count: number) => void): Promise<void> {
    for (let index = 0; index < sources.length; index++) this.assertRange(offsets[index]!, sources[index]!.length);
    const file = this.file;
    return this.guard(async () => {
      if (file.writeBatch !== undefined) {
        await file.writeBatch(sources, offsets);
        written(sources.length);
        return;
      }
      for (let index = 0; index < sources.length; index++) {
        await file.write([sources[index]!], offsets[index]!);
        written(index + 1);
      }
    });
  }

  // Deallocates; reads back as zero. Falls back to writing zeroes where holes are impossible.
  async trim(offset: number, length: number): Promise<void> {
    this.assertRange(offset, length);
    await this.zero(offset, length, false);
  }

  // keepAllocated: NBD_CMD_FLAG_NO_HOLE. Returns after the range reads as zero.
  async zero(offset: number, length: number, keepAllocated: boolean): Promise<void> {
    this.assertRange(offset, length);
    if (!keepAllocated) {
      try {
        await this.guard(() => this.file.punchHole(offset, length));
        return;
      } catch (error) {
        if (!(error instanceof OperatingError && error.code === "NOT_SUPPORTED")) throw error;
      }
    }
    await this.guard(() => this.file.zeroRange(offset, length));
  }

  // Whether zeroing this range is cheap (no data written): for NBD_CMD_FLAG_FAST_ZERO.
  get canFastZero(): boolean {
    return !this.file.isBlockDevice;
  }

  flush(): Promise<void> {
    return this.syncer.sync();
  }

  allocation(offset: number, length: number, extentsMax: number): Extent[] | null {
    this.assertRange(offset, length);
    const found = this.file.dataExtents(offset, length, extentsMax);
    if (found === null || !this.readOverlay?.covers(offset, length)) return found;
    return mergeExtents(found, this.readOverlay.dataExtents(offset, length), extentsMax);
  }

  async resize(size: number): Promise<void> {
    assert(size % sectorSize === 0 && size <= volumeSizeMax, `volume ${this.name}: bad size ${size}`);
    await this.guard(() => this.file.truncate(size));
    this.sizeBytes = size;
  }

  close(): Promise<void> {
    return this.file.close();
  }
}

// The union of two lists of extents (each in offset order), merged where they touch, at most
// extentsMax of them (a caller asks again past the last).
// When `a` holds extentsMax extents (there may be more past its last), `b` is cut there.
export function mergeExtents(a: readonly Extent[], b: readonly Extent[], extentsMax: number): Extent[] {
  const last = a[a.length - 1];
  const limit = a.length >= extentsMax && last !== undefined ? last.offset + last.length : Infinity;
  const clipped = b.filter((extent) => extent.offset < limit).map((extent) => ({ offset: extent.offset, length: Math.min(extent.length, limit - extent.offset) }));
  const all = [...a, ...clipped].sort((x, y) => x.offset - y.offset);
  const merged: Extent[] = [];
  for (const extent of all) {
    const last = merged[merged.length - 1];
    if (last !== undefined && extent.offset <= last.offset + last.length) {
      const end = Math.max(last.offset + last.length, extent.offset + extent.length);
      merged[merged.length - 1] = { offset: last.offset, length: end - last.offset };
    } else merged.push({ offset: extent.offset, length: extent.length });
  }
  return merged.slice(0, extentsMax);
}
