// Shared by the replica tests: a "primary" (a GroupLog on a simulated disk with records of every
// kind, and a model of its volume after every prefix of its LSN order), and a replica on
// simulated disks (its log and volume fenced, so a crashed replica cannot touch the "rebooted"
// disks) with its state file in a temporary directory.

import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { logSizeMin } from "../../src/constants.js";
import { type ReplicaHost, Replica } from "../../src/group/replica.js";
import { GroupLog } from "../../src/log/group-log.js";
import { type LogRecord, RecordFlag, RecordKind } from "../../src/log/record.js";
import { silentLogger } from "../../src/logger.js";
import type { Accept } from "../../src/replication/handshake.js";
import type { VolumeTable } from "../../src/replication/volume-table.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { Volume } from "../../src/volume/volume.js";
import { FencedFile, KiB, readAll, smallLimits } from "../log/helpers.js";

export const volumeSize = 64 * KiB;
export const volumeId = 1;
export const primaryLogId = 0x1234_5678_9abcn;

// The primary: its records as read back from its log, and its volume after each prefix.
export interface Primary {
  readonly log: GroupLog;
  readonly records: LogRecord[]; // records[i] has LSN i + 1
  readonly images: Buffer[]; // images[n] = the volume after records 1…n
}

// Applies one record to an image of the volume, as the primary did.
export function applyToImage(image: Buffer, record: LogRecord): void {
  if (record.volumeId !== volumeId || record.offset + record.length > image.length) return;
  if (record.kind === RecordKind.write) record.payload.copy(image, record.offset);
  else if (record.kind === RecordKind.zero || record.kind === RecordKind.trim) image.fill(0, record.offset, record.offset + record.length);
}

// A primary log with `count` random records: writes (mostly), zeroes, trims, an operation now
// and then, and writes to a volume the replica does not have.
export async function primaryWith(count: number, seed: number): Promise<Primary> {
  const sizeBytes = 8192 + 4096 * KiB;
  const log = await GroupLog.create(new SimDisk("primary-log", sizeBytes), { sizeBytes, groupId: "g", logId: primaryLogId, limits: smallLimits });
  const random = new Random(seed);
  for (let index = 0; index < count; index++) {
    const sectors = 1 + random.below(16);
    const offset = random.below(volumeSize / 512 - sectors + 1) * 512;
    const length = sectors * 512;
    const roll = random.below(20);
    if (roll === 0) log.append({ kind: RecordKind.zero, flags: random.below(2) === 0 ? RecordFlag.keepAllocated : 0, volumeId, offset, length });
    else if (roll === 1) log.append({ kind: RecordKind.trim, flags: 0, volumeId, offset, length });
    else if (roll === 2) log.append({ kind: RecordKind.operationFirst + 1, flags: 0, volumeId: 0, offset: 0, length: 0, payload: Buffer.from(`{"op":${index}}`) });
    else if (roll === 3) log.append({ kind: RecordKind.write, flags: 0, volumeId: volumeId + 1, offset, length, payload: Buffer.alloc(length, 0xee) });
    else log.append({ kind: RecordKind.write, flags: random.below(8) === 0 ? RecordFlag.fua : 0, volumeId, offset, length, payload: random.fill(Buffer.alloc(length)) });
  }
  await log.sync();
  const records = await readAll(log, 1n);
  const images = [Buffer.alloc(volumeSize)];
  for (const record of records) {
    const image = Buffer.from(images.at(-1)!);
    applyToImage(image, record);
    images.push(image);
  }
  return { log, records, images };
}

export function digest(image: Buffer): string {
  return createHash("sha256").update(image).digest("hex");
}

export function resyncAccept(resumeLsn: bigint, previousChecksum: number, overrides: Partial<Accept> = {}): Accept {
  return { kind: "accept", protocolVersion: 1, start: "resync", resumeLsn, previousChecksum, logId: primaryLogId, intervals: false, ...overrides };
}

export function logAccept(resumeLsn: bigint, previousChecksum: number, overrides: Partial<Accept> = {}): Accept {
  return { kind: "accept", protocolVersion: 1, start: "log", resumeLsn, previousChecksum, logId: primaryLogId, intervals: false, ...overrides };
}

// The disks of one replica: they outlive a replica process (a crash, a restart).
export class ReplicaDisks {
  readonly log = new SimDisk("replica-log", logSizeMin);
  readonly volume = new SimDisk("replica-volume", volumeSize);
  readonly tables: VolumeTable[] = [];
  private fences: FencedFile[] = [];

  private constructor(readonly directory: string) {}

  static async make(): Promise<ReplicaDisks> {
    return new ReplicaDisks(await mkdtemp(join(tmpdir(), "lockstep-replica-")));
  }

  // Opens the replica (fresh: a new log), adds its volume and redoes its log. Not started.
  async open(fresh: boolean, options: { memoryBytesMax?: number } = {}): Promise<{ replica: Replica; volume: Volume; replayed: number }> {
    const logFile = new FencedFile(this.log);
    const volumeFile = new FencedFile(this.volume);
    this.fences.push(logFile, volumeFile);
    const host: ReplicaHost = { applyVolumeTable: async (_group, table) => void this.tables.push(table), beforeResync: async () => undefined, afterResync: async () => undefined, protectedReader: () => null, performOperation: async () => undefined, syncSnapshots: async () => undefined, snapshotImage: () => null,
      twinList: () => [], applyTwinCatalog: async () => ({ built: [], kept: [], deleted: [], retained: [] }), writeTwin: async () => undefined, rebaseSnapshots: async () => undefined };
    const replica = await Replica.open("g", logFile, fresh, { logger: silentLogger, host, statePath: join(this.directory, "replica.json"), logSizeBytes: logSizeMin, ...options });
    const volume = new Volume(volumeId, "disk0", volumeFile, volumeSize, () => 0);
    replica.addVolume(volume);
    const { replayedRecords } = await replica.recover();
    return { replica, volume, replayed: replayedRecords };
  }

  // A power cut: the running replica can no longer touch the disks, which lose what was not synced.
  // Returns how many unsynced sectors were lost.
  crash(random: Random): number {
    for (const fence of this.fences.splice(0)) fence.fence();
    return this.log.crash(random) + this.volume.crash(random);
  }

  async remove(): Promise<void> {
    await rm(this.directory, { recursive: true, force: true });
  }
}

export async function volumeImage(volume: Volume): Promise<Buffer> {
  const image = Buffer.alloc(volume.size);
  await volume.read(image, 0);
  return image;
}

// Holds or fails a simulated disk's syncs, for tests of what waits on them: while `hold` is
// set a sync waits for release(); while `failWith` is set it throws that. `entered` counts the
// syncs held or failed; remove() gives the disk its own datasync back.
export class SyncGate {
  hold = false;
  failWith: Error | null = null;
  entered = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly datasync: () => Promise<void>;

  constructor(private readonly disk: SimDisk) {
    this.datasync = disk.datasync.bind(disk);
    disk.datasync = async () => {
      if (this.hold || this.failWith !== null) {
        this.entered += 1;
        if (this.failWith !== null) throw this.failWith;
        await new Promise<void>((resolve) => this.waiting.push(resolve));
      }
      await this.datasync();
    };
  }

  release(): void {
    this.hold = false;
    for (const wake of this.waiting.splice(0)) wake();
  }

  remove(): void {
    this.disk.datasync = this.datasync;
  }
}
