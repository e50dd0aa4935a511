// Shared pieces of the log tests: a fence around a simulated disk (a crashed process must not
// keep writing to the "rebooted" disk), small limits for logs that wrap often, and readers.

import { OperatingError } from "../../src/errors.js";
import type { BlockFile, Extent } from "../../src/io/block-file.js";
import type { GroupLog, GroupLogLimits, LogClock } from "../../src/log/group-log.js";
import type { LogRecord } from "../../src/log/record.js";
import type { SimDisk } from "../../src/sim/sim-disk.js";

export const KiB = 1024;

// A tiny log for tests: 4 KiB segments, and no minimum log size.
export const smallLimits: Partial<GroupLogLimits> = { sizeMin: 0, segmentBytesMin: 4 * KiB, readChunkBytes: 16 * KiB };

export const fixedClock: LogClock = {
  nowMs: () => 1_700_000_000_000,
  setTimeout: (callback, ms) => {
    const timer = setTimeout(callback, ms);
    return () => clearTimeout(timer);
  },
};

// Passes every call to a disk until fence(); from then on every call fails with DISK_IO, as a
// process that died would never touch the disk again.
export class FencedFile implements BlockFile {
  fenced = false;
  // Hooks for tests that act between steps (e.g. crash right before a datasync).
  beforeSync: (() => void) | null = null;
  writes: { position: number; bytes: number }[] = [];

  constructor(readonly disk: SimDisk) {}

  get path(): string {
    return this.disk.path;
  }
  get isBlockDevice(): boolean {
    return false;
  }
  fence(): void {
    this.fenced = true;
  }
  private check(what: string): void {
    if (this.fenced) throw new OperatingError("DISK_IO", { what: `${what} after fence`, errno: "EIO" });
  }
  async read(target: Buffer, position: number): Promise<void> {
    this.check("read");
    await this.disk.read(target, position);
  }
  async write(sources: readonly Buffer[], position: number, durable = false): Promise<void> {
    this.check("write");
    this.writes.push({ position, bytes: sources.reduce((sum, source) => sum + source.length, 0) });
    await this.disk.write(sources, position, durable);
  }
  async datasync(): Promise<void> {
    this.check("datasync");
    this.beforeSync?.();
    this.check("datasync");
    await this.disk.datasync();
  }
  size(): Promise<number> {
    return this.disk.size();
  }
  truncate(size: number): Promise<void> {
    return this.disk.truncate(size);
  }
  punchHole(offset: number, length: number): Promise<void> {
    return this.disk.punchHole(offset, length);
  }
  zeroRange(offset: number, length: number): Promise<void> {
    return this.disk.zeroRange(offset, length);
  }
  dataExtents(offset: number, length: number): Extent[] | null {
    return this.disk.dataExtents(offset, length);
  }
  async close(): Promise<void> {}
}

export async function readAll(log: GroupLog, fromLsn: bigint): Promise<LogRecord[]> {
  const records: LogRecord[] = [];
  for await (const record of log.cursor(fromLsn)) records.push({ ...record, payload: Buffer.from(record.payload) });
  return records;
}

// Lets queued microtasks and immediate callbacks run.
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
