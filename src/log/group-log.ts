// The group log: a durable, checksummed, write-ordered circular log of one consistency group.
// Every write to any volume of the group (and every storage-management operation) gets the
// next LSN here; it is the primary's write-ahead log and the source of the replication stream.
// It knows nothing about volumes. Layout: docs/FORMAT.md.
//
//   append() ──▶ queue ──(writer loop: one writev per batch)──▶ file ──(one datasync)──▶ durable
//      │ LSN, room reserved                 │ written(lsn)                 │ durable(lsn), sync()
//      └ LOG_FULL / OVERLOADED              └ cursor() reads from here     └ tail persisted here
//
// Group commit: a single writer loop takes queued records up to logBatchBytesMax /
// logBatchRecordsMax, writes them with one file.write(), and when a caller waits for
// durability of a written record, runs one datasync for everything written so far. Whoever
// asks while that datasync runs waits for the next one. Nobody waiting, no datasync.
//
// Space: room is reserved at append(), so queued records can never overfill the log. release()
// frees whole segments (log-space.ts), but freed bytes become reusable only once a superblock
// whose tail lies past them is durable: a crash then recovers from a tail whose records were
// not overwritten. The tail is persisted lazily (the rule, in superblockDue()): at every
// checkpoint() and close(); at the next writer round when the freed-but-unpersisted bytes
// reach logTailPersistFraction of the log; and at once when an append found no room or a
// caller waits for room while freed bytes are pending. The persisted tail never passes
// durableLsn, so after a crash every record from the tail on was durable.
//
// Failures: an error from write or datasync puts the log in the failed state: every waiter is
// rejected with the typed error, appends throw DISK_IO, nothing is retried (after a failed
// fsync the page cache cannot be trusted to still hold the data). A non-OperatingError is a
// bug: waiters are rejected and the error is rethrown to end the process.

import { randomBytes } from "node:crypto";
import { assert } from "../assert.js";
import { logBatchBytesMax, logBatchRecordsMax, logSizeMax, logSizeMin, logStallMsMax, sectorSize } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { BlockFile } from "../io/block-file.js";
import { logBatchCopyBytesMax, logQueueBytesMax, logWriteDelayBytesMax, logWritebackBytes, logReadChunkBytes, logGroupIdBytesMax, logSegmentBytesMin, logSegmentsMax, logStagingBytes, logTailPersistFraction } from "./limits.js";
import { LogCursor, type CursorSource } from "./log-cursor.js";
import { type LogRecovery, recoverLog } from "./log-recovery.js";
import { LogSpace, type PersistToken } from "./log-space.js";
import { LsnWaiters } from "./lsn-waiters.js";
import { plantedBug } from "../planted-bugs.js";
import { type LogRecord, RecordKind, recordDiskSize, recordHeaderEncode, recordHeaderSize } from "./record.js";
import type { ScanLayout } from "./record-scanner.js";
import { logDataStart, type Superblock, superblockRead, superblockWrite, superblockEncode } from "./superblock.js";

export type { LogRecovery } from "./log-recovery.js";
export type { LogCursor } from "./log-cursor.js";

export interface LogEntry {
  readonly kind: number; // RecordKind.write/zero/trim, or an operation kind ≥ 0x100
  readonly flags: number; // RecordFlag bits
  readonly volumeId: number;
  readonly offset: number;
  readonly length: number;
  readonly payload?: Buffer; // not copied: unchanged until written(lsn) resolves
  readonly timestampMs?: number; // default: the log's clock
}

// Time as the log sees it (injected so simulations control it).
export interface LogClock {
  nowMs(): number;
  setTimeout(callback: () => void, ms: number): () => void; // returns a cancel function
}

export interface GroupLogLimits {
  readonly sizeMin: number;
  readonly batchBytesMax: number;
  readonly batchRecordsMax: number;
  readonly batchCopyBytesMax: number;
  readonly queueBytesMax: number;
  readonly readChunkBytes: number;
  readonly segmentsMax: number;
  readonly segmentBytesMin: number;
  readonly tailPersistFraction: number;
}

export const groupLogLimitsDefault: GroupLogLimits = {
  sizeMin: logSizeMin,
  batchBytesMax: logBatchBytesMax,
  batchRecordsMax: logBatchRecordsMax,
  batchCopyBytesMax: logBatchCopyBytesMax,
  queueBytesMax: logQueueBytesMax,
  readChunkBytes: logReadChunkBytes,
  segmentsMax: logSegmentsMax,
  segmentBytesMin: logSegmentBytesMin,
  tailPersistFraction: logTailPersistFraction,
};

export interface GroupLogOptions {
  readonly clock?: LogClock;
  // Smaller limits for tests (a tiny log that wraps often, small batches). Production uses the defaults.
  readonly limits?: Partial<GroupLogLimits>;
}

export interface GroupLogCreateOptions extends GroupLogOptions {
  readonly sizeBytes: number; // the log's bytes in the file: two superblock slots + data area
  readonly groupId: string;
  readonly generation?: bigint;
  readonly logId?: bigint; // default: random; records of any other log are never taken for ours
  // A replica's copy of a primary's log starts where the stream it receives starts: the first
  // record gets startLsn and chains to startPreviousChecksum (the primary's record before it).
  readonly startLsn?: bigint; // default 1
  readonly startPreviousChecksum?: number; // default 0
}

export interface GroupLogOpenOptions extends GroupLogOptions {
  readonly groupId?: string; // when given, the log must belong to this group
  // Open even if records the superblock says were durable are missing (operator's decision).
  readonly acceptLoss?: boolean;
}

export interface LogUsage {
  readonly sizeBytes: number;
  readonly dataBytes: number; // the circular data area; usedBytes + freeBytes
  readonly usedBytes: number;
  readonly freeBytes: number;
  readonly releasedBytesPending: number; // released, reusable after the next superblock
  readonly queuedBytes: number;
  readonly tailLsn: bigint; // the oldest LSN not released
  readonly headLsn: bigint; // the last LSN appended
  readonly writtenLsn: bigint;
  readonly durableLsn: bigint;
  readonly batches: number;
  readonly syncs: number;
  readonly superblockWrites: number;
}

// A record as appended, with its encoded header: what a link ships from memory.
export type ShippedRecord = LogRecord & { readonly header: Buffer };

const emptyPayload = Buffer.alloc(0);

// Calls fn every ms on the clock until the returned function is called.
export function clockRepeat(clock: LogClock, ms: number, fn: () => void): () => void {
  let cancel = () => {};
  let stopped = false;
  const schedule = () => {
    cancel = clock.setTimeout(() => {
      if (stopped) return;
      schedule();
      fn();
    }, ms);
  };
  schedule();
  return () => {
    stopped = true;
    cancel();
  };
}

export const systemClock: LogClock = {
  nowMs: () => Date.now(),
  setTimeout: (callback, ms) => {
    const timer = setTimeout(callback, ms);
    return () => clearTimeout(timer);
  },
};

// One write of the queue: a record (header, payload, padding) or a wrap marker (a header
// sector, no payload).
interface QueuedWrite {
  readonly lsn: bigint; // a wrap marker carries the LSN of the record after it
  readonly isRecord: boolean;
  readonly position: number;
  readonly diskBytes: number;
  readonly header: Buffer;
  readonly payload: Buffer | null;
}

interface Batch {
  readonly position: number;
  readonly buffers: Buffer[];
  readonly bytes: number;
  readonly lastLsn: bigint | null; // the last record's LSN; null for a lone wrap marker
}

interface Deferred {
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

interface RoomWaiter extends Deferred {
  readonly diskBytes: number;
  cancel: () => void;
}

interface PersistRound {
  readonly token: PersistToken;
  readonly releasedLsn: bigint;
  readonly checkpoints: Deferred[];
}

const zeroSector = Buffer.alloc(sectorSize); // padding source; never written to

// Batches are written as whole pages of this size (pageAlign): a write that covers part of a
// page the page cache does not hold makes the file system read that page from disk first, and
// the page past the head always holds an earlier lap of the log. Once a log had wrapped and its
// pages had left the cache, every batch waited for such a read, and a node that had run for a
// while wrote several times slower than a fresh one. Whole pages are also what a log file
// opened with bypassCache (as nodes open theirs) can write around the page cache.
const logPageBytes = 4096;
const zeroPage = Buffer.alloc(logPageBytes); // padding source; never written to
assert(logDataStart % logPageBytes === 0, "the data area starts on a page");

// Copies the last `count` bytes of the concatenation of `buffers` into target[0, count).
function copyTail(buffers: readonly Buffer[], count: number, target: Buffer): void {
  let remaining = count;
  for (let index = buffers.length - 1; index >= 0 && remaining > 0; index--) {
    const buffer = buffers[index]!;
    const take = Math.min(remaining, buffer.length);
    buffer.copy(target, remaining - take, buffer.length - take);
    remaining -= take;
  }
  assert(remaining === 0, "a batch holds the bytes of its last page");
}

type LogState = "open" | "closing" | "closed" | "failed";

interface LogInit {
  readonly file: BlockFile;
  readonly superblock: Superblock;
  readonly space: LogSpace;
  readonly headLsn: bigint;
  readonly headChecksum: number;
  readonly releasedLsn: bigint;
  readonly limits: GroupLogLimits;
  readonly clock: LogClock;
  readonly recovery: LogRecovery | null;
}

// A log file gets all its blocks when it is made, where the file system can allocate ahead:
// a sparse log would find the disk full at some later write, and a failed log write fails
// the group. So a disk without the room refuses the log now (DISK_FULL), not in service.
// A file system that cannot allocate ahead gets the sparse file as before.
async function reserveLogSpace(file: BlockFile, fileSize: number, sizeBytes: number): Promise<void> {
  if (file.reserve !== undefined) {
    try {
      await file.reserve(sizeBytes);
      return;
    } catch (error) {
      if (!(error instanceof OperatingError) || error.code !== "NOT_SUPPORTED") throw error;
    }
  }
  if (fileSize < sizeBytes) await file.truncate(sizeBytes);
}

export class GroupLog {
  private bytesSinceWriteback = 0;
  private staging: Buffer | null = null; // reused by every batch that fits (logStagingBytes)
  private writeDelayMs = 0; // delayWrites()
  private delayCancel: (() => void) | null = null; // the delayed writer's timer
  private hurried = false;
  // The bytes of the head's page before the head, as the last batch wrote them (pageAlign);
  // two buffers, so the one a batch reads from is not the one it saves into.
  private frontier = Buffer.alloc(logPageBytes);
  private frontierSpare = Buffer.alloc(logPageBytes);
  private frontierEnd = -1; // the end of the last batch written: where `frontier` applies
  private shipCacheHeldFrom: bigint | null = null; // see shipCacheHold
  readonly file: BlockFile;
  readonly groupId: string;
  readonly logId: bigint;
  readonly sizeBytes: number;
  readonly recovery: LogRecovery | null; // null for a log made by create()
  private readonly layout: ScanLayout;
  private readonly limits: GroupLogLimits;
  readonly clock: LogClock;
  private readonly space: LogSpace;
  private readonly persistThresholdBytes: number;
  private readonly cursorSource: CursorSource;
  private generationValue: bigint;
  private superblockSequence: bigint;

  private nextLsn: bigint;
  private chain: number; // checksum of record nextLsn - 1
  private writtenLsnValue: bigint;
  private durableLsnValue: bigint;
  private releasedLsn: bigint;

  private readonly queue: QueuedWrite[] = [];
  private queueStart = 0;
  private queuedBytes = 0;
  private readonly writtenWaiters = new LsnWaiters();
  private readonly durableWaiters = new LsnWaiters();
  private roomWaiters: RoomWaiter[] = [];
  private checkpointRequests: Deferred[] = [];
  private checkpointsInFlight: Deferred[] = []; // taken by the superblock being written: fail() rejects them too
  private appendWaiters: { lsn: bigint; resolve: () => void }[] = [];
  // The newest records as appended (fields, header, payload reference), for replication links
  // to ship without reading them back; off (0) unless a link asks for it. Bounded in bytes.
  private shipCacheBytesMax = 0;
  private readonly shipCache: ShippedRecord[] = [];
  private shipCacheStart = 0;
  private shipCacheBytes = 0;
  private roomWanted = false; // an append found no room: persist a pending tail soon

  private state: LogState = "open";
  private failure: OperatingError | null = null;
  private running = false;
  private batches = 0;
  private syncs = 0;
  private superblockWrites = 0;

  private constructor(init: LogInit) {
    const { superblock } = init;
    this.file = init.file;
    this.groupId = superblock.groupId;
    this.logId = superblock.logId;
    this.sizeBytes = superblock.sizeBytes;
    this.recovery = init.recovery;
    this.layout = { dataStart: superblock.dataStart, dataEnd: superblock.sizeBytes, logId: superblock.logId };
    this.limits = init.limits;
    this.clock = init.clock;
    this.space = init.space;
    this.persistThresholdBytes = Math.max(init.space.segmentBytes, Math.floor(init.space.capacity * init.limits.tailPersistFraction));
    this.generationValue = superblock.generation;
    this.superblockSequence = superblock.sequence;
    this.nextLsn = init.headLsn + 1n;
    this.chain = init.headChecksum;
    this.writtenLsnValue = init.headLsn;
    this.durableLsnValue = init.headLsn;
    this.releasedLsn = init.releasedLsn;
    this.space.free(this.freeThrough());
    this.cursorSource = {
      file: this.file,
      layout: this.layout,
      readChunkBytes: this.limits.readChunkBytes,
      writtenLsn: () => this.writtenLsnValue,
      diskTailLsn: () => this.space.diskTail()?.lsn ?? this.nextLsn,
    };
  }

  // ---- Life cycle ----

  // Makes a new, empty log in `file` (grown to sizeBytes if it is a smaller regular file).
  // Whatever the file held before is ignored from now on.
  static async create(file: BlockFile, options: GroupLogCreateOptions): Promise<GroupLog> {
    const limits = { ...groupLogLimitsDefault, ...options.limits };
    checkCreateOptions(options, limits);
    const startLsn = options.startLsn ?? 1n;
    const startPreviousChecksum = options.startPreviousChecksum ?? 0;
    assert(startLsn >= 1n && (startLsn > 1n || startPreviousChecksum === 0), "log start: LSN 1 chains to nothing");
    const fileSize = await file.size();
    if (file.isBlockDevice) {
      if (fileSize < options.sizeBytes) throw new OperatingError("CONFIG_INVALID", { what: "log size", sizeBytes: options.sizeBytes, deviceBytes: fileSize });
    } else {
      await reserveLogSpace(file, fileSize, options.sizeBytes);
    }
    const base: Superblock = {
      sequence: 0n,
      logId: options.logId ?? randomBytes(8).readBigUInt64LE(0),
      groupId: options.groupId,
      sizeBytes: options.sizeBytes,
      dataStart: logDataStart,
      generation: options.generation ?? 1n,
      tailLsn: startLsn,
      tailPosition: logDataStart,
      tailPreviousChecksum: startPreviousChecksum,
      releasedLsn: startLsn - 1n,
      durableLsn: startLsn - 1n,
      timestampMs: (options.clock ?? systemClock).nowMs(),
    };
    // Both slots, so no superblock of an earlier log in this file can outrank ours.
    const second = { ...base, sequence: 1n };
    await file.write([superblockEncode(base), superblockEncode(second)], 0);
    await file.datasync();
    const space = new LogSpace(logDataStart, options.sizeBytes, segmentBytesFor(options.sizeBytes - logDataStart, limits), logDataStart);
    return new GroupLog({
      file,
      superblock: second,
      space,
      headLsn: startLsn - 1n,
      headChecksum: startPreviousChecksum,
      releasedLsn: startLsn - 1n,
      limits,
      clock: options.clock ?? systemClock,
      recovery: null,
    });
  }

  // Opens an existing log and runs the recovery scan (see log-recovery.ts); `recovery` says
  // what it found. Everything recovered is made durable before open() returns.
  static async open(file: BlockFile, options: GroupLogOpenOptions = {}): Promise<GroupLog> {
    const limits = { ...groupLogLimitsDefault, ...options.limits };
    const choice = await superblockRead(file);
    const superblock = choice.superblock;
    if (options.groupId !== undefined && options.groupId !== superblock.groupId) {
      throw new OperatingError("CONFIG_INVALID", { what: "log group", expected: options.groupId, found: superblock.groupId });
    }
    const fileSize = await file.size();
    if (fileSize < superblock.sizeBytes) {
      throw new OperatingError("LOG_CORRUPT", { reason: "size", what: "log file shorter than its superblock says", fileSize, sizeBytes: superblock.sizeBytes });
    }
    const recovered = await recoverLog({
      file,
      layout: { dataStart: superblock.dataStart, dataEnd: superblock.sizeBytes, logId: superblock.logId },
      superblock,
      superblockFallback: choice.otherSlotError !== null,
      segmentBytes: segmentBytesFor(superblock.sizeBytes - superblock.dataStart, limits),
      readChunkBytes: limits.readChunkBytes,
      acceptLoss: options.acceptLoss ?? false,
    });
    // What the scan read may sit only in the page cache (the process died, the host did not).
    await file.datasync();
    return new GroupLog({
      file,
      superblock,
      space: recovered.space,
      headLsn: recovered.headLsn,
      headChecksum: recovered.headChecksum,
      releasedLsn: recovered.releasedLsn,
      limits,
      clock: options.clock ?? systemClock,
      recovery: recovered.report,
    });
  }

  // Writes everything queued, makes it durable, persists the tail. The file stays open (the
  // caller owns it). Appends are refused from the moment close() is called.
  async close(): Promise<void> {
    if (this.state === "closed") return;
    if (this.state === "failed") throw this.failedError();
    this.state = "closing";
    await this.sync();
    await this.checkpoint();
    this.state = "closed";
    this.appendNotify();
    this.rejectRoomWaiters(new OperatingError("SHUTTING_DOWN", { what: "group log closed" }));
  }

  get generation(): bigint {
    return this.generationValue;
  }

  // ---- Appending ----

  // Assigns the next LSN to a record and queues it; returns the LSN. Synchronous. Throws
  // LOG_FULL when the log has no room for it, OVERLOADED when too many bytes wait to be
  // written (use hasRoom()/waitForRoom() first), DISK_IO after a failure, SHUTTING_DOWN after close().
  append(entry: LogEntry): bigint {
    this.checkAppendable();
    const payloadSize = entry.payload?.length ?? 0;
    const diskBytes = recordDiskSize(payloadSize);
    if (!this.queueFits(diskBytes)) {
      throw new OperatingError("OVERLOADED", { what: "log queue", queuedBytes: this.queuedBytes, recordBytes: diskBytes });
    }
    if (!this.space.fits(diskBytes)) {
      this.wantRoom();
      throw new OperatingError("LOG_FULL", { recordBytes: diskBytes, freeBytes: this.space.freeBytes, tailLsn: this.releasedLsn + 1n });
    }
    const lsn = this.nextLsn;
    const timestampMs = entry.timestampMs ?? this.clock.nowMs();
    const { header, checksum } = recordHeaderEncode(
      {
        kind: entry.kind,
        flags: entry.flags,
        volumeId: entry.volumeId,
        offset: entry.offset,
        length: entry.length,
        lsn,
        generation: this.generationValue,
        logId: this.logId,
        timestampMs,
        previousChecksum: this.chain,
      },
      entry.payload,
    );
    const placement = this.space.reserve(lsn, diskBytes, this.chain);
    if (placement.wrapPosition !== null) this.enqueue(this.wrapMarker(lsn, placement.wrapPosition));
    this.enqueue({ lsn, isRecord: true, position: placement.position, diskBytes, header, payload: entry.payload ?? null });
    if (this.shipCacheBytesMax > 0) {
      this.shipCacheAdd({
        kind: entry.kind, flags: entry.flags, volumeId: entry.volumeId, offset: entry.offset, length: entry.length, lsn,
        generation: this.generationValue, logId: this.logId, timestampMs,
        previousChecksum: this.chain, checksum, payloadSize, payload: entry.payload ?? emptyPayload, header,
      });
    }
    this.chain = checksum;
    this.nextLsn = lsn + 1n;
    this.kick();
    if (this.appendWaiters.length > 0) this.appendNotify();
    return lsn;
  }

  // Appends a record of this log as another node wrote it (a replica's copy of its primary's
  // log): the same LSN, fields and checksum, so the chain travels end to end. The record must
  // be the next one (LSN, chain, logId): the receiver checked that before acknowledging anything.
  appendReceived(record: LogRecord & { readonly header?: Buffer }): bigint {
    this.checkAppendable();
    assert(record.lsn === this.nextLsn && record.previousChecksum === this.chain && record.logId === this.logId, () => `appendReceived: record ${record.lsn} is not the next of this log`);
    const diskBytes = recordDiskSize(record.payloadSize);
    if (!this.queueFits(diskBytes)) throw new OperatingError("OVERLOADED", { what: "log queue", queuedBytes: this.queuedBytes, recordBytes: diskBytes });
    if (!this.space.fits(diskBytes)) {
      this.wantRoom();
      throw new OperatingError("LOG_FULL", { recordBytes: diskBytes, freeBytes: this.space.freeBytes, tailLsn: this.releasedLsn + 1n });
    }
    // The decoder verified record.checksum over these fields and payload: not computed again;
    // the header bytes it checked (a record off the wire) are written as they are.
    assert(record.header === undefined || record.header.length === recordHeaderSize, "a received record's header is whole");
    const { header, checksum } = record.header !== undefined ? { header: record.header, checksum: record.checksum } : recordHeaderEncode(record, record.payloadSize > 0 ? record.payload : undefined, undefined, record.checksum);
    const placement = this.space.reserve(record.lsn, diskBytes, this.chain);
    if (placement.wrapPosition !== null) this.enqueue(this.wrapMarker(record.lsn, placement.wrapPosition));
    this.enqueue({ lsn: record.lsn, isRecord: true, position: placement.position, diskBytes, header, payload: record.payloadSize > 0 ? record.payload : null });
    this.chain = checksum;
    this.nextLsn = record.lsn + 1n;
    this.kick();
    if (this.appendWaiters.length > 0) this.appendNotify();
    return record.lsn;
  }

  // Keeps the newest appended records in memory, up to bytesMax of payload (0: off).
  shipCacheUse(bytesMax: number): void {
    this.shipCacheBytesMax = bytesMax;
    if (bytesMax === 0) {
      this.shipCache.length = 0;
      this.shipCacheStart = 0;
      this.shipCacheBytes = 0;
    }
  }

  // Another reader of the cache (the simulator's model) still needs the records from fromLsn
  // on: shipCacheRelease keeps them (the byte bound still applies). null: no such reader.
  shipCacheHold(fromLsn: bigint | null): void {
    this.shipCacheHeldFrom = fromLsn;
  }

  // Record lsn as appended, if the ship cache still holds it.
  recent(lsn: bigint): ShippedRecord | undefined {
    const first = this.shipCache[this.shipCacheStart];
    if (first === undefined || lsn < first.lsn) return undefined;
    return this.shipCache[this.shipCacheStart + Number(lsn - first.lsn)];
  }

  // Records through lsn have been shipped by every link that streams: the cache lets them go.
  // Kept for seconds instead of milliseconds, a write's payload and record outlive V8's young
  // generation and are freed only by full collections, which then run several times a second.
  shipCacheRelease(lsn: bigint): void {
    const through = this.shipCacheHeldFrom !== null && this.shipCacheHeldFrom <= lsn ? this.shipCacheHeldFrom - 1n : lsn;
    while (this.shipCacheStart < this.shipCache.length && this.shipCache[this.shipCacheStart]!.lsn <= through) this.shipCacheDropFirst();
    this.shipCacheCompact();
  }

  private shipCacheAdd(record: ShippedRecord): void {
    this.shipCache.push(record);
    this.shipCacheBytes += record.payloadSize + record.header.length;
    while (this.shipCacheBytes > this.shipCacheBytesMax && this.shipCacheStart < this.shipCache.length) this.shipCacheDropFirst();
    this.shipCacheCompact();
  }

  private shipCacheDropFirst(): void {
    const dropped = this.shipCache[this.shipCacheStart]!;
    this.shipCacheBytes -= dropped.payloadSize + dropped.header.length;
    this.shipCacheStart += 1;
  }

  private shipCacheCompact(): void {
    if (this.shipCacheStart === this.shipCache.length) {
      this.shipCache.length = 0;
      this.shipCacheStart = 0;
    } else if (this.shipCacheStart > 4096 && this.shipCacheStart * 2 > this.shipCache.length) {
      this.shipCache.splice(0, this.shipCacheStart);
      this.shipCacheStart = 0;
    }
  }

  // The checksum of the last record appended (0 before the first): what the next record's
  // `previous` must be.
  get headChecksum(): number {
    return this.chain;
  }

  // The checksum of record lsn − 1, as record lsn chains to it: where a stream starting at lsn
  // begins. lsn may be headLsn + 1 (the next record); null when record lsn is not in the log.
  async previousChecksumOf(lsn: bigint): Promise<number | null> {
    if (lsn === this.nextLsn) return this.chain;
    if (lsn < 1n || lsn > this.nextLsn || lsn < this.cursorSource.diskTailLsn()) return null;
    await this.written(lsn);
    try {
      const record = await this.cursor(lsn).next();
      return record !== null && record.lsn === lsn ? record.previousChecksum : null;
    } catch (error) {
      if (error instanceof OperatingError && error.code === "OUT_OF_RANGE") return null; // released meanwhile
      throw error;
    }
  }

  get headLsn(): bigint {
    return this.nextLsn - 1n;
  }

  // Resolves once a record after `lsn` has been appended (a reader waiting for new records).
  appended(lsn: bigint): Promise<void> {
    if (this.nextLsn - 1n > lsn) return Promise.resolve();
    if (this.state !== "open") return Promise.reject(this.state === "failed" ? this.failedError() : shuttingDown());
    return new Promise((resolve) => this.appendWaiters.push({ lsn, resolve }));
  }

  // Whether a record with a payload of payloadBytes could be appended now.
  hasRoom(payloadBytes: number): boolean {
    const diskBytes = recordDiskSize(payloadBytes);
    return this.state === "open" && this.queueFits(diskBytes) && this.space.fits(diskBytes);
  }

  // Resolves once hasRoom(payloadBytes) (waiters are served in order); rejects LOG_FULL after
  // msMax. Room is not reserved: append right away (synchronously) when it resolves.
  waitForRoom(payloadBytes: number, msMax: number = logStallMsMax): Promise<void> {
    if (this.state !== "open") return Promise.reject(this.state === "failed" ? this.failedError() : shuttingDown());
    const diskBytes = recordDiskSize(payloadBytes);
    if (diskBytes > this.space.capacity) {
      return Promise.reject(new OperatingError("LOG_FULL", { recordBytes: diskBytes, dataBytes: this.space.capacity }));
    }
    if (this.roomWaiters.length === 0 && this.hasRoom(payloadBytes)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const startedMs = this.clock.nowMs();
      const waiter: RoomWaiter = { diskBytes, resolve, reject, cancel: () => {} };
      waiter.cancel = this.clock.setTimeout(() => {
        this.roomWaiters = this.roomWaiters.filter((other) => other !== waiter);
        reject(new OperatingError("LOG_FULL", { recordBytes: diskBytes, freeBytes: this.space.freeBytes, waitedMs: this.clock.nowMs() - startedMs }));
        this.roomNotify(); // the next waiter may fit
      }, msMax);
      this.roomWaiters.push(waiter);
      this.kick();
    });
  }

  // ---- Progress ----

  // Resolves once record lsn has been handed to the OS (readable by cursors).
  written(lsn: bigint): Promise<void> {
    assert(lsn < this.nextLsn, "written() of an LSN not appended");
    if (lsn <= this.writtenLsnValue) return Promise.resolve();
    if (this.state === "failed") return Promise.reject(this.failedError());
    return this.writtenWaiters.add(lsn);
  }

  // Resolves once record lsn is durable (datasync'd).
  durable(lsn: bigint): Promise<void> {
    assert(lsn < this.nextLsn, "durable() of an LSN not appended");
    if (lsn <= this.durableLsnValue) return Promise.resolve();
    if (this.state === "failed") return Promise.reject(this.failedError());
    const promise = this.durableWaiters.add(lsn);
    this.kick();
    return promise;
  }

  // Makes every record appended so far durable; returns the last LSN appended.
  async sync(): Promise<bigint> {
    const lsn = this.nextLsn - 1n;
    await this.durable(lsn);
    return lsn;
  }

  // Records ≤ lsn are no longer needed. Their space is reused once the tail is persisted
  // (see the rule at the top); the persisted tail never passes durableLsn. Releasing records
  // not yet durable is allowed, but a crash may still lose them, and then recovery gives
  // their LSNs to new records.
  release(lsn: bigint): void {
    assert(lsn < this.nextLsn, "release() of an LSN not appended");
    if (lsn <= this.releasedLsn) return;
    this.releasedLsn = lsn;
    this.space.free(this.freeThrough());
    this.kick();
  }

  // Persists the tail and the durable LSN in a superblock now (write + datasync).
  checkpoint(): Promise<void> {
    if (this.state === "failed") return Promise.reject(this.failedError());
    if (this.state === "closed") return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.checkpointRequests.push({ resolve, reject });
      this.kick();
    });
  }

  // Reads written records from disk in LSN order from fromLsn (from the oldest record still on
  // disk up to headLsn + 1). OUT_OF_RANGE when fromLsn is no longer (or not yet) in the log.
  cursor(fromLsn: bigint): LogCursor {
    const diskTailLsn = this.cursorSource.diskTailLsn();
    if (fromLsn < diskTailLsn || fromLsn < 1n || fromLsn > this.nextLsn) {
      throw new OperatingError("OUT_OF_RANGE", { what: "log cursor", lsn: fromLsn, tailLsn: diskTailLsn, headLsn: this.nextLsn - 1n });
    }
    const segment = this.space.find(fromLsn);
    const start =
      segment !== null
        ? { lsn: segment.firstLsn, position: segment.firstPosition, previousChecksum: segment.previousChecksum }
        : { lsn: this.nextLsn, position: this.space.headPosition, previousChecksum: this.chain };
    return new LogCursor(this.cursorSource, fromLsn, start);
  }

  // "open", or "failed" after a write or sync error (every change then fails until a restart
  // recovers the log), with the error that failed it; for status.
  get health(): { state: string; failure: { code: string; message: string } | null } {
    return { state: this.state, failure: this.failure === null ? null : { code: this.failure.code, message: this.failure.message } };
  }

  // Cheap reads for the write path (usage() builds a whole report).
  get durableLsn(): bigint {
    return this.durableLsnValue;
  }

  // Share of the data area holding records not yet released, 0..1.
  get fill(): number {
    return this.space.usedBytes / this.space.capacity;
  }

  usage(): LogUsage {
    return {
      sizeBytes: this.sizeBytes,
      dataBytes: this.space.capacity,
      usedBytes: this.space.usedBytes,
      freeBytes: this.space.freeBytes,
      releasedBytesPending: this.space.freedBytes,
      queuedBytes: this.queuedBytes,
      tailLsn: this.releasedLsn + 1n,
      headLsn: this.nextLsn - 1n,
      writtenLsn: this.writtenLsnValue,
      durableLsn: this.durableLsnValue,
      batches: this.batches,
      syncs: this.syncs,
      superblockWrites: this.superblockWrites,
    };
  }

  // ---- The writer loop ----

  // Wakes every reader waiting for a new record (each waited for one after an LSN below it),
  // and, at close or failure, every reader (it then finds the log's state).
  private appendNotify(): void {
    for (const waiter of this.appendWaiters.splice(0)) waiter.resolve();
  }

  // Lets the writer wait up to delayMs after an append (0: never), for a log whose
  // acknowledgements do not wait for it (see logWriteDelayMs).
  delayWrites(delayMs: number): void {
    this.writeDelayMs = delayMs;
    if (delayMs === 0) this.hurry();
  }

  // Writes what is queued now, not after the delay (a sync link ships only written records).
  hurry(): void {
    this.hurried = true;
    this.kick();
  }

  private kick(): void {
    if (this.running || this.state === "failed" || this.state === "closed" || !this.hasWork()) return;
    if (this.writeDelayMs > 0 && !this.writeDue()) {
      this.delayCancel ??= this.clock.setTimeout(() => {
        this.delayCancel = null;
        this.hurry();
      }, this.writeDelayMs);
      return;
    }
    this.delayCancel?.();
    this.delayCancel = null;
    this.hurried = false;
    this.running = true;
    // Start on a microtask: appends made in the same synchronous run share the first batch.
    queueMicrotask(() => void this.run());
  }

  // Whether a delayed writer must start now: someone waits on the log, or enough is queued.
  private writeDue(): boolean {
    return this.hurried || this.queuedBytes >= logWriteDelayBytesMax || this.durableWaiters.minLsn() !== null ||
      this.checkpointRequests.length > 0 || this.roomWaiters.length > 0 || this.superblockDue() || this.state === "closing";
  }

  private async run(): Promise<void> {
    try {
      let rounds = 0;
      while (this.state !== "failed" && this.hasWork()) {
        // Records that arrived during a delayed writer's round wait for the next delay too.
        if (rounds > 0 && this.writeDelayMs > 0 && !this.writeDue()) break;
        await this.round();
        rounds += 1;
      }
    } catch (error) {
      this.fail(error);
      if (!(error instanceof OperatingError)) throw error; // a bug: end the process
    } finally {
      this.running = false;
    }
    this.kick(); // what the loop left: its delay starts now
  }

  private hasWork(): boolean {
    return this.queueStart < this.queue.length || this.durabilityDue() || this.superblockDue();
  }

  // One round: write a batch, maybe write the superblock, datasync if anyone needs it.
  private async round(): Promise<void> {
    const batch = this.batchTake();
    if (batch !== null) await this.batchWrite(batch);
    const persist = this.superblockDue() ? await this.superblockWriteBegin() : null;
    if (persist !== null || this.durabilityDue()) await this.syncRun(persist);
  }

  private durabilityDue(): boolean {
    const lsn = this.durableWaiters.minLsn();
    return lsn !== null && lsn <= this.writtenLsnValue;
  }

  // The rule for persisting the tail lazily (see the top of the file).
  private superblockDue(): boolean {
    if (this.checkpointRequests.length > 0) return true;
    if (this.space.freedSegmentCount === 0) return false;
    return this.space.freedBytes >= this.persistThresholdBytes || this.roomWaiters.length > 0 || this.roomWanted;
  }

  // Takes the next batch off the queue: consecutive writes (a batch ends at a wrap), at most
  // batchBytesMax bytes (a larger record goes alone) and batchRecordsMax records.
  private batchTake(): Batch | null {
    if (this.queueStart === this.queue.length) return null;
    const taken: QueuedWrite[] = [];
    const position = this.queue[this.queueStart]!.position;
    let end = position;
    let bytes = 0;
    let records = 0;
    let lastLsn: bigint | null = null;
    while (this.queueStart < this.queue.length) {
      const item = this.queue[this.queueStart]!;
      if (bytes > 0) {
        if (item.position !== end || bytes + item.diskBytes > this.limits.batchBytesMax) break;
        if (item.isRecord && records >= this.limits.batchRecordsMax) break;
      }
      this.queueStart += 1;
      taken.push(item);
      bytes += item.diskBytes;
      end = item.position + item.diskBytes;
      if (item.isRecord) {
        records += 1;
        lastLsn = item.lsn;
      }
    }
    this.queueCompact();
    // (the staging buffer is free: round() takes a batch only after the last write returned)
    // A batch the file writes around the page cache is gathered there (into the pool thread's
    // aligned buffer) from the records' own buffers: copying it here first was a second pass
    // over every byte, on the event loop. Per record a header, payload and padding; the page's
    // head and tail (pageAlign) besides.
    const gathered = this.file.gathersWrite?.(bytes, taken.length * 3 + 2) ?? false;
    const buffers = batchBuffers(taken, gathered ? copyNone : this.limits.batchCopyBytesMax, (size) => this.stagingFor(size));
    return { position: this.pageAlign(position, end, buffers), buffers, bytes, lastLsn };
  }

  // Makes the batch [position, end) a write of whole pages where it can (see logPageBytes), by
  // putting in front the head page's bytes before `position` (which the last batch wrote, kept
  // in `frontier`) and zeroes after `end` up to the page's end, never past the oldest byte a
  // durable superblock may still need (the disk tail) nor the data area's end. Returns where
  // the write starts; `buffers` is changed in place. Saves the new head page's bytes.
  private pageAlign(position: number, end: number, buffers: Buffer[]): number {
    let start = position;
    const before = position % logPageBytes;
    if (before !== 0 && this.frontierEnd === position) {
      buffers.unshift(this.frontier.subarray(0, before));
      start = position - before;
    }
    const after = end % logPageBytes;
    if (after <= end - start) {
      const spare = this.frontierSpare;
      copyTail(buffers, after, spare); // [end - after, end): the prefix of the next batch
      this.frontierSpare = this.frontier;
      this.frontier = spare;
      this.frontierEnd = end;
    } else {
      this.frontierEnd = -1; // (a first batch from the middle of a page: the page is not known)
    }
    if (after !== 0) {
      const padEnd = Math.min(end - after + logPageBytes, this.padLimit(end));
      if (padEnd > end) buffers.push(zeroPage.subarray(0, padEnd - end));
    }
    return start;
  }

  // How far past `end` (a batch's end) the writer may put zeroes: up to the disk tail when it
  // lies ahead in this lap, else up to the end of the data area.
  private padLimit(end: number): number {
    const tail = this.space.diskTail();
    return tail !== null && tail.position >= end ? tail.position : this.layout.dataEnd;
  }

  private stagingFor(size: number): Buffer {
    if (size > logStagingBytes) return Buffer.allocUnsafe(size);
    this.staging ??= Buffer.allocUnsafeSlow(logStagingBytes);
    return this.staging;
  }

  // Drops taken entries (they hold payloads): at once when drained, else now and then.
  private queueCompact(): void {
    if (this.queueStart === this.queue.length) {
      this.queue.length = 0;
      this.queueStart = 0;
    } else if (this.queueStart > 1024 && this.queueStart * 2 > this.queue.length) {
      this.queue.splice(0, this.queueStart);
      this.queueStart = 0;
    }
  }

  private async batchWrite(batch: Batch): Promise<void> {
    const around = await this.file.write(batch.buffers, batch.position);
    this.batches += 1;
    // Keep dirty log pages few, so a datasync (group commit, superblock) has little to write
    // and never holds up the writer for long: start writeback every logWritebackBytes written
    // through the page cache (a batch that went around it left none).
    if (around !== true) this.bytesSinceWriteback += batch.bytes;
    if (this.bytesSinceWriteback >= logWritebackBytes) {
      this.bytesSinceWriteback = 0;
      this.file.startWriteback?.(0, this.sizeBytes);
    }
    this.queuedBytes -= batch.bytes;
    if (batch.lastLsn !== null) {
      this.writtenLsnValue = batch.lastLsn;
      this.writtenWaiters.resolveThrough(batch.lastLsn);
    }
    this.roomNotify();
  }

  private async superblockWriteBegin(): Promise<PersistRound> {
    const token = this.space.persistBegin();
    const releasedLsn = this.freeThrough();
    const tail = token.tail ?? { lsn: this.nextLsn, position: this.space.headPosition, previousChecksum: this.chain };
    const checkpoints = this.checkpointRequests;
    this.checkpointRequests = [];
    this.checkpointsInFlight = checkpoints;
    this.roomWanted = false;
    this.superblockSequence += 1n;
    await superblockWrite(this.file, {
      sequence: this.superblockSequence,
      logId: this.logId,
      groupId: this.groupId,
      sizeBytes: this.sizeBytes,
      dataStart: this.layout.dataStart,
      generation: this.generationValue,
      tailLsn: tail.lsn,
      tailPosition: tail.position,
      tailPreviousChecksum: tail.previousChecksum,
      releasedLsn,
      durableLsn: this.durableLsnValue, // only what an earlier datasync made durable
      timestampMs: this.clock.nowMs(),
    });
    this.superblockWrites += 1;
    return { token, releasedLsn, checkpoints };
  }

  private async syncRun(persist: PersistRound | null): Promise<void> {
    const target = this.writtenLsnValue;
    if (plantedBug("ack-before-fsync")) this.durableWaiters.resolveThrough(target);
    await this.file.datasync();
    this.syncs += 1;
    if (target > this.durableLsnValue) this.durableLsnValue = target;
    this.durableWaiters.resolveThrough(target);
    if (persist !== null) {
      this.space.persistDone(persist.token);
      for (const checkpoint of persist.checkpoints) checkpoint.resolve();
      this.checkpointsInFlight = [];
    }
    this.space.free(this.freeThrough());
    this.roomNotify();
  }

  // ---- Helpers ----

  private freeThrough(): bigint {
    return this.releasedLsn < this.durableLsnValue ? this.releasedLsn : this.durableLsnValue;
  }

  private wrapMarker(lsn: bigint, position: number): QueuedWrite {
    const marker = Buffer.alloc(sectorSize);
    recordHeaderEncode(
      {
        kind: RecordKind.wrap,
        flags: 0,
        volumeId: 0,
        offset: 0,
        length: 0,
        lsn,
        generation: this.generationValue,
        logId: this.logId,
        timestampMs: this.clock.nowMs(),
        previousChecksum: this.chain,
      },
      undefined,
      marker,
    );
    return { lsn, isRecord: false, position, diskBytes: sectorSize, header: marker, payload: null };
  }

  private enqueue(write: QueuedWrite): void {
    this.queue.push(write);
    this.queuedBytes += write.diskBytes;
  }

  private queueFits(diskBytes: number): boolean {
    return this.queuedBytes === 0 || this.queuedBytes + diskBytes <= this.limits.queueBytesMax;
  }

  private wantRoom(): void {
    if (this.space.freedSegmentCount === 0) return;
    this.roomWanted = true;
    this.kick();
  }

  private roomNotify(): void {
    while (this.roomWaiters.length > 0 && this.state === "open") {
      const waiter = this.roomWaiters[0]!;
      if (!this.queueFits(waiter.diskBytes) || !this.space.fits(waiter.diskBytes)) return;
      this.roomWaiters.shift();
      waiter.cancel();
      waiter.resolve();
    }
  }

  private rejectRoomWaiters(error: Error): void {
    const waiters = this.roomWaiters;
    this.roomWaiters = [];
    for (const waiter of waiters) {
      waiter.cancel();
      waiter.reject(error);
    }
  }

  // DISK_IO once the log has failed: from then on, changes logged before the failure may be
  // neither durable nor applied, and no exact point of the write order can be vouched for.
  checkHealthy(): void {
    if (this.state === "failed") throw this.failedError();
  }

  private checkAppendable(): void {
    this.checkHealthy();
    if (this.state !== "open") throw shuttingDown();
  }

  private failedError(): OperatingError {
    assert(this.failure !== null, "failed without a failure");
    return new OperatingError("DISK_IO", { what: "group log failed earlier", failure: this.failure.code }, { cause: this.failure });
  }

  private fail(error: unknown): void {
    this.failure =
      error instanceof OperatingError ? error : new OperatingError("INTERNAL", { what: "group log writer" }, { cause: error });
    this.state = "failed";
    const failure = this.failure;
    this.queue.length = 0;
    this.queueStart = 0;
    this.queuedBytes = 0;
    this.writtenWaiters.rejectAll(failure);
    this.durableWaiters.rejectAll(failure);
    this.appendNotify();
    const checkpoints = [...this.checkpointsInFlight, ...this.checkpointRequests];
    this.checkpointsInFlight = [];
    this.checkpointRequests = [];
    for (const checkpoint of checkpoints) checkpoint.reject(failure);
    this.rejectRoomWaiters(failure);
  }
}

const copyNone = -1; // batchBuffers' copyBytesMax that copies no record

// The buffers of one writev. Records with a payload up to copyBytesMax are copied, header,
// payload and padding, into one buffer per batch: a few large iovecs instead of three small
// ones per record (beyond IOV_MAX a writev is split into several system calls). Larger
// payloads are passed as they are, never copied. stagingFor(size) gives a buffer of at least
// size bytes to copy into.
function batchBuffers(writes: readonly QueuedWrite[], copyBytesMax: number, stagingFor: (size: number) => Buffer): Buffer[] {
  const copied = (write: QueuedWrite) => (write.payload?.length ?? 0) <= copyBytesMax;
  let copyBytes = 0;
  for (const write of writes) if (copied(write)) copyBytes += write.diskBytes;
  const staging = stagingFor(copyBytes);
  assert(staging.length >= copyBytes, "staging buffer too small");
  const buffers: Buffer[] = [];
  let used = 0;
  let pieceStart = 0;
  for (const write of writes) {
    const payloadSize = write.payload?.length ?? 0;
    const padding = write.diskBytes - write.header.length - payloadSize;
    if (copied(write)) {
      write.header.copy(staging, used);
      write.payload?.copy(staging, used + write.header.length);
      staging.fill(0, used + write.diskBytes - padding, used + write.diskBytes);
      used += write.diskBytes;
      continue;
    }
    if (used > pieceStart) buffers.push(staging.subarray(pieceStart, used));
    pieceStart = used;
    buffers.push(write.header);
    if (write.payload !== null && payloadSize > 0) buffers.push(write.payload);
    if (padding > 0) buffers.push(zeroSector.subarray(0, padding));
  }
  if (used > pieceStart) buffers.push(staging.subarray(pieceStart, used));
  return buffers;
}

function shuttingDown(): OperatingError {
  return new OperatingError("SHUTTING_DOWN", { what: "group log closing" });
}

function segmentBytesFor(dataBytes: number, limits: GroupLogLimits): number {
  const share = Math.ceil(dataBytes / limits.segmentsMax / sectorSize) * sectorSize;
  return Math.max(limits.segmentBytesMin, share);
}

function checkCreateOptions(options: GroupLogCreateOptions, limits: GroupLogLimits): void {
  const { sizeBytes, groupId } = options;
  const sizeValid =
    Number.isSafeInteger(sizeBytes) && sizeBytes % sectorSize === 0 && sizeBytes >= limits.sizeMin && sizeBytes <= logSizeMax;
  if (!sizeValid || sizeBytes - logDataStart < 2 * sectorSize) {
    throw new OperatingError("CONFIG_INVALID", { what: "log size", sizeBytes, sizeMin: limits.sizeMin, sizeMax: logSizeMax });
  }
  const groupIdBytes = Buffer.byteLength(groupId, "utf8");
  if (groupIdBytes === 0 || groupIdBytes > logGroupIdBytesMax) {
    throw new OperatingError("CONFIG_INVALID", { what: "group id", bytes: groupIdBytes, bytesMax: logGroupIdBytesMax });
  }
  if (options.generation !== undefined) assert(options.generation >= 0n, "generation");
}
