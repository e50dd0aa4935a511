// The one interface through which everything above io/ touches a file or block device.
// Implementations: io/node-block-file.ts (the real disk) and sim/sim-disk.ts (a simulated disk
// whose writes stay volatile until datasync, for power-cut tests).
//
// Offsets and lengths are byte counts as JS numbers: every image is at most volumeSizeMax
// (< 2^53) bytes. Methods reject with OperatingError (DISK_IO, DISK_FULL, NOT_SUPPORTED).

export interface Extent {
  readonly offset: number;
  readonly length: number;
}

export interface BlockFile {
  readonly path: string;
  readonly isBlockDevice: boolean;
  // Aligned writes go around the page cache (BlockFileOptions.bypassCache, where allowed).
  readonly bypassesCache?: boolean;
  // Reads exactly target.length bytes at position; bytes past the end read as zero.
  read(target: Buffer, position: number): Promise<void>;
  // Writes every byte of every source, back to back, starting at position. durable: the bytes
  // are on stable storage when it resolves (O_DSYNC for this write only, not a file sync).
  // The sources are the caller's again once it settles (the log reuses its staging buffer).
  // Resolves true when the bytes went around the page cache (bypassCache), leaving no dirty
  // pages for startWriteback to push; a file that never bypasses it may resolve nothing.
  write(sources: readonly Buffer[], position: number, durable?: boolean): Promise<boolean | void>;
  // Writes before returning when it can do so cheaply (a small aligned write into the page
  // cache); false, with nothing known written, otherwise or on any error.
  writeNow?(source: Buffer, position: number): boolean;
  // Writes each source at its own position, one after another in order (a replica applying
  // a run of logged writes): the file is at every moment the result of a prefix of the run.
  // Optional: without it, callers write the sources one by one.
  writeBatch?(sources: readonly Buffer[], positions: readonly number[]): Promise<void>;
  // Whether write() would take `length` bytes in `sourceCount` buffers around the page cache
  // (a large write of whole pages), gathering the buffers itself: a caller need not copy them
  // into one first. Optional: without it, never.
  gathersWrite?(length: number, sourceCount: number): boolean;
  datasync(): Promise<void>;
  // Starts writing back a range's dirty pages without waiting for them (a hint: a later
  // datasync then has little left to do). Never fails; a file system that cannot does nothing.
  startWriteback?(offset: number, length: number): void;
  size(): Promise<number>;
  truncate(size: number): Promise<void>; // files only
  // Allocates the blocks of [0, size), growing the file to size if it is shorter, so that
  // writes there cannot later fail for want of space; what the file holds is unchanged.
  // DISK_FULL when the file system has not the room; NOT_SUPPORTED where it cannot allocate
  // ahead (the file is then left as it was). Files only.
  reserve?(size: number): Promise<void>;
  // Deallocates a range; it reads back as zero afterwards. NOT_SUPPORTED where impossible.
  punchHole(offset: number, length: number): Promise<void>;
  // Makes a range read as zero, keeping it allocated where the platform allows.
  zeroRange(offset: number, length: number): Promise<void>;
  // Allocated (data) extents that intersect [offset, offset+length). Null: the platform cannot tell.
  dataExtents(offset: number, length: number, extentsMax: number): Extent[] | null;
  close(): Promise<void>;
}

export interface BlockFileOptions {
  create?: number; // make the file with this size if missing (never for block devices)
  readOnly?: boolean;
  // Every write goes to the I/O threads, none on the event loop (a group log's batches: tens
  // of KiB each, written while the event loop, a busy node's bottleneck, serves requests).
  writesOffLoop?: boolean;
  // Aligned writes go around the page cache where the platform allows (O_DIRECT): for a file
  // written once and seldom read back, whose every page would otherwise be a fresh page-cache
  // page (a group log). Reads still go through the cache; datasync still makes writes durable.
  bypassCache?: boolean;
}

export interface BlockFileOpener {
  open(path: string, options: BlockFileOptions): Promise<BlockFile>;
}
