// The disks of one simulated node: a SimDisk per path, which outlives the node's incarnations
// (a crash, then a restart on the same disks). Each incarnation reaches them through SimFiles:
//
//   - writes, syncs, truncates and zeroes take virtual time (latency drawn per operation) and
//     land on the disk when they complete; reads are immediate (they see what has landed);
//   - once the incarnation is dead (crashed), a call fails with EIO and an operation in
//     flight never completes: a dead process never touches the rebooted disks.
//
// crash() is the power cut: every unsynced write is kept, dropped or torn per 512-byte sector.

import { OperatingError } from "../errors.js";
import type { BlockFile, BlockFileOpener, Extent } from "../io/block-file.js";
import type { Random } from "./random.js";
import { type SimFault, SimDisk } from "./sim-disk.js";
import type { SimOwner, SimWorld } from "./sim-world.js";

export interface DiskLatency {
  readonly writeMsMax: number;
  readonly syncMsMax: number;
}

export class SimStorage {
  private readonly disks = new Map<string, SimDisk>();

  constructor(
    private readonly world: SimWorld,
    private readonly random: Random,
    readonly latency: DiskLatency,
  ) {}

  disk(path: string, size: number): SimDisk {
    let disk = this.disks.get(path);
    if (disk === undefined) {
      disk = new SimDisk(path, size);
      this.disks.set(path, disk);
    }
    return disk;
  }

  existing(path: string): SimDisk | undefined {
    return this.disks.get(path);
  }

  paths(): string[] {
    return [...this.disks.keys()].sort();
  }

  // The files of one incarnation.
  opener(owner: SimOwner): BlockFileOpener & { file(path: string, size: number): SimFile } {
    const file = (path: string, size: number) => new SimFile(this.disk(path, size), owner, this.world, this.random, this.latency);
    return {
      file,
      open: async (path, options) => {
        if (!owner.alive) throw dead(path);
        return file(path, options.create ?? 0);
      },
    };
  }

  // A power cut on every disk; returns the sectors lost.
  crash(random: Random, keepProbability: number): number {
    let lost = 0;
    for (const path of this.paths()) lost += this.disks.get(path)!.crash(random, keepProbability);
    return lost;
  }

  injectFault(path: string, kind: SimFault, on: "read" | "write" | "sync" | "any"): void {
    this.disks.get(path)?.injectFault(kind, on, 1);
  }

  clearFaults(): void {
    for (const disk of this.disks.values()) disk.clearFaults();
  }
}

function dead(path: string): OperatingError {
  return new OperatingError("DISK_IO", { what: `${path}: the simulated process is down`, errno: "EIO" });
}

export class SimFile implements BlockFile {
  readonly isBlockDevice = false;

  constructor(
    readonly disk: SimDisk,
    private readonly owner: SimOwner,
    private readonly world: SimWorld,
    private readonly random: Random,
    private readonly latency: DiskLatency,
  ) {}

  get path(): string {
    return this.disk.path;
  }

  private check(): void {
    if (!this.owner.alive) throw dead(this.disk.path);
  }

  // Waits the operation's latency; resolves only if the incarnation is still alive by then.
  private async after<T>(msMax: number, action: () => Promise<T>): Promise<T> {
    this.check();
    await this.world.delay(this.owner, this.random.below(Math.max(1, Math.round(msMax * 1000))) / 1000);
    this.check();
    return action();
  }

  async read(target: Buffer, position: number): Promise<void> {
    this.check();
    await this.disk.read(target, position);
  }

  write(sources: readonly Buffer[], position: number, durable = false): Promise<void> {
    // The bytes are taken now, as a write system call would copy them.
    const data = Buffer.concat(sources as Buffer[]);
    return this.after(this.latency.writeMsMax, () => this.disk.write([data], position, durable));
  }

  // Half the time at once (a write into the page cache), else declined, as a real file declines
  // when its inline writes have turned slow: both ways of the write path are explored.
  writeNow(source: Buffer, position: number): boolean {
    if (!this.owner.alive || this.random.below(2) === 0) return false;
    return this.disk.writeNow(source, position);
  }

  datasync(): Promise<void> {
    return this.after(this.latency.syncMsMax, () => this.disk.datasync());
  }

  async size(): Promise<number> {
    this.check();
    return this.disk.size();
  }

  truncate(size: number): Promise<void> {
    return this.after(this.latency.writeMsMax, () => this.disk.truncate(size));
  }

  punchHole(offset: number, length: number): Promise<void> {
    return this.after(this.latency.writeMsMax, () => this.disk.punchHole(offset, length));
  }

  zeroRange(offset: number, length: number): Promise<void> {
    return this.after(this.latency.writeMsMax, () => this.disk.zeroRange(offset, length));
  }

  dataExtents(offset: number, length: number): Extent[] | null {
    return this.disk.dataExtents(offset, length);
  }

  async close(): Promise<void> {}
}
