// A replica: the secondary side of a group. It keeps its own copy of the primary's log (the
// same records, LSNs and checksums: log/group-log.ts appendReceived) and applies it to its
// volumes in LSN order, one record after another, so that at every moment each volume equals
// the primary's after some prefix of the group's write order (DESIGN.md §2.2).
//
//   link session ──appendRecords──▶ log copy ──(durable)──▶ applier ──▶ volumes
//                └─enqueue(item, after LSN n)──────────────────┘ runs the item after record n
//
// Write-ahead, always: a record is applied only once it is durable in the replica's log, and
// the log is released only after the volumes are synced through it. A crash in the middle of
// applying is redone from the log tail at the next start (redo is idempotent), and no reader
// sees the volumes before that redo ends. Items that are not records (region data of a
// resync, a new volume table, the end of a resync, a hash request of verify) are placed in the
// stream after a given LSN and run exactly there.
//
// Consistency: a resync (docs/PROTOCOL.md §5) overwrites regions with the primary's newer
// content, so from its start until its end has been applied the volumes are NOT a prefix of
// the primary's order. The replica persists `consistent: false` before the first change of a
// resync and `true` only after the volumes are synced at its end; status and promotion read it.

import { assert } from "../assert.js";
import { replicaApplyCheckpointFillRatio, replicaApplyRunBytesMax, replicaApplyRunRecordsMax, replicaMemoryBytesMax, replicaRegionsInflightMax, replicaRoomWaitMsMax, stateFileBytesMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { settleAll } from "../settle-all.js";
import type { BlockFile } from "../io/block-file.js";
import { readFileBounded, writeFileAtomic } from "../io/atomic-file.js";
import type { Logger } from "../logger.js";
import { GroupLog, type GroupLogOptions, type LogCursor } from "../log/group-log.js";
import { isOperationKind, isSnapshotChangeKind, RecordKind, type LogRecord } from "../log/record.js";
import type { Accept } from "../replication/handshake.js";
import type { RegionData } from "../replication/resync.js";
import type { VolumeTable } from "../replication/volume-table.js";
import type { CatalogTwin, Twin, TwinCatalog, TwinRegion } from "../replication/twins.js";
import type { Volume } from "../volume/volume.js";
import { applyChange } from "./apply-change.js";
import { crashPoint } from "../crash-point.js";
import { plantedBug, plantedTrade } from "../planted-bugs.js";

export interface ReplicaHost {
  // Makes this node's volumes of the group match the primary's table (create, resize,
  // delete), calling addVolume/removeVolume on the replica.
  applyVolumeTable(group: string, table: VolumeTable): Promise<void>;
  // Called before a resync makes the volumes inconsistent (wasConsistent: they were a
  // consistent image through appliedLsn until now): the host takes a protective snapshot, so
  // that a consistent image exists throughout (DESIGN.md §6) and readers are served from it.
  beforeResync(group: string, wasConsistent: boolean, appliedLsn: bigint): Promise<void>;
  // The resync is complete and durable: the protective snapshot goes.
  afterResync(group: string, appliedLsn: bigint): Promise<void>;
  // While the replica is inconsistent: reads of the volume from its protective snapshot, or
  // null when there is none.
  protectedReader(volume: Volume): ((offset: number, target: Buffer) => Promise<void>) | null;
  // A snapshot's twin of one of the replica's volumes, to hash (verify); null if there is none.
  snapshotImage(volume: Volume, snapshot: string): { size: number; read(offset: number, target: Buffer): Promise<void> } | null;
  // Performs an operation record or a snapshot change at its point (redo may repeat it).
  performOperation(group: string, record: LogRecord): Promise<void>;
  // Makes the snapshot changes applied so far durable (before the log copy releases them).
  syncSnapshots(group: string): Promise<void>;
  // Twins when the exact point was lost (replication/twins.ts): the volume's twins; the
  // primary's catalog (deletions, then builds); a region of a twin being built.
  twinList(volume: Volume): Twin[];
  applyTwinCatalog(group: string, volume: Volume, catalog: readonly CatalogTwin[], lsn: bigint): Promise<{ built: string[]; kept: string[]; deleted: string[]; retained: string[] }>;
  writeTwin(volume: Volume, snapshot: string, offset: number, data: Buffer | null, length: number): Promise<void>;
  // The log copy restarts at lsn + 1, maybe on another history: what the snapshot stores
  // remember by LSN is made to say lsn.
  rebaseSnapshots(group: string, lsn: bigint): Promise<void>;
}

export type ReplicaItem =
  | { readonly kind: "regionData"; readonly message: RegionData }
  | { readonly kind: "volumeTable"; readonly message: VolumeTable }
  | { readonly kind: "resyncEnd"; readonly consistentLsn: bigint }
  | { readonly kind: "twinCatalog"; readonly message: TwinCatalog }
  | { readonly kind: "twinRegion"; readonly message: TwinRegion }
  | { readonly kind: "task"; readonly run: () => Promise<void> }; // e.g. verify's hashes at this point

interface PendingItem {
  readonly afterLsn: bigint;
  readonly item: ReplicaItem;
  readonly bytes: number;
}

interface ReplicaStateFile {
  readonly version: 1;
  readonly consistent: boolean;
  readonly resyncing: boolean;
  readonly primary: string | null;
}

export interface ReplicaOptions {
  readonly logger: Logger;
  readonly host: ReplicaHost;
  readonly statePath: string;
  readonly logSizeBytes: number;
  readonly logOptions?: GroupLogOptions; // the log copy's clock and limits (a simulation's); default: the system's
  readonly memoryBytesMax?: number; // received records kept for the applier; default replicaMemoryBytesMax (tests set less)
}

export class Replica {
  private readonly volumes = new Map<number, Volume>();
  private pending: PendingItem[] = [];
  private pendingBytesValue = 0;
  private cursor: LogCursor;
  private appliedLsnValue: bigint;
  private wake: (() => void) | null = null;
  private closing = false;
  private running: Promise<void> | null = null;
  private failure: Error | null = null;
  private checkpointRunning: Promise<void> | null = null;
  private idleWaiters: (() => void)[] = [];
  private stateValue: ReplicaStateFile;
  // periodic streams: apply only through the last interval boundary (null: all durable records)
  private intervalLsn: bigint | null = null;
  private logSwitch: Promise<void> | null = null; // set while beginResync replaces the log copy
  // Records received and not yet applied, kept in memory (consecutive, at most
  // replicaMemoryBytesMax) so that the applier need not read them back from the log copy;
  // beyond that it reads them from disk.
  private readonly received: LogRecord[] = [];
  private receivedStart = 0;
  private receivedBytes = 0;
  private lastKeptLsn: bigint | null = null; // null: nothing kept since the last gap
  // Periodic streams: while an interval is being applied, reads of the exports wait, so that
  // a reader sees the volumes only at interval boundaries.
  private readHold: Promise<void> | null = null;
  private readsInFlight = 0;
  private readsIdle: (() => void) | null = null;
  readonly stats = { appliedRecords: 0, appliedRuns: 0, recordsReadBack: 0, appliedBytes: 0, appliedOperations: 0, appliedSnapshotChanges: 0, regionsApplied: 0, regionBytesApplied: 0, checkpoints: 0, resyncs: 0, operationsDeferred: 0, twinsBuilt: 0, twinsDeleted: 0, twinBytesApplied: 0, intervalsSplit: 0 };

  private constructor(
    readonly name: string,
    private logValue: GroupLog,
    private readonly logFile: BlockFile,
    state: ReplicaStateFile,
    private readonly options: ReplicaOptions,
  ) {
    this.stateValue = state;
    this.appliedLsnValue = logValue.usage().headLsn;
    this.cursor = logValue.cursor(this.appliedLsnValue + 1n);
  }

  // Opens (or creates) the replica's log and its state. Call recover() once the volumes are added.
  static async open(name: string, logFile: BlockFile, fresh: boolean, options: ReplicaOptions): Promise<Replica> {
    const log = fresh ? await GroupLog.create(logFile, { ...options.logOptions, sizeBytes: options.logSizeBytes, groupId: name }) : await GroupLog.open(logFile, { ...options.logOptions, groupId: name });
    const text = await readFileBounded(options.statePath, stateFileBytesMax, (size) => new OperatingError("CONFIG_INVALID", `${options.statePath}: ${size} bytes is too large for a replica state file`));
    // A replica that never received anything is not a copy of anything yet: inconsistent.
    const state: ReplicaStateFile = text === null ? { version: 1, consistent: false, resyncing: false, primary: null } : (JSON.parse(text.toString("utf8")) as ReplicaStateFile);
    const replica = new Replica(name, log, logFile, state, options);
    if (text === null) await replica.persistState();
    return replica;
  }

  get log(): GroupLog {
    return this.logValue;
  }

  get appliedLsn(): bigint {
    return this.appliedLsnValue;
  }

  get consistent(): boolean {
    return this.stateValue.consistent;
  }

  get resyncing(): boolean {
    return this.stateValue.resyncing;
  }

  get pendingBytes(): number {
    return this.pendingBytesValue;
  }

  get health(): Error | null {
    return this.failure;
  }

  addVolume(volume: Volume): void {
    assert(!this.volumes.has(volume.id), `replica ${this.name}: volume id ${volume.id} twice`);
    this.volumes.set(volume.id, volume);
  }

  removeVolume(volume: Volume): void {
    this.volumes.delete(volume.id);
  }

  volumeList(): Volume[] {
    return [...this.volumes.values()];
  }

  // Redo: a crash may have stopped the applier anywhere between the log tail and its head.
  // Everything in the log is durable (GroupLog.open made it so); apply it all, sync, release.
  async recover(): Promise<{ replayedRecords: number }> {
    const tailLsn = this.logValue.usage().tailLsn;
    this.appliedLsnValue = tailLsn - 1n;
    this.cursor = this.logValue.cursor(tailLsn);
    const headLsn = this.logValue.usage().headLsn;
    const replayed = Number(headLsn - this.appliedLsnValue);
    await this.applyThrough(headLsn);
    await this.checkpoint();
    this.options.logger.info({ replayed, headLsn: String(headLsn), consistent: this.consistent }, "replica recovered");
    return { replayedRecords: replayed };
  }

  start(): void {
    assert(this.running === null, "replica started twice");
    this.running = this.run().catch((error: unknown) => this.fail(error));
  }

  // A failed applier or checkpoint stops the applier: a restart redoes from the log.
  private fail(error: unknown): void {
    if (this.failure !== null) return;
    this.failure = error as Error;
    this.options.logger.error({ err: error }, "replica applier stopped");
    this.wakeApplier();
    for (const wake of this.idleWaiters.splice(0)) wake();
  }

  // ---- Receiving (one link session at a time calls these, in stream order) ----

  // Appends received records to the log copy (they were checked against the stream: LSN,
  // chain, logId). Waits for room while the applier frees it.
  async appendRecords(records: readonly LogRecord[]): Promise<void> {
    this.checkHealthy();
    for (const record of records) {
      if (!this.logValue.hasRoom(record.payloadSize)) {
        this.splitInterval();
        void this.checkpoint().catch(() => undefined);
        await this.logValue.waitForRoom(record.payloadSize, replicaRoomWaitMsMax);
      }
      this.logValue.appendReceived(record);
      this.keep(record);
    }
    this.wakeApplier();
  }

  // Kept while consecutive with what was kept before; after a gap (memory was full), a new run
  // starts once the applier has taken every kept record, at whatever LSN arrives then. The
  // applier reads the records of the gap back from the log copy, in order, and goes on from
  // memory at the run's first record: a replica that fell behind once does not read everything
  // back from disk until it has caught up completely.
  private keep(record: LogRecord): void {
    const consecutive = this.lastKeptLsn === null ? this.receivedStart === this.received.length : record.lsn === this.lastKeptLsn + 1n;
    if (!consecutive || this.receivedBytes + record.payloadSize > (this.options.memoryBytesMax ?? replicaMemoryBytesMax)) {
      this.lastKeptLsn = null;
      return;
    }
    this.received.push(record);
    this.receivedBytes += record.payloadSize;
    this.lastKeptLsn = record.lsn;
  }

  // The record after the applied one when it is kept in memory (the first kept one then).
  private keptNext(): LogRecord | undefined {
    const lsn = this.appliedLsnValue + 1n;
    while (this.receivedStart < this.received.length && this.received[this.receivedStart]!.lsn < lsn) this.dropKept();
    if (plantedBug("apply-out-of-order")) plantedTrade(this.received, this.receivedStart, "write");
    if (plantedBug("operation-early")) plantedTrade(this.received, this.receivedStart, "operation");
    const kept = this.received[this.receivedStart];
    return kept !== undefined && kept.lsn === lsn ? kept : undefined;
  }

  // The next record to apply: from memory when kept there, else read back from the log copy.
  private async nextRecord(): Promise<LogRecord | null> {
    const kept = this.keptNext();
    if (kept !== undefined) {
      this.dropKept();
      return kept;
    }
    const lsn = this.appliedLsnValue + 1n;
    if (this.cursor.nextLsn !== lsn) this.cursor = this.logValue.cursor(lsn);
    this.stats.recordsReadBack += 1;
    return this.cursor.next();
  }

  // A run of kept records from the next one on, through targetLsn at most, that are plain
  // writes to one volume without snapshots to preserve chunks for (no change guard), within
  // its size: written by one Volume.writeRun. Null when fewer than two such records come next
  // (the record-by-record path applies the next one).
  private nextWriteRun(targetLsn: bigint): { volume: Volume; records: LogRecord[] } | null {
    const first = this.keptNext();
    if (first === undefined || first.lsn > targetLsn) return null;
    const volume = this.volumes.get(first.volumeId);
    if (volume === undefined || volume.changeGuard !== null) return null;
    const plain = (record: LogRecord) => record.kind === RecordKind.write && record.volumeId === first.volumeId && record.offset + record.length <= volume.size;
    if (!plain(first)) return null;
    const records = [first];
    let bytes = first.payloadSize;
    for (let index = this.receivedStart + 1; index < this.received.length && records.length < replicaApplyRunRecordsMax; index++) {
      const next = this.received[index]!;
      if (next.lsn !== records[records.length - 1]!.lsn + 1n || next.lsn > targetLsn || !plain(next) || bytes + next.payloadSize > replicaApplyRunBytesMax) break;
      records.push(next);
      bytes += next.payloadSize;
    }
    return records.length > 1 ? { volume, records } : null;
  }

  private dropKept(): void {
    this.receivedBytes -= this.received[this.receivedStart]!.payloadSize;
    this.receivedStart += 1;
    if (this.receivedStart === this.received.length || this.receivedStart > 1024) {
      this.received.splice(0, this.receivedStart);
      this.receivedStart = 0;
    }
  }

  // Places an item in the stream after the last record received so far.
  enqueue(item: ReplicaItem, bytes = 0): void {
    this.checkHealthy();
    this.pending.push({ afterLsn: this.logValue.usage().headLsn, item, bytes });
    this.pendingBytesValue += bytes;
    this.wakeApplier();
  }

  // Resolves once every item and every record received so far has been applied.
  async drained(): Promise<void> {
    this.wakeApplier();
    const intervalLsn = this.intervalLsn;
    this.intervalLsn = null; // a resync or the end of a stream: everything received goes in
    while (this.pending.length > 0 || this.appliedLsnValue < this.logValue.usage().headLsn) {
      this.checkHealthy();
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    if (intervalLsn !== null) this.intervalLsn = this.appliedLsnValue;
    this.checkHealthy();
  }

  // Resolves once the items waiting to be applied hold at most `bytes`.
  async pendingBelow(bytes: number): Promise<void> {
    while (this.pendingBytesValue > bytes) {
      this.checkHealthy();
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
  }

  // What the replica tells its primary in `hello`: its durable position in the stream.
  async position(): Promise<{ durableLsn: bigint; durableChecksum: number; appliedLsn: bigint; logId: bigint }> {
    const durableLsn = await this.logValue.sync();
    return { durableLsn, durableChecksum: this.logValue.headChecksum, appliedLsn: this.appliedLsnValue, logId: this.logValue.logId };
  }

  // A stream in intervals (periodic links) is applied one whole interval at a time; any other
  // stream record by record. Set at the start of each connection's stream.
  useIntervals(intervals: boolean): void {
    this.intervalLsn = intervals ? this.appliedLsnValue : null;
  }

  // Records through lsn close an interval: they may be applied now.
  intervalEnd(lsn: bigint): void {
    assert(this.intervalLsn !== null, "intervalEnd on a stream without intervals");
    if (lsn > this.intervalLsn) this.intervalLsn = lsn; // never back before an interval split
    this.wakeApplier();
  }

  // The log copy is full and the applier waits at an interval's end that has not arrived: an
  // interval larger than the log copy (a periodic link's backlog after an outage is one
  // interval). Waiting for its end would wait forever: the receiver needs room that only
  // applying frees, and the link, deaf meanwhile, is dropped as silent and resumed at the same
  // point, over and over. So the interval is applied in parts, each still a prefix of the
  // primary's write order; only the "moves between interval ends" promise yields.
  private splitInterval(): void {
    if (this.intervalLsn === null || this.intervalLsn >= this.logValue.headLsn) return;
    this.options.logger.warn({ intervalLsn: String(this.intervalLsn), receivedLsn: String(this.logValue.headLsn) }, "an interval larger than the log copy: applying it in parts");
    this.intervalLsn = this.logValue.headLsn;
    this.stats.intervalsSplit += 1;
    this.wakeApplier();
  }

  // Whether an `accept` with start `log` continues exactly this log copy.
  continues(accept: Accept): boolean {
    return accept.logId === this.logValue.logId && accept.resumeLsn === this.logValue.usage().headLsn + 1n && accept.previousChecksum === this.logValue.headChecksum;
  }

  // Starts a resync (accept with start `resync`): applies what it holds, persists that the
  // volumes are about to become inconsistent, and restarts the log copy at the primary's
  // resumeLsn (the records before it are no longer needed: the resync sends their regions).
  async beginResync(accept: Accept, primary: string): Promise<void> {
    await this.drained();
    await this.options.host.beforeResync(this.name, this.consistent, this.appliedLsnValue);
    this.stateValue = { version: 1, consistent: false, resyncing: true, primary };
    await this.persistState();
    await this.checkpoint();
    if (this.continues(accept)) {
      // An earlier resync already streamed records this copy holds: it goes on from there.
      this.stats.resyncs += 1;
      this.wakeApplier();
      return;
    }
    // Before the switch (a crash between the two leaves old LSNs lower, which redo of an empty
    // log copy cannot misread): the new history's LSNs may be ones the old one used.
    await this.options.host.rebaseSnapshots(this.name, accept.resumeLsn - 1n);
    let switched!: () => void;
    this.logSwitch = new Promise((resolve) => (switched = resolve));
    try {
      await this.checkpointSettled();
      await this.logValue.close();
      this.logValue = await GroupLog.create(this.logFile, {
        ...this.options.logOptions,
        sizeBytes: this.logValue.sizeBytes,
        groupId: this.name,
        logId: accept.logId,
        startLsn: accept.resumeLsn,
        startPreviousChecksum: accept.previousChecksum,
      });
      this.appliedLsnValue = accept.resumeLsn - 1n;
      this.cursor = this.logValue.cursor(accept.resumeLsn);
      this.received.length = 0;
      this.receivedStart = 0;
      this.receivedBytes = 0;
      this.lastKeptLsn = null;
    } finally {
      this.logSwitch = null;
      switched();
    }
    this.stats.resyncs += 1;
    this.wakeApplier();
  }

  // ---- As the owner of read-only exports (node/volume-export.ts) ----

  // A replica that is not a consistent image (a resync under way, or never synced) serves its
  // protective snapshot, the last consistent image; without one (never synced) it refuses
  // reads (EIO) rather than show a state the primary never had.
  async read(volume: Volume, offset: number, target: Buffer): Promise<void> {
    if (!this.consistent) {
      // the protective snapshot stands in for the consistent image until the resync ends
      const reader = this.options.host.protectedReader(volume);
      if (reader === null) throw new OperatingError("REPLICA_INCONSISTENT", { group: this.name, volume: volume.name });
      return reader(offset, target);
    }
    while (this.readHold !== null) await this.readHold;
    this.readsInFlight += 1;
    try {
      await volume.read(target, offset);
    } finally {
      this.readsInFlight -= 1;
      if (this.readsInFlight === 0) this.readsIdle?.();
    }
  }

  // Applies an interval with the exports' reads held back (reads in flight finish first).
  private applyInterval(targetLsn: bigint): Promise<void> {
    return this.withReadsHeld(() => this.applyThrough(targetLsn));
  }

  private async withReadsHeld<T>(action: () => Promise<T>): Promise<T> {
    if (this.readHold !== null) return action(); // already held (an operation inside an interval)
    let release!: () => void;
    this.readHold = new Promise((resolve) => (release = resolve));
    try {
      if (this.readsInFlight > 0) await new Promise<void>((resolve) => (this.readsIdle = resolve));
      this.readsIdle = null;
      return await action();
    } finally {
      this.readHold = null;
      release();
    }
  }

  flush(volume: Volume): Promise<void> {
    return volume.flush();
  }

  write(): Promise<void> {
    return Promise.reject(new OperatingError("READ_ONLY", { group: this.name, what: "a replica's volumes change only through its primary" }));
  }

  trim(): Promise<void> {
    return this.write();
  }

  zero(): Promise<void> {
    return this.write();
  }

  snapshotImage(volume: Volume, snapshot: string): { size: number; read(offset: number, target: Buffer): Promise<void> } | null {
    return this.options.host.snapshotImage(volume, snapshot);
  }

  // A takeover may make this replica a primary only if its volumes are a consistent image.
  checkPromotable(): void {
    if (!this.consistent) throw new OperatingError("REPLICA_INCONSISTENT", { group: this.name, resyncing: this.resyncing });
  }

  // ---- The applier ----

  private wakeApplier(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private async run(): Promise<void> {
    while (!this.closing && this.failure === null) {
      if (this.logSwitch !== null) {
        await this.logSwitch;
        continue;
      }
      const item = this.pending[0];
      if (item !== undefined && item.afterLsn <= this.appliedLsnValue) {
        await this.checkpointIdle();
        const count = this.regionRunLength();
        if (count === 1) {
          await this.perform(item.item);
        } else {
          await settleAll(this.pending.slice(0, count).map((entry) => this.perform(entry.item)));
        }
        for (const done of this.pending.splice(0, count)) this.pendingBytesValue -= done.bytes;
        for (const wake of this.idleWaiters.splice(0)) wake();
        continue;
      }
      const durable = this.logValue.durableLsn;
      // A resync's records carry no interval ends: during one, everything durable is applied.
      const bounded = this.intervalLsn !== null && !this.stateValue.resyncing;
      const durableLsn = bounded && this.intervalLsn! < durable ? this.intervalLsn! : durable;
      const target = item !== undefined && item.afterLsn < durableLsn ? item.afterLsn : durableLsn;
      if (this.appliedLsnValue < target) {
        if (bounded) await this.applyInterval(target);
        else await this.applyThrough(target);
        if (this.logValue.fill > replicaApplyCheckpointFillRatio && this.checkpointRunning === null) this.checkpointBehind();
        continue;
      }
      for (const wake of this.idleWaiters.splice(0)) wake();
      await this.nextWork();
    }
  }

  // How many items at the head of the queue to perform together: a run of region pieces due at
  // the same point (no record between them) over disjoint ranges, at most
  // replicaRegionsInflightMax; 1 for anything else. Pieces of one bitmap never overlap; the
  // check keeps overlapping ones (a later pass over a region) in order all the same.
  private regionRunLength(): number {
    const first = this.pending[0]!;
    if (first.item.kind !== "regionData") return 1;
    const ranges: RegionData[] = [first.item.message];
    while (ranges.length < replicaRegionsInflightMax) {
      const next = this.pending[ranges.length];
      if (next === undefined || next.item.kind !== "regionData" || next.afterLsn !== first.afterLsn) break;
      const piece = next.item.message;
      if (ranges.some((range) => range.volumeId === piece.volumeId && range.offset < piece.offset + piece.length && piece.offset < range.offset + range.length)) break;
      ranges.push(piece);
    }
    return ranges.length;
  }

  // Waits for a new item, or for a received record to become durable (asking the log for it),
  // or for a new record. A failed log fails the applier (a restart redoes from the log).
  private nextWork(): Promise<void> {
    const log = this.logValue;
    const woken = new Promise<void>((resolve) => (this.wake = resolve));
    const logged = log.headLsn > log.durableLsn ? log.durable(log.durableLsn + 1n) : log.appended(log.headLsn);
    return Promise.race([woken, logged]);
  }

  private async applyThrough(targetLsn: bigint): Promise<void> {
    while (this.appliedLsnValue < targetLsn) {
      const run = this.nextWriteRun(targetLsn);
      if (run !== null) {
        // The applied LSN follows what is known to be in the image: during a batch job the
        // image is ahead of it by up to the run (any prefix of it), never behind.
        let done = 0;
        await run.volume.writeRun(
          run.records.map((record) => record.payload),
          run.records.map((record) => record.offset),
          (count) => {
            for (; done < count; done++) {
              const record = run.records[done]!;
              this.dropKept();
              this.appliedLsnValue = record.lsn;
              this.stats.appliedRecords += 1;
              this.stats.appliedBytes += record.payloadSize;
            }
          },
        );
        this.stats.appliedRuns += 1;
        continue;
      }
      const record = await this.nextRecord();
      assert(record !== null && record.lsn === this.appliedLsnValue + 1n, () => `replica ${this.name}: record ${this.appliedLsnValue + 1n} missing from its log`);
      const volume = this.volumes.get(record.volumeId);
      if (isOperationKind(record.kind) || isSnapshotChangeKind(record.kind)) {
        await this.checkpointIdle();
        // readers of the volumes wait: a restore must not be seen half done
        if (isOperationKind(record.kind)) crashPoint("replica-operation-received");
        await this.withReadsHeld(() => this.performDuringResync(record));
        if (isOperationKind(record.kind)) crashPoint("replica-operation-performed");
        if (isOperationKind(record.kind)) this.stats.appliedOperations += 1;
        else this.stats.appliedSnapshotChanges += 1;
      } else if (volume !== undefined && record.offset + record.length <= volume.size && record.lsn >= (volume.changeGuard?.durableThroughLsn ?? 0n)) {
        // (a volume the table removed, a range a shrink cut off, or a change that an operation
        // made durable before redo came back to it: nothing left to change)
        await applyChange(volume, record.kind, record.flags, record.offset, record.length, record.payloadSize > 0 ? record.payload : undefined, false);
      }
      this.appliedLsnValue = record.lsn;
      this.stats.appliedRecords += 1;
      this.stats.appliedBytes += record.payloadSize;
    }
  }

  // An operation or snapshot change. During a resync a twin it names may be missing or stale
  // (the link missed changes to it while on its bitmap): it is skipped, and the twin is built
  // at the end of the resync from the primary's snapshot as it is then (replication/twins.ts).
  private async performDuringResync(record: LogRecord): Promise<void> {
    try {
      await this.options.host.performOperation(this.name, record);
    } catch (error) {
      const code = (error as OperatingError).code;
      if (!this.stateValue.resyncing || (code !== "SNAPSHOT_NOT_FOUND" && code !== "SNAPSHOT_EXISTS" && code !== "SNAPSHOT_HAS_CHILDREN")) throw error;
      this.stats.operationsDeferred += 1;
      this.options.logger.warn({ lsn: String(record.lsn), code }, "an operation on a twin the resync has not built yet: skipped; the twin is built at the end of the resync");
    }
  }

  // The twins of a volume of the replica (at the applier's point, for a twin list request).
  twinList(volumeId: number): Twin[] {
    const volume = this.volumes.get(volumeId);
    return volume === undefined ? [] : this.options.host.twinList(volume);
  }

  private async perform(item: ReplicaItem): Promise<void> {
    switch (item.kind) {
      case "regionData": {
        const { volumeId, offset, length, data } = item.message;
        const volume = this.volumes.get(volumeId);
        if (volume === undefined || offset >= volume.size) return;
        const clipped = Math.min(length, volume.size - offset);
        // through the volume's guard like any change: the replica's snapshots keep their chunks
        if (data === null) await applyChange(volume, RecordKind.zero, 0, offset, clipped, undefined, false);
        else await applyChange(volume, RecordKind.write, 0, offset, clipped, data.subarray(0, clipped), false);
        this.stats.regionsApplied += 1;
        this.stats.regionBytesApplied += clipped;
        return;
      }
      case "volumeTable":
        await this.options.host.applyVolumeTable(this.name, item.message);
        return;
      case "resyncEnd":
        // Every announced region and every record through consistentLsn is in the volumes:
        // make them durable and release the log through consistentLsn, then say so. Redo must
        // never replay a record at or before consistentLsn over the regions: where the
        // primary's image held a change its log had lost (an activity-map crash), the region
        // is the only copy of it, and the older record would undo it.
        assert(this.appliedLsnValue === item.consistentLsn, "resyncEnd applied at its LSN");
        await this.checkpoint();
        // Said (status, acks) only once it is durable.
        await this.persistState({ ...this.stateValue, consistent: true, resyncing: false });
        await this.options.host.afterResync(this.name, this.appliedLsnValue);
        // The resync's records were applied past any interval end: intervals go on from here.
        if (this.intervalLsn !== null && this.intervalLsn < this.appliedLsnValue) this.intervalLsn = this.appliedLsnValue;
        this.options.logger.info({ consistentLsn: String(item.consistentLsn) }, "resync complete: replica consistent");
        return;
      case "twinCatalog": {
        const volume = this.volumes.get(item.message.volumeId);
        if (volume === undefined) throw new OperatingError("VOLUME_NOT_FOUND", { group: this.name, volumeId: item.message.volumeId, what: "a twin catalog for a volume the replica lacks" });
        const result = await this.withReadsHeld(() => this.options.host.applyTwinCatalog(this.name, volume, item.message.twins, this.appliedLsnValue));
        this.stats.twinsBuilt += result.built.length;
        this.stats.twinsDeleted += result.deleted.length + result.retained.length;
        this.options.logger.info({ volume: volume.name, atLsn: String(this.appliedLsnValue), ...result }, "twins reconciled with the primary's snapshots");
        return;
      }
      case "twinRegion": {
        const { volumeId, twin, offset, length, data } = item.message;
        const volume = this.volumes.get(volumeId);
        if (volume === undefined) throw new OperatingError("VOLUME_NOT_FOUND", { group: this.name, volumeId, what: "a twin region for a volume the replica lacks" });
        await this.options.host.writeTwin(volume, twin, offset, data, length);
        this.stats.twinBytesApplied += length;
        return;
      }
      case "task":
        await item.run();
        return;
    }
  }

  // Makes the volumes (and snapshot stores) durable through what is applied now, and releases
  // the log copy through it. Serialized: a call waits for a running one, then starts its own.
  async checkpoint(): Promise<void> {
    await this.checkpointSettled();
    const run = this.checkpointThrough(this.appliedLsnValue);
    this.checkpointRunning = run;
    try {
      await run;
    } finally {
      if (this.checkpointRunning === run) this.checkpointRunning = null;
    }
  }

  // The applier's checkpoint runs beside it: the sync of a volume covers every write that
  // completed before it began, so records applied meanwhile cannot weaken the release through
  // the LSN taken at its start (they are synced by the next one). Waiting for it instead
  // stopped applying for the whole sync of the images' dirty pages, while records kept
  // arriving: a secondary that fell behind its memory that way read them back from disk.
  private checkpointBehind(): void {
    this.checkpoint().catch((error: unknown) => this.fail(error));
  }

  private async checkpointSettled(): Promise<void> {
    while (this.checkpointRunning !== null) await this.checkpointRunning.catch(() => undefined);
  }

  // Operations and stream items are performed with no checkpoint running, as before.
  private async checkpointIdle(): Promise<void> {
    await this.checkpointSettled();
    if (this.failure !== null) throw this.failure;
  }

  private async checkpointThrough(applied: bigint): Promise<void> {
    const log = this.logValue;
    await Promise.all([...this.volumeList().map((volume) => volume.flush()), this.options.host.syncSnapshots(this.name)]);
    if (applied >= log.usage().tailLsn) log.release(applied);
    await log.checkpoint();
    this.stats.checkpoints += 1;
  }

  private checkHealthy(): void {
    if (this.failure !== null) throw new OperatingError("DISK_IO", { group: this.name, what: "replica applier failed" }, { cause: this.failure });
    if (this.closing) throw new OperatingError("SHUTTING_DOWN", { group: this.name });
  }

  // Persists a new state, and only then makes it the current one.
  private async persistState(state: ReplicaStateFile = this.stateValue): Promise<void> {
    await writeFileAtomic(this.options.statePath, `${JSON.stringify(state)}\n`);
    this.stateValue = state;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.wakeApplier();
    await this.running;
    try {
      await this.checkpoint();
    } catch (error) {
      this.options.logger.error({ err: error }, "replica did not stop cleanly; the next start redoes its log");
    }
    await this.logValue.close().catch(() => undefined);
  }
}
