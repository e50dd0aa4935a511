// BlockFile on node:fs: positional I/O on a raw file or block device, fdatasync, and the
// hole/zero/allocation calls of the native addon. Short reads past the end are zero-filled;
// short writes are continued until every byte is down.

import { constants as fsConstants, promises as fsp, type Stats } from "node:fs";
import { read as readCallback, writev as writevCallback, writevSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { fromSystemError, OperatingError } from "../errors.js";
import type { BlockFile, BlockFileOpener, BlockFileOptions, Extent } from "./block-file.js";
import { nativeFs } from "./native.js";

function readAt(fd: number, target: Buffer, offset: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    readCallback(fd, target, offset, target.length - offset, position, (error, bytesRead) =>
      error ? reject(error) : resolve(bytesRead),
    );
  });
}

function writevAt(fd: number, sources: readonly Buffer[], position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    writevCallback(fd, sources as Buffer[], position, (error, bytesWritten) =>
      error ? reject(error) : resolve(bytesWritten),
    );
  });
}

// Drops the first `count` bytes of a list of buffers (after a short write).
function advance(sources: readonly Buffer[], count: number): Buffer[] {
  const rest: Buffer[] = [];
  let skip = count;
  for (const source of sources) {
    if (skip >= source.length) {
      skip -= source.length;
      continue;
    }
    rest.push(skip > 0 ? source.subarray(skip) : source);
    skip = 0;
  }
  return rest;
}

// The event-loop fast path (see docs/DESIGN-NOTES.md §5): a read the page cache can serve at
// once (preadv2 RWF_NOWAIT), and a small page-aligned write (which never needs a
// read-modify-write of a page), run on the event loop thread: one syscall instead of a
// thread-pool round trip, which on this class of machine costs ~10 µs of CPU. A write that
// took longer than inlineWriteMsMax (the kernel throttling dirty pages) sends this file's
// writes to the thread pool for inlineBackoffMs, so the event loop never stalls for long.
//
// One slow write is not throttling: on a busy machine the thread is simply preempted in the
// middle of a write now and then (measured with a replication link on 2 cores: one write in
// a few thousand took 2-12 ms, and each sent a second's writes to the pool, ~10 µs of CPU
// more each). The kernel's dirty throttling pauses a writer again and again, for tens of
// milliseconds or more: a write slower than inlineWriteMsStall, or the third slow write within
// inlineSlowSpacingWrites, backs off.
const pageSize = 4096;
const inlineReadBytesMax = 1024 * 1024;
const inlineWriteBytesMax = 256 * 1024;
const inlineWriteMsMax = 2;
const inlineWriteMsStall = 50;
const inlineBackoffMs = 1000;
const inlineSlowSpacingWrites = 1024;

// Around the page cache (BlockFileOptions.bypassCache): a write of at least
// directWriteBytesMin whose position and length are multiples of directAlignBytes goes
// through a second descriptor opened with O_DIRECT, copied on the thread pool into that
// thread's page-aligned buffer (native writeDirect). At most the addon's writeSourcesMax
// buffers per write; a smaller or larger write, an unaligned one, or any write to a file
// system that refuses O_DIRECT takes the usual path. Both descriptors are of one file: the
// kernel keeps the page cache coherent with direct writes, and a datasync of either makes both
// durable.
//
// Why a minimum (fio, psync, sequential, on this class of machine, CPU per write): a direct
// write costs about 22 µs whatever its size (the virtual disk's doorbell and interrupt) plus
// 0.07 µs per KiB; a buffered one into pages the cache does not hold about 3 µs plus 0.3 µs
// per KiB, before the kernel's writeback of those pages. Even at 64 KiB (27 against 18 µs)
// the cache is cheaper; at 256 KiB direct is (39 against 82 µs), and at 1 MiB far cheaper. A
// log's batches are small at low load (tens of KiB at queue depth 1) and hundreds of KiB at
// high load.
const directAlignBytes = nativeFs.directAlignBytes;
export const directWriteBytesMin = 128 * 1024;

export class NodeBlockFile implements BlockFile {
  private inlineWritesAfterMs = 0;
  private inlineWrites = 0;
  private slowWriteCounts = [-inlineSlowSpacingWrites, -inlineSlowSpacingWrites]; // inlineWrites at the last two slow ones
  private dsyncHandle: Promise<fsp.FileHandle> | null = null; // opened on the first durable write
  private directHandle: fsp.FileHandle | null = null; // O_DIRECT, for bypassCache files
  private directRefused = false; // the kernel refused an aligned direct write: never again
  directWrites = 0; // writes that went around the page cache

  private constructor(
    readonly path: string,
    private readonly handle: fsp.FileHandle,
    readonly isBlockDevice: boolean,
    private readonly writesOffLoop: boolean,
  ) {}

  // Whether aligned writes go around the page cache (asked for, and the file system allows it).
  get bypassesCache(): boolean {
    return this.directHandle !== null && !this.directRefused;
  }

  static async open(path: string, options: BlockFileOptions = {}): Promise<NodeBlockFile> {
    const flags = options.readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, flags | (options.create !== undefined ? fsConstants.O_CREAT : 0), 0o600);
    } catch (error) {
      throw fromSystemError(error, `open ${path}`);
    }
    let stats: Stats;
    try {
      stats = await handle.stat();
    } catch (error) {
      await handle.close();
      throw fromSystemError(error, `stat ${path}`);
    }
    const file = new NodeBlockFile(path, handle, stats.isBlockDevice(), options.writesOffLoop ?? false);
    if (!stats.isBlockDevice() && !stats.isFile()) {
      await handle.close();
      throw new OperatingError("CONFIG_INVALID", `${path} is neither a regular file nor a block device`);
    }
    if (options.create !== undefined && stats.isFile() && stats.size === 0 && options.create > 0) {
      await file.truncate(options.create);
    }
    if (options.bypassCache === true && !options.readOnly) {
      // EINVAL: the file system has no O_DIRECT; every write then takes the usual path.
      file.directHandle = await fsp.open(path, fsConstants.O_RDWR | fsConstants.O_DIRECT).catch(() => null);
    }
    return file;
  }

  get fd(): number {
    return this.handle.fd;
  }

  async read(target: Buffer, position: number): Promise<void> {
    let done = 0;
    if (target.length <= inlineReadBytesMax) {
      let count = -1;
      try {
        count = nativeFs.readNoWait(this.fd, target, position);
      } catch (error) {
        throw fromSystemError(error, `read ${this.path}`);
      }
      if (count === target.length) return;
      if (count > 0) done = count;
    }
    while (done < target.length) {
      let count: number;
      try {
        count = await readAt(this.fd, target, done, position + done);
      } catch (error) {
        throw fromSystemError(error, `read ${this.path}`);
      }
      if (count === 0) {
        target.fill(0, done);
        return;
      }
      done += count;
    }
  }

  private writeInline(sources: readonly Buffer[], position: number, length: number): boolean {
    if (this.writesOffLoop || length > inlineWriteBytesMax || length % pageSize !== 0 || position % pageSize !== 0 || sources.length > 64) return false;
    const now = performance.now();
    if (now < this.inlineWritesAfterMs) return false;
    let count: number;
    try {
      count = writevSync(this.fd, sources as Buffer[], position);
    } catch (error) {
      throw fromSystemError(error, `write ${this.path}`);
    }
    const done = performance.now();
    this.inlineWrites += 1;
    if (done - now > inlineWriteMsMax) {
      const throttled = done - now > inlineWriteMsStall || this.inlineWrites - this.slowWriteCounts[0]! <= inlineSlowSpacingWrites;
      this.slowWriteCounts = [this.slowWriteCounts[1]!, this.inlineWrites];
      if (throttled) this.inlineWritesAfterMs = done + inlineBackoffMs;
    }
    return count === length;
  }

  async write(sources: readonly Buffer[], position: number, durable = false): Promise<boolean> {
    const length = sources.length === 1 ? sources[0]!.length : sources.reduce((sum, source) => sum + source.length, 0);
    if (durable) {
      await this.writeAll(sources, position, length, (await this.dsyncFile()).fd);
      return false;
    }
    if (this.writesAround(position, length, sources.length)) {
      if (await this.writeDirect(this.directHandle!, sources, position)) return true;
    }
    if (!this.writeInline(sources, position, length)) await this.writeAll(sources, position, length, this.fd);
    return false;
  }

  gathersWrite(length: number, sourceCount: number): boolean {
    return this.bypassesCache && length >= directWriteBytesMin && sourceCount <= nativeFs.writeSourcesMax;
  }

  private writesAround(position: number, length: number, sourceCount: number): boolean {
    const aligned = position % directAlignBytes === 0 && length % directAlignBytes === 0;
    return aligned && this.gathersWrite(length, sourceCount);
  }

  // True when written; false when the kernel refused the alignment after all (EINVAL: a device
  // with larger blocks), and then this file's writes take the usual path from now on (the
  // descriptor stays open until close(): another write may still be using it).
  private async writeDirect(handle: fsp.FileHandle, sources: readonly Buffer[], position: number): Promise<boolean> {
    try {
      await nativeFs.writeDirect(handle.fd, sources, position);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EINVAL") throw fromSystemError(error, `write ${this.path}`);
      this.directRefused = true;
      return false;
    }
    this.directWrites += 1;
    return true;
  }

  writeNow(source: Buffer, position: number): boolean {
    try {
      return this.writeInline([source], position, source.length);
    } catch {
      return false;
    }
  }

  async writeBatch(sources: readonly Buffer[], positions: readonly number[]): Promise<void> {
    try {
      await nativeFs.writeBatch(this.fd, sources, positions);
    } catch (error) {
      throw fromSystemError(error, `write ${this.path}`);
    }
  }

  // A second descriptor opened with O_DSYNC: a write through it is durable on return, at the
  // cost of that write alone (what NBD's FUA asks), not of every dirty page of the file.
  private dsyncFile(): Promise<fsp.FileHandle> {
    this.dsyncHandle ??= fsp.open(this.path, fsConstants.O_RDWR | fsConstants.O_DSYNC).catch((error: unknown) => {
      this.dsyncHandle = null;
      throw fromSystemError(error, `open ${this.path} for durable writes`);
    });
    return this.dsyncHandle;
  }

  private async writeAll(sources: readonly Buffer[], position: number, length: number, fd: number): Promise<void> {
    let rest = sources;
    let at = position;
    let remaining = length; // an inline write that came up short is simply redone here
    while (remaining > 0) {
      let count: number;
      try {
        count = await writevAt(fd, rest, at);
      } catch (error) {
        throw fromSystemError(error, `write ${this.path}`);
      }
      if (count === 0) throw new OperatingError("DISK_FULL", { what: `write ${this.path}`, position: at });
      remaining -= count;
      at += count;
      if (remaining > 0) rest = advance(rest, count);
    }
  }

  async datasync(): Promise<void> {
    try {
      await this.handle.datasync();
    } catch (error) {
      throw fromSystemError(error, `fdatasync ${this.path}`);
    }
  }

  startWriteback(offset: number, length: number): void {
    nativeFs.startWriteback(this.fd, "writeback", offset, length).catch(() => undefined);
  }

  async size(): Promise<number> {
    if (this.isBlockDevice) return nativeFs.seek(this.fd, 0, nativeFs.SEEK_END);
    const stats = await this.handle.stat();
    return stats.size;
  }

  async truncate(size: number): Promise<void> {
    if (this.isBlockDevice) throw new OperatingError("NOT_SUPPORTED", `cannot resize block device ${this.path}`);
    try {
      await this.handle.truncate(size);
    } catch (error) {
      throw fromSystemError(error, `truncate ${this.path}`);
    }
  }

  async reserve(size: number): Promise<void> {
    if (this.isBlockDevice) throw new OperatingError("NOT_SUPPORTED", `cannot reserve space on block device ${this.path}`);
    try {
      await nativeFs.fallocate(this.fd, "allocate", 0, size);
    } catch (error) {
      throw fromSystemError(error, `reserve ${size} bytes for ${this.path}`);
    }
  }

  async punchHole(offset: number, length: number): Promise<void> {
    try {
      if (this.isBlockDevice) await nativeFs.blockRange(this.fd, "discard", offset, length);
      else await nativeFs.fallocate(this.fd, "punch", offset, length);
    } catch (error) {
      throw fromSystemError(error, `punch hole ${this.path}`);
    }
  }

  async zeroRange(offset: number, length: number): Promise<void> {
    try {
      if (this.isBlockDevice) await nativeFs.blockRange(this.fd, "zeroout", offset, length);
      else await nativeFs.fallocate(this.fd, "zero", offset, length);
    } catch (error) {
      const typed = fromSystemError(error, `zero range ${this.path}`);
      if (typed.code !== "NOT_SUPPORTED") throw typed;
      await this.writeZeroes(offset, length); // file systems without ZERO_RANGE
    }
  }

  private async writeZeroes(offset: number, length: number): Promise<void> {
    const chunk = Buffer.alloc(Math.min(length, 1024 * 1024));
    for (let done = 0; done < length; done += chunk.length) {
      await this.write([chunk.subarray(0, Math.min(chunk.length, length - done))], offset + done);
    }
  }

  dataExtents(offset: number, length: number, extentsMax: number): Extent[] | null {
    if (this.isBlockDevice) return null;
    const extents: Extent[] = [];
    const end = offset + length;
    let at = offset;
    try {
      while (at < end && extents.length < extentsMax) {
        const dataStart = nativeFs.seek(this.fd, at, nativeFs.SEEK_DATA);
        if (dataStart < 0 || dataStart >= end) break;
        let dataEnd = nativeFs.seek(this.fd, dataStart, nativeFs.SEEK_HOLE);
        if (dataEnd < 0 || dataEnd > end) dataEnd = end;
        extents.push({ offset: dataStart, length: dataEnd - dataStart });
        at = dataEnd;
      }
    } catch {
      return null; // the file system cannot say; callers treat the range as allocated
    }
    return extents;
  }

  async close(): Promise<void> {
    if (this.dsyncHandle !== null) await (await this.dsyncHandle.catch(() => null))?.close();
    const direct = this.directHandle;
    this.directHandle = null;
    await direct?.close();
    await this.handle.close();
  }
}

export const nodeBlockFileOpener: BlockFileOpener = {
  open: (path, options) => NodeBlockFile.open(path, options),
};

