// A group: the ordering point for its volumes. Every change to any volume of the group gets
// the next LSN in the group's one log, so write order holds across all of them.
//
// The write path (DESIGN.md §4), per durability mode (docs/DESIGN-NOTES.md says why
// activity-map is the default):
//
//   activity-map:  room in log ─▶ extent hot in the activity map (durable; usually no I/O)
//                  ─▶ LSN + log append (queued) ─▶ volume write (after overlapping
//                  predecessors) ─▶ ack.  FUA: the write with O_DSYNC.  FLUSH: image
//                  datasync (the log syncs behind it, so that extents can cool). Recovery
//                  does not replay data records: the image is the truth.
//   write-ahead:   room in log ─▶ LSN + log append ─▶ record durable (group commit)
//                  ─▶ volume write ─▶ ack.   FUA / FLUSH: nothing more (the log has it)
//
// Either way the volume never keeps a write its log lost without the activity map saying
// where (activity-map: an extent cools only once log and image are durable past its last
// write) or the log being able to replay it (write-ahead).
//
// A change or operation whose record is logged but which then fails on the images (a disk
// error) is held "unapplied": the log, and every secondary that applies it, says it happened,
// so the group re-applies it (bounded retries). Meanwhile its LSN stays in flight (the log keeps
// the record; a restart redoes it, or resyncs its hot extent), changes to its volume are
// refused with the disk's error, and operations are refused: none may build on images that
// lack it.
//
// A checkpoint releases the log records below the applied watermark (write-ahead: after
// making the images durable, since the log is what makes them durable); it runs in the
// background when the log fills past a ratio, and at stop.

import { assert } from "../assert.js";
import { logCheckpointFillRatio, logStallMsMax, operationQuiesceMsMax, unappliedRetriesMax, unappliedRetryMs } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { GroupLog } from "../log/group-log.js";
import { isOperationKind, isSnapshotChangeKind, RecordFlag, RecordKind, recordDataOmitted, recordHeaderSize, type LogRecord } from "../log/record.js";
import { applyChange } from "./apply-change.js";
import { logWriteDelayMs } from "../log/limits.js";
import type { Twin } from "../replication/twins.js";
import { crashPoint } from "../crash-point.js";
import { plantedBug } from "../planted-bugs.js";
import type { ChangeTicket } from "../volume/change-guard.js";
import type { Volume } from "../volume/volume.js";
import type { ActivityExtent, ActivityMap } from "./activity-map.js";
import { AppliedWatermark } from "./applied-watermark.js";
import { RangeGate, type GateTicket } from "./range-gate.js";

export type Durability = "activity-map" | "write-ahead";

// What the group needs from its links (replication/group-links.ts), when it has any.
export interface GroupReplication {
  // A link exists (or is being added) that may ship data records: the log must hold their data.
  readonly needsData: boolean;
  // The last LSN the log may release, given that changes through appliedLsn are in the
  // images; lagging links may switch to their bitmaps here (overflow).
  releasable(appliedLsn: bigint, logFill: number): Promise<bigint>;
  // sync links: resolves once every sync link that is streaming has lsn durable; null if none waits.
  syncWait(lsn: bigint): Promise<void> | null;
  // An operation record was logged (and performed) at lsn: periodic links cut their interval there.
  operationLogged(lsn: bigint): void;
}

// Performs an operation record (group/operation.ts) on this node: the node's snapshot stores.
// Idempotent per LSN, so redo may hand it records already performed.
export interface OperationPerformer {
  perform(record: LogRecord): Promise<void>; // operation sets and snapshot changes
  // Makes what snapshot changes wrote durable: a checkpoint calls it before releasing the log.
  sync(): Promise<void>;
  // The volume's snapshots that have twins on the secondaries (verify compares them).
  snapshotImages(volume: Volume): SnapshotImageView[];
  // With the group quiet: the volume's snapshots and frozen copies of its images, from which a
  // link builds a peer's twins after a resync (docs/DESIGN-NOTES.md §8).
  freezeTwins(volume: Volume): Promise<FrozenTwins>;
}

// What a twin build reads: the volume's snapshots and copies of every image, frozen at one
// point of the write order, whatever happens to the images after it.
export interface FrozenTwins {
  readonly catalog: readonly Twin[]; // the volume's snapshots (operators' names), as at the point
  // Where the frozen snapshot differs from the frozen image `base` (null: the volume).
  diffRegions(snapshot: string, base: string | null): Iterable<{ offset: number; length: number }>;
  read(snapshot: string, offset: number, target: Buffer): Promise<void>;
  release(): Promise<void>;
}

export interface SnapshotImageView {
  readonly name: string;
  readonly size: number;
  readonly gateKey: number; // the key its changes take in the snapshot gate
  read(offset: number, target: Buffer): Promise<void>;
}

export interface OperationOutcome<T> {
  readonly result: T;
  readonly lsn: bigint;
  readonly pauseMs: number;
  readonly recordBytes: number; // what the operation costs on a link: its record, header and payload
}

export interface GroupStats {
  writes: number;
  writesNow: number; // of them, done in one synchronous step (Group.changeNow)
  writeBytes: number;
  zeroes: number;
  trims: number;
  flushes: number;
  checkpoints: number;
  stalls: number;
  logFullErrors: number;
  snapshotChanges: number;
}

// A change with its LSN, between the log and the images (Group.changeLog).
interface LoggedChange {
  readonly volume: Volume;
  readonly kind: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  readonly payload: Buffer | undefined;
  readonly preserving: ChangeTicket | null;
  readonly lsn: bigint;
  readonly ticket: GateTicket;
  readonly remote: Promise<void> | null;
  readonly settle: (applied: boolean) => void;
}

const resolved = Promise.resolve();

// A logged change or operation the images do not hold yet (see the header).
interface UnappliedChange {
  readonly lsn: bigint;
  readonly volumeId: number | null; // null: an operation, which may touch every volume
  attempts: number;
  error: OperatingError;
  givenUp: boolean;
  readonly apply: () => Promise<void>;
  readonly settle: (applied: boolean) => void; // what its write path does at the end
}

export interface RecoveryReport {
  readonly replayedRecords: number;
  readonly skippedRecords: number;
  readonly recoveredActivityExtents: readonly ActivityExtent[];
  readonly headLsn: bigint;
  readonly stoppedBecause: string;
}


export class Group {
  private readonly volumes = new Map<number, Volume>();
  private readonly gate = new RangeGate();
  private readonly snapshotGate = new RangeGate(); // keyed by snapshotGateKey(volume, image)
  private readonly watermark: AppliedWatermark;
  private checkpointRunning: Promise<void> | null = null;
  private paused: Promise<void> | null = null;
  private active = 0; // changes counted in by change(), not yet ended (quiesce waits for them)
  private quietWaitMs = 0; // how long the current quiesce waited for changes in flight
  private idleWaiters: (() => void)[] = [];
  private closing = false;
  private readonly unapplied = new Map<bigint, UnappliedChange>(); // by LSN
  private readonly retryCancels = new Set<() => void>();
  replication: GroupReplication | null = null;
  operations: OperationPerformer | null = null;
  readonly stats: GroupStats = {
    writes: 0, writesNow: 0, writeBytes: 0, zeroes: 0, trims: 0, flushes: 0, checkpoints: 0, stalls: 0,
    logFullErrors: 0, snapshotChanges: 0,
  };

  constructor(
    readonly name: string,
    readonly log: GroupLog,
    readonly durability: Durability,
    private readonly activity: ActivityMap | null,
    private readonly logger: Logger,
    private readonly options: { readonly stallMsMax?: number; readonly nowMs?: () => number } = {},
  ) {
    assert((durability === "activity-map") === (activity !== null), "group: activity map iff activity-map mode");
    this.watermark = new AppliedWatermark(log.usage().headLsn);
    if (durability === "activity-map") log.delayWrites(logWriteDelayMs); // acknowledgements wait for the image, not the log
  }

  // The sync links' wait for a change (their peers' durability), or null; the log then writes
  // at once rather than after its delay, since a link ships only written records.
  private syncWait(lsn: bigint): Promise<void> | null {
    const remote = this.replication?.syncWait(lsn) ?? null;
    if (remote !== null) this.log.hurry();
    return remote;
  }

  private get nowMs(): () => number {
    return this.options.nowMs ?? Date.now;
  }

  addVolume(volume: Volume): void {
    assert(!this.volumes.has(volume.id), `group ${this.name}: volume id ${volume.id} twice`);
    this.volumes.set(volume.id, volume);
  }

  // record: the operation record that carries the detach to the secondaries, at this point.
  async removeVolume(volume: Volume, record: Buffer | null = null): Promise<void> {
    await this.quiesce(async () => {
      await volume.flush();
      this.volumes.delete(volume.id);
      if (record !== null) await this.recordVolumeChange(record, volume.id);
    });
  }

  volumeList(): Volume[] {
    return [...this.volumes.values()];
  }

  get inflight(): number {
    return this.watermark.inflight;
  }

  // Every change up to this LSN is in the images (the applied watermark).
  get appliedLsn(): bigint {
    return this.watermark.appliedLsn;
  }

  // ---- Recovery ----

  // Replays the log from its tail into the volumes (redo), makes them durable, and returns
  // the extents that were hot at the crash (where a volume may be ahead of its log).
  async recover(recoveredActivity: readonly ActivityExtent[]): Promise<RecoveryReport> {
    const recovery = this.log.recovery ?? { tailLsn: this.log.usage().tailLsn, stoppedBecause: "created" };
    // write-ahead: the log is what makes an acknowledged write durable, so it is replayed.
    // activity-map: the image is (FLUSH and FUA sync the image itself). Outside the hot
    // extents, log and image are both durable and agree; inside them the image may be ahead
    // of the log or behind it, and the image is the truth that a resync hands to the peers.
    // Replaying there could put an older record over a newer flushed write, so nothing is.
    // Operations are redone in both modes (each store knows the last one it performed): one
    // logged before a crash and not performed yet is performed now, exactly once.
    const { replayed, skipped } = this.durability === "write-ahead" ? await this.replay(recovery.tailLsn) : await this.redoOperations(recovery.tailLsn);
    const headLsn = this.log.usage().headLsn;
    await this.syncVolumes(this.volumeList(), headLsn);
    this.log.release(this.replication === null ? headLsn : await this.replication.releasable(headLsn, this.log.fill));
    await this.log.checkpoint();
    // The map on disk keeps the hot extents until recoveredHandedOff(): cleared here, a crash
    // before the links had marked them would lose where image and log may disagree.
    const report = {
      replayedRecords: replayed,
      skippedRecords: skipped,
      recoveredActivityExtents: recoveredActivity,
      headLsn,
      stoppedBecause: recovery.stoppedBecause,
    };
    this.logger.info({ group: this.name, replayed, skipped, hotExtents: recoveredActivity.length, headLsn: String(headLsn), stoppedBecause: recovery.stoppedBecause }, "group recovered");
    return report;
  }

  // Redo: applies every record from the tail on, in LSN order.
  private async replay(fromLsn: bigint): Promise<{ replayed: number; skipped: number }> {
    let replayed = 0;
    let skipped = 0;
    for await (const record of this.log.cursor(fromLsn)) {
      if (isOperationKind(record.kind) || isSnapshotChangeKind(record.kind)) {
        await this.performOperation(record);
        replayed += 1;
        continue;
      }
      const volume = this.volumes.get(record.volumeId);
      // a deleted volume, a range cut off by a later shrink, a change an operation made durable,
      // or a write logged without its data (in activity-map mode, before a switch to this one:
      // the image took it then)
      if (volume === undefined || record.offset + record.length > volume.size || record.lsn < (volume.changeGuard?.durableThroughLsn ?? 0n) || recordDataOmitted(record)) {
        skipped += 1;
        continue;
      }
      await applyChange(volume, record.kind, record.flags, record.offset, record.length, record.payload, false);
      replayed += 1;
    }
    return { replayed, skipped };
  }

  // activity-map: the images are the truth for data; operation records and snapshot changes
  // (which are applied after their record is durable, like write-ahead) are performed again.
  private async redoOperations(fromLsn: bigint): Promise<{ replayed: number; skipped: number }> {
    let replayed = 0;
    for await (const record of this.log.cursor(fromLsn)) {
      if (!isOperationKind(record.kind) && !isSnapshotChangeKind(record.kind)) continue;
      await this.performOperation(record);
      replayed += 1;
    }
    return { replayed, skipped: 0 };
  }

  private async performOperation(record: LogRecord): Promise<void> {
    assert(this.operations !== null, `group ${this.name}: an operation record at ${record.lsn} and nothing to perform it`);
    await this.operations.perform(record);
  }

  // ---- Operations ----

  // Runs a storage-management operation at one point of the write order: new changes wait,
  // changes in flight finish; check() may still refuse (nothing is logged then); the record is
  // appended and made durable (a crash from here on redoes it); perform() runs; sync links
  // have the record durable; changes resume.
  async operate<T>(payload: Buffer, volumeId: number, check: () => void, perform: (lsn: bigint) => Promise<T>): Promise<OperationOutcome<T>> {
    this.checkOpen();
    const { result, pauseMs } = await this.quiesce(async () => {
      check();
      if (this.quietWaitMs > operationQuiesceMsMax) throw new OperatingError("TIMEOUT", { group: this.name, what: `writes in flight did not finish within ${operationQuiesceMsMax} ms; the operation was not started` });
      return this.logOperation(payload, volumeId, async (lsn) => {
        crashPoint("operation-logged");
        const performed = await perform(lsn);
        crashPoint("operation-performed");
        return performed;
      });
    });
    return { result: result.performed, lsn: result.lsn, pauseMs, recordBytes: recordHeaderSize + payload.length };
  }

  // A change the caller has just made to the group's volumes (created, resized, deleted) with
  // the group quiet (inside quiesce()), recorded at this point: the record carries it to the
  // secondaries, which perform it there. The primary's catalog already holds the change, so
  // redo here skips the record; a crash between the change and its record is covered by the
  // volume table every replication stream starts with.
  async recordVolumeChange(payload: Buffer, volumeId: number): Promise<{ lsn: bigint; recordBytes: number }> {
    this.checkOpen();
    const { lsn } = await this.logOperation(payload, volumeId, async () => undefined);
    return { lsn, recordBytes: recordHeaderSize + payload.length };
  }

  // Appends an operation record (the group is quiet), makes it durable, performs it, waits for
  // sync peers to have it, and cuts periodic intervals at it.
  // activity-map: the images are made durable first. Once the record is durable, a crash redoes
  // the operation from it, on images that must then hold every change before it (write-ahead
  // replays those changes first; here the images are the only copy): a snapshot redone on an
  // image that lost an unflushed write before it would differ from its twins (found by the
  // simulator with a small activity map, seed 148).
  private async logOperation<T>(payload: Buffer, volumeId: number, perform: (lsn: bigint) => Promise<T>): Promise<{ performed: T; lsn: bigint }> {
    if (this.durability === "activity-map") await this.syncVolumes(this.volumeList(), this.watermark.appliedLsn);
    if (!this.log.hasRoom(payload.length)) await this.waitForRoom(payload.length);
    const lsn = this.log.append({ kind: RecordKind.operationFirst, flags: 0, volumeId, offset: 0, length: 0, payload });
    // Both gates whole, in the same synchronous step as the LSN: a read at an exact point that
    // sees this LSN waits until the operation has changed the images (reads that entered
    // before it finish first).
    const volumeTicket = this.gate.enterAll();
    const snapshotTicket = this.snapshotGate.enterAll();
    this.watermark.begin(lsn);
    const settle = (): void => {
      this.gate.leave(volumeTicket);
      this.snapshotGate.leave(snapshotTicket);
      this.watermark.end(lsn);
    };
    try {
      const remote = this.syncWait(lsn);
      await this.log.durable(lsn);
      await Promise.all([volumeTicket.wait, snapshotTicket.wait]);
      const performed = await this.holdingOnDiskError(lsn, null, () => perform(lsn), () => this.redoLogged(lsn), settle);
      if (remote !== null) await remote;
      this.replication?.operationLogged(lsn);
      return { performed, lsn };
    } finally {
      if (!this.unapplied.has(lsn)) settle();
    }
  }

  // Performs a logged operation again from its record (redo's way: idempotent per LSN).
  private async redoLogged(lsn: bigint): Promise<void> {
    for await (const record of this.log.cursor(lsn)) {
      await this.performOperation(record);
      return;
    }
    throw new OperatingError("LOG_CORRUPT", { group: this.name, lsn: String(lsn), what: "an unapplied operation's record is gone from the log" });
  }

  // ---- Changes the images do not hold ----

  // Runs what a logged change does to the images. A disk error there holds the change, to be
  // retried by `retry`, and is thrown on; the caller's end (settle) is then left to the retry:
  // callers settle in `finally` only when this.unapplied does not hold their LSN. Any other
  // error is not held.
  private async holdingOnDiskError<T>(lsn: bigint, volumeId: number | null, run: () => Promise<T>, retry: () => Promise<void>, settle: (applied: boolean) => void): Promise<T> {
    try {
      return await run();
    } catch (error) {
      if (error instanceof OperatingError && (error.code === "DISK_IO" || error.code === "DISK_FULL") && !this.closing) {
        const entry: UnappliedChange = { lsn, volumeId, attempts: 0, error, givenUp: false, apply: retry, settle };
        this.unapplied.set(lsn, entry);
        this.logger.error({ group: this.name, lsn: String(lsn), volumeId, err: error }, "a logged change failed on the images: it is held and retried; changes to its volume and operations are refused until then");
        this.scheduleRetry(entry);
      }
      throw error;
    }
  }

  private scheduleRetry(entry: UnappliedChange): void {
    const cancel = this.log.clock.setTimeout(() => {
      this.retryCancels.delete(cancel);
      void this.retryUnapplied(entry);
    }, unappliedRetryMs);
    this.retryCancels.add(cancel);
  }

  private async retryUnapplied(entry: UnappliedChange): Promise<void> {
    if (this.closing) return;
    entry.attempts += 1;
    try {
      await entry.apply();
    } catch (error) {
      entry.error = error instanceof OperatingError ? error : new OperatingError("DISK_IO", { group: this.name }, { cause: error });
      if (entry.attempts < unappliedRetriesMax) {
        this.scheduleRetry(entry);
        return;
      }
      entry.givenUp = true;
      this.logger.error({ group: this.name, lsn: String(entry.lsn), attempts: entry.attempts, err: error }, "a logged change still fails on the images: given up; a restart redoes it from the log (write-ahead) or resyncs its extent (activity-map)");
      return;
    }
    this.unapplied.delete(entry.lsn);
    entry.settle(true);
    this.logger.info({ group: this.name, lsn: String(entry.lsn), attempts: entry.attempts }, "a held change is now applied to the images");
  }

  // Refuses a change to the volume (or an operation: volumeId null) while a logged change the
  // images lack would have to come before it.
  private checkApplied(volumeId: number | null): void {
    for (const entry of this.unapplied.values()) {
      if (volumeId === null || entry.volumeId === null || entry.volumeId === volumeId) {
        throw new OperatingError(entry.error.code === "DISK_FULL" ? "DISK_FULL" : "DISK_IO", { group: this.name, what: `the change logged at LSN ${entry.lsn} failed on the images and is ${entry.givenUp ? "given up until a restart" : "being retried"}; nothing that must follow it runs until then` });
      }
    }
  }

  // For status: what is held.
  unappliedList(): { lsn: string; volumeId: number | null; attempts: number; givenUp: boolean; error: string }[] {
    return [...this.unapplied.values()].map((entry) => ({ lsn: String(entry.lsn), volumeId: entry.volumeId, attempts: entry.attempts, givenUp: entry.givenUp, error: entry.error.message }));
  }

  // A change to a writable snapshot (kind snapshotWrite or snapshotZero), in write order with
  // everything else: LSN, log, and the store's write only once the record is durable (the
  // activity map covers volumes, not snapshot stores, so redo must be able to replay it).
  // gateKey: the snapshot's own key, so overlapping changes to it land in LSN order.
  snapshotChange(volume: Volume, gateKey: number, kind: number, offset: number, length: number, payload: Buffer, fua: boolean, apply: () => Promise<void>): Promise<void> {
    return this.admitted(async () => {
      if (!this.log.hasRoom(payload.length)) await this.waitForRoom(payload.length);
      this.checkApplied(volume.id); // in the step that appends: no hold can start in between
      const lsn = this.log.append({ kind, flags: fua ? RecordFlag.fua : 0, volumeId: volume.id, offset, length, payload });
      const ticket = this.snapshotGate.enter(gateKey, offset, length);
      this.watermark.begin(lsn);
      const remote = this.syncWait(lsn);
      const settle = (): void => {
        this.snapshotGate.leave(ticket);
        this.watermark.end(lsn);
      };
      try {
        await this.log.durable(lsn);
        if (ticket.wait !== null) await ticket.wait;
        await this.holdingOnDiskError(lsn, volume.id, apply, apply, settle);
        if (remote !== null) await remote;
      } finally {
        if (!this.unapplied.has(lsn)) settle();
      }
      this.stats.snapshotChanges += 1;
    });
  }

  // ---- The write path ----

  private checkOpen(): void {
    if (this.closing) throw new OperatingError("SHUTTING_DOWN", { group: this.name });
  }

  // A change that arrives while an operation holds the group quiet waits for it to end.
  private finished(): void {
    this.active -= 1;
    if (this.active === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // Back-pressure: waits (bounded by stallMsMax in all) until the log has room. The caller
  // appends in the same synchronous run as the last hasRoom() check, so no one takes the room
  // in between.
  private async waitForRoom(payloadBytes: number): Promise<void> {
    const nowMs = this.nowMs;
    const deadline = nowMs() + (this.options.stallMsMax ?? logStallMsMax);
    this.stats.stalls += 1;
    while (!this.log.hasRoom(payloadBytes)) {
      void this.checkpoint();
      try {
        await this.log.waitForRoom(payloadBytes, Math.max(0, deadline - nowMs()));
      } catch (error) {
        if (error instanceof OperatingError && error.code === "LOG_FULL") this.stats.logFullErrors += 1;
        throw error;
      }
      this.checkOpen();
    }
  }

  private maybeCheckpoint(): void {
    if (this.checkpointRunning === null && this.log.fill > logCheckpointFillRatio) void this.checkpoint();
  }

  write(volume: Volume, offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.stats.writes += 1;
    this.stats.writeBytes += data.length;
    if (!fua) {
      const done = this.changeNow(volume, offset, data);
      if (done !== false) return done;
    }
    return this.change(volume, RecordKind.write, fua ? RecordFlag.fua : 0, offset, data.length, data);
  }

  zero(volume: Volume, offset: number, length: number, keepAllocated: boolean, fua: boolean): Promise<void> {
    this.stats.zeroes += 1;
    // A zero that keeps allocation and one that punches read back the same: one record kind.
    const flags = (fua ? RecordFlag.fua : 0) | (keepAllocated ? RecordFlag.keepAllocated : 0);
    return this.change(volume, RecordKind.zero, flags, offset, length, undefined);
  }

  trim(volume: Volume, offset: number, length: number, fua: boolean): Promise<void> {
    this.stats.trims += 1;
    return this.change(volume, RecordKind.trim, fua ? RecordFlag.fua : 0, offset, length, undefined);
  }

  private change(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined): Promise<void> {
    return this.admitted(() => this.changeAdmitted(volume, kind, flags, offset, length, payload));
  }

  // Every change: it waits while an operation holds the group quiet, is counted in flight
  // (quiesce waits for it) and may start a checkpoint once done.
  private async admitted(work: () => Promise<void>): Promise<void> {
    this.checkOpen();
    // The last check of `paused` and the count go in one synchronous step: with an await
    // between them (a helper's own return), a quiesce starting in that gap would find nothing
    // active and let this change run inside its pause (found by the simulator: a write landed
    // in the volume while the images were frozen for a twin build).
    while (this.paused !== null) await this.paused;
    this.checkOpen();
    this.active += 1;
    await this.counted(work);
  }

  // Runs a change already counted in `active` (admitted, changeNow) to its end: no longer in
  // flight once it settles, and a checkpoint may follow one that succeeded.
  private async counted(work: () => Promise<void>): Promise<void> {
    try {
      await work();
    } finally {
      this.finished();
    }
    this.maybeCheckpoint();
  }

  private async changeAdmitted(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined): Promise<void> {
    let payloadBytes = this.loggedBytes(kind, payload);
    if (!this.log.hasRoom(payloadBytes)) await this.waitForRoom(payloadBytes);
    // A snapshot store refuses here (store full) while nothing is logged or written.
    const preserving = volume.changeGuard?.reserve(offset, length) ?? null;
    const marked = this.activity?.mark(volume.id, offset, length);
    try {
      if (marked) await marked;
      payloadBytes = this.loggedBytes(kind, payload); // a link may have come or gone meanwhile
      if (!this.log.hasRoom(payloadBytes)) await this.waitForRoom(payloadBytes);
      this.checkApplied(volume.id); // in the step that appends: no hold can start in between
    } catch (error) {
      preserving?.release();
      this.activity?.done(volume.id, offset, length, 0n); // nothing was written
      throw error;
    }
    await this.changeApply(this.changeLog(volume, kind, flags, offset, length, payload, preserving));
  }

  // activity-map, and no link that could ship the record: a write is logged without its data
  // (RecordFlag.dataOmitted). Nothing would read it back: recovery in this mode takes data from
  // the images (the activity map names where they may be ahead of the log) and redoes only
  // operations, and a link added later starts with a full sync at its creation point
  // (GroupLinks.needsData counts it from before that point). Writes to snapshots keep their
  // data: redo replays them.
  get omitsData(): boolean {
    return this.durability === "activity-map" && !(this.replication?.needsData ?? false);
  }

  private omits(kind: number): boolean {
    return kind === RecordKind.write && this.omitsData;
  }

  // The bytes of payload a change's record carries.
  private loggedBytes(kind: number, payload: Buffer | undefined): number {
    return this.omits(kind) ? 0 : (payload?.length ?? 0);
  }

  // Appends a change's record, with its data or, omitted (omits(kind), decided by the caller in
  // the step that checked for room), without.
  private appendChange(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined, omitted: boolean): bigint {
    return this.log.append({ kind, flags: omitted ? flags | RecordFlag.dataOmitted : flags, volumeId: volume.id, offset, length, payload: omitted ? undefined : payload });
  }

  // From here to the volume write, order is what matters: LSN, gate entry and watermark are
  // taken in one synchronous step, so overlapping writes reach the volume in LSN order.
  private changeLog(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined, preserving: ChangeTicket | null): LoggedChange {
    const lsn = this.appendChange(volume, kind, flags, offset, length, payload, this.omits(kind));
    return this.changeLogged(volume, kind, flags, offset, length, payload, preserving, lsn, this.syncWait(lsn));
  }

  // remote: the sync links' durability of the record, alongside ours (syncWait).
  private changeLogged(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined, preserving: ChangeTicket | null, lsn: bigint, remote: Promise<void> | null): LoggedChange {
    const ticket = this.gate.enter(volume.id, offset, length);
    this.watermark.begin(lsn);
    const settle = (applied: boolean): void => {
      this.gate.leave(ticket);
      this.watermark.end(lsn);
      this.activity?.done(volume.id, offset, length, lsn, !applied);
    };
    return { volume, kind, flags, offset, length, payload, preserving, lsn, ticket, remote, settle };
  }

  // write-ahead: durable through the log, which recovery replays. activity-map: the
  // acknowledgement waits for the image only (FUA: the write itself durable); the record
  // reaches the log file behind it, its extent hot meanwhile.
  private async changeApply(change: LoggedChange): Promise<void> {
    const { volume, kind, flags, offset, length, payload, preserving, lsn, ticket, remote, settle } = change;
    const durable = this.durability === "write-ahead" ? false : (flags & RecordFlag.fua) !== 0;
    let failed = true;
    try {
      if (this.durability === "write-ahead") await this.log.durable(lsn);
      if (ticket.wait !== null) await ticket.wait;
      await this.holdingOnDiskError(lsn, volume.id, () => applyChange(volume, kind, flags, offset, length, payload, durable, preserving), () => applyChange(volume, kind, flags, offset, length, payload, durable), settle);
      if (remote !== null) await remote;
      failed = false;
    } finally {
      preserving?.release(); // idempotent: applyChange released it unless it never got there
      if (!this.unapplied.has(lsn)) settle(!failed);
    }
  }

  // The common write, done in one synchronous step with no promise of its own (each await of
  // the general path costs the event loop a turn): activity-map, not FUA, no operation holding
  // the group, room in the log, its extents already in the activity map on disk, no snapshot
  // to preserve into, nothing held. Returns false having changed nothing when any of that is
  // not so. Once logged, a write that must wait (an overlapping write or ordered read in
  // flight, a sync link) or that the image does not take at once (Volume.writeNow) goes on as
  // the general path does from that point, and the promise it returns stands for it. A write
  // done here is begun and ended in this step, so it takes no gate entry, watermark slot or
  // activity mark that nothing could observe: it only moves the watermark and its extents'
  // last LSN.
  private changeNow(volume: Volume, offset: number, payload: Buffer): Promise<void> | false {
    const activity = this.activity;
    if (this.closing || this.paused !== null || activity === null || volume.changeGuard !== null || this.unapplied.size > 0) return false;
    const length = payload.length;
    const omitted = this.omits(RecordKind.write);
    if (!this.log.hasRoom(omitted ? 0 : length) || !activity.covers(volume.id, offset, length)) return false;
    const lsn = this.appendChange(volume, RecordKind.write, 0, offset, length, payload, omitted);
    const remote = this.syncWait(lsn);
    if (remote === null && !this.gate.overlaps(volume.id, offset, length) && volume.writeNow(payload, offset)) {
      this.watermark.passed(lsn);
      activity.written(volume.id, offset, length, lsn);
      this.stats.writesNow += 1;
      this.maybeCheckpoint();
      return resolved;
    }
    const marked = activity.mark(volume.id, offset, length);
    assert(marked === null, "activity map: covered extents asked to be persisted");
    this.active += 1;
    const change = this.changeLogged(volume, RecordKind.write, 0, offset, length, payload, null, lsn, remote);
    return this.counted(() => this.changeApply(change));
  }

  read(volume: Volume, offset: number, target: Buffer): Promise<void> {
    return volume.read(target, offset);
  }

  // Reads a range at an exact point of the write order: after every change with an LSN up to
  // the one returned, before any later change (the range gate orders it like a write). A
  // resync ships the content at that point of the stream, and verify hashes it there.
  readOrdered(volume: Volume, offset: number, target: Buffer): Promise<bigint> {
    return this.readAtPoint(this.gate, volume.id, offset, target, () => volume.read(target, offset));
  }

  // A snapshot's range at an exact point of the write order, like readOrdered: after every
  // snapshot change with an LSN up to the one returned (they hold the snapshot gate).
  readOrderedSnapshot(image: SnapshotImageView, offset: number, target: Buffer): Promise<bigint> {
    return this.readAtPoint(this.snapshotGate, image.gateKey, offset, target, () => image.read(offset, target));
  }

  // Refused once the log has failed, before or during the read: a change logged before the
  // point then fails without reaching the images, and leaves the gate, so the content would
  // lack it while the point says it holds it (found by the simulator, seed 391: a resync read
  // this way made the secondary "consistent" without a record that the primary's redo applied
  // after its restart).
  private async readAtPoint(gate: RangeGate, key: number, offset: number, target: Buffer, read: () => Promise<void>): Promise<bigint> {
    this.log.checkHealthy();
    const lsn = this.log.headLsn;
    const ticket = gate.enter(key, offset, target.length);
    try {
      if (ticket.wait !== null) await ticket.wait;
      await read();
    } finally {
      gate.leave(ticket);
    }
    this.log.checkHealthy();
    return lsn;
  }

  // Everything completed on the volume before this call is durable when it resolves.
  // write-ahead: the log holds it durably (recovery replays it). activity-map: the image is
  // synced; the log is synced in the background only when the map has extents to cool (the
  // only thing its durability buys here), so a FLUSH costs one fdatasync, not two competing.
  async flush(volume: Volume): Promise<void> {
    this.stats.flushes += 1;
    if (this.durability === "write-ahead") {
      await this.log.sync();
      return;
    }
    // a failure shows in the log's health and fails later changes
    if (this.activity?.wantsCooling === true) this.log.sync().catch(() => undefined);
    await this.syncVolumes([volume], this.watermark.appliedLsn);
  }

  // Makes the log and every image durable (the activity map calls it when it is full).
  async syncAll(): Promise<void> {
    await Promise.all([this.log.sync(), this.syncVolumes(this.volumeList(), this.watermark.appliedLsn)]);
  }

  // appliedLsn: taken before the syncs start, so every change up to it is in the image.
  private async syncVolumes(volumes: readonly Volume[], appliedLsn: bigint): Promise<void> {
    await Promise.all(volumes.map((volume) => volume.flush()));
    for (const volume of volumes) if (appliedLsn > volume.syncedLsn) volume.syncedLsn = appliedLsn;
  }

  // The activity map's cooling point for a volume: changes up to it are durable in both the
  // log and the image.
  coolLsn(volumeId: number): bigint {
    const durable = this.log.durableLsn;
    const volume = this.volumes.get(volumeId);
    if (volume === undefined) return durable; // deleted: nothing of it left to resync
    if (plantedBug("cool-unsynced-image")) return durable;
    return volume.syncedLsn < durable ? volume.syncedLsn : durable;
  }

  // Runs an action with the group quiet: new changes wait, changes in flight finish, the
  // action runs, changes resume. Returns the pause in milliseconds along with the result.
  // Refused (DISK_IO) while a change is held unapplied or once the log has failed: the images
  // are then at no exact point of the write order (see readAtPoint).
  async quiesce<T>(action: () => Promise<T>): Promise<{ result: T; pauseMs: number }> {
    const nowMs = this.nowMs;
    while (this.paused !== null) await this.paused;
    let resume!: () => void;
    this.paused = new Promise<void>((resolve) => (resume = resolve));
    const started = nowMs();
    try {
      await this.idle();
      this.quietWaitMs = nowMs() - started;
      this.checkApplied(null);
      this.log.checkHealthy();
      const result = await action();
      return { result, pauseMs: nowMs() - started };
    } finally {
      this.paused = null;
      resume();
    }
  }

  // After recover(): every link has the recovered extents in its durable bitmap (or there is
  // no link), so the activity map may forget them. Before any change is taken: a change would
  // persist the map without them.
  async recoveredHandedOff(): Promise<void> {
    if (this.activity !== null) await this.activity.clear();
  }

  // ---- Checkpoint ----

  // Frees the log below the applied watermark. write-ahead: the images are made durable first
  // (the log is what makes an acknowledged write durable there). activity-map: the image
  // writes of flushed changes are durable already, and an unflushed change may be lost; its
  // extent stays hot until the image is synced, so replication resyncs it.
  checkpoint(): Promise<void> {
    if (this.checkpointRunning !== null) return this.checkpointRunning;
    const run = (async () => {
      const applied = this.watermark.appliedLsn;
      if (this.durability === "write-ahead") await this.syncVolumes(this.volumeList(), applied);
      await this.operations?.sync(); // snapshot changes up to applied are durable before their records go
      this.log.release(this.replication === null ? applied : await this.replication.releasable(applied, this.log.fill));
      await this.log.checkpoint();
      this.stats.checkpoints += 1;
    })();
    this.checkpointRunning = run;
    const clear = () => {
      this.checkpointRunning = null;
    };
    run.then(clear, (error: unknown) => {
      clear();
      this.logger.error({ group: this.name, err: error }, "checkpoint failed");
    });
    return run;
  }

  // Stops taking writes, waits for those in flight, checkpoints and closes the log. When the
  // disk fails here, the activity map is left as it is (its hot extents are what a restart
  // needs) and the next start recovers.
  async close(): Promise<void> {
    this.closing = true;
    for (const cancel of this.retryCancels) cancel();
    this.retryCancels.clear();
    await this.idle();
    await this.checkpointRunning?.catch(() => undefined);
    try {
      await this.syncAll();
      await this.checkpoint();
      // held changes keep their extents hot (and their records, below the watermark's stop)
      if (this.activity !== null && this.unapplied.size === 0) await this.activity.clear();
    } catch (error) {
      this.logger.error({ group: this.name, err: error }, "group did not stop cleanly; the next start recovers it");
    }
    await this.activity?.close();
    await this.log.close().catch((error: unknown) => this.logger.error({ group: this.name, err: error }, "closing the log failed"));
  }

}
