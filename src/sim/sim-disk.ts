// A simulated disk for power-cut tests. Writes stay volatile until datasync(); crash() then
// decides, per unsynced write and per 512-byte sector, whether it reached the medium (kept),
// never did (dropped) or only partly (torn at a sector boundary). Faults can be injected:
// the next operations fail with EIO or ENOSPC.
//
//   durable image ──▶ + pending writes, in order ──▶ what read() returns
//                       (crash: each sector of each pending write kept or dropped)

import { assert } from "../assert.js";
import { OperatingError } from "../errors.js";
import type { BlockFile, Extent } from "../io/block-file.js";
import type { Random } from "./random.js";

const sector = 512;

interface PendingWrite {
  readonly position: number;
  readonly data: Buffer;
  readonly durable: boolean; // written with O_DSYNC: survives a crash whatever else is lost
}

export type SimFault = "EIO" | "ENOSPC";

export class SimDisk implements BlockFile {
  readonly isBlockDevice = false;
  private durable: Buffer;
  private durableSize: number;
  private pending: PendingWrite[] = [];
  private pendingSize: number;
  private faults: { kind: SimFault; remaining: number; on: "read" | "write" | "sync" | "any" }[] = [];
  closed = false;
  syncCount = 0;

  constructor(
    readonly path: string,
    size: number,
  ) {
    this.durable = Buffer.alloc(size);
    this.durableSize = size;
    this.pendingSize = size;
  }

  injectFault(kind: SimFault, on: "read" | "write" | "sync" | "any", count = 1): void {
    this.faults.push({ kind, remaining: count, on });
  }

  private checkFault(operation: "read" | "write" | "sync"): void {
    const fault = this.faults.find((candidate) => candidate.on === operation || candidate.on === "any");
    if (!fault) return;
    fault.remaining -= 1;
    if (fault.remaining <= 0) this.faults.splice(this.faults.indexOf(fault), 1);
    throw new OperatingError(fault.kind === "EIO" ? "DISK_IO" : "DISK_FULL", { what: `${operation} ${this.path}`, errno: fault.kind });
  }

  private ensureCapacity(size: number): void {
    if (this.durable.length >= size) return;
    const grown = Buffer.alloc(Math.max(size, this.durable.length * 2));
    this.durable.copy(grown);
    this.durable = grown;
  }

  clearFaults(): void {
    this.faults = [];
  }

  async read(target: Buffer, position: number): Promise<void> {
    assert(!this.closed, "read after close");
    this.checkFault("read");
    this.peek(target, position);
  }

  // What a reader would see now, without touching injected faults (a checker's look).
  peek(target: Buffer, position: number): void {
    target.fill(0);
    const end = Math.min(position + target.length, this.durableSize);
    if (end > position) this.durable.copy(target, 0, position, end);
    for (const write of this.pending) this.overlay(target, position, write);
    if (position + target.length > this.pendingSize) target.fill(0, Math.max(0, this.pendingSize - position));
  }

  private overlay(target: Buffer, position: number, write: PendingWrite): void {
    const start = Math.max(position, write.position);
    const end = Math.min(position + target.length, write.position + write.data.length);
    if (start < end) write.data.copy(target, start - position, start - write.position, end - write.position);
  }

  async write(sources: readonly Buffer[], position: number, durable = false): Promise<void> {
    assert(!this.closed, "write after close");
    this.checkFault("write");
    this.pend(Buffer.concat(sources as Buffer[]), position, durable);
  }

  private pend(data: Buffer, position: number, durable: boolean): void {
    this.pending.push({ position, data, durable });
    this.pendingSize = Math.max(this.pendingSize, position + data.length);
  }

  // A write done at once, as a write into the page cache is; declines (false, nothing
  // written) while a write fault is armed, so the fault meets the write made the usual way.
  writeNow(source: Buffer, position: number): boolean {
    if (this.closed || this.faults.some((fault) => fault.on === "write" || fault.on === "any")) return false;
    this.pend(Buffer.from(source), position, false);
    return true;
  }

  async datasync(): Promise<void> {
    assert(!this.closed, "sync after close");
    this.checkFault("sync");
    this.syncCount += 1;
    for (const write of this.pending) this.apply(write.position, write.data);
    this.pending = [];
    this.durableSize = this.pendingSize;
  }

  private apply(position: number, data: Buffer): void {
    this.ensureCapacity(position + data.length);
    data.copy(this.durable, position);
  }

  async size(): Promise<number> {
    return this.pendingSize;
  }

  async truncate(size: number): Promise<void> {
    // Modelled as immediately durable metadata, as ext4/xfs journal it.
    this.ensureCapacity(size);
    if (size < this.durableSize) this.durable.fill(0, size, this.durableSize);
    this.pending = this.pending
      .filter((write) => write.position < size)
      .map((write) => (write.position + write.data.length <= size ? write : { ...write, data: write.data.subarray(0, size - write.position) }));
    this.durableSize = size;
    this.pendingSize = size;
  }

  async punchHole(offset: number, length: number): Promise<void> {
    await this.write([Buffer.alloc(length)], offset);
  }

  async zeroRange(offset: number, length: number): Promise<void> {
    await this.write([Buffer.alloc(length)], offset);
  }

  dataExtents(offset: number, length: number): Extent[] | null {
    return [{ offset, length }];
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  // A power cut: every unsynced write is, sector by sector, kept or dropped by chance.
  // Returns how many sectors were dropped. The disk stays usable (a reboot).
  crash(random: Random, keepProbability = 0.5): number {
    let dropped = 0;
    for (const write of this.pending) {
      for (let at = 0; at < write.data.length; at += sector) {
        const piece = write.data.subarray(at, Math.min(at + sector, write.data.length));
        if (write.durable || random.chance(keepProbability)) this.apply(write.position + at, piece);
        else dropped += 1;
      }
      this.durableSize = Math.max(this.durableSize, write.position + write.data.length);
    }
    this.pending = [];
    this.pendingSize = this.durableSize;
    this.closed = false;
    return dropped;
  }

  // Everything, durable or not, as a reader would see it now.
  snapshot(): Buffer {
    const image = Buffer.alloc(this.pendingSize);
    void this.read(image, 0);
    return image;
  }
}
