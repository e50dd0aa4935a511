// One link of a primary group to one peer: the shell around link-sender.ts. It connects (and
// reconnects with back-off), runs the handshake, streams the log from the resume point, runs a
// resync when the link's dirty bitmap is active, and keeps what must survive a restart.
//
//   disconnected ──connect──▶ handshaking ──accept log────▶ streaming ──drop──▶ disconnected
//        ▲   paused                         └─accept resync─▶ resyncing ─end applied─▶ streaming
//
// Persistent state per link (links/<peer>.state.json and .bitmap, written atomically):
// - peerDurableLsn: the peer has every record through it durably; the log keeps the records
//   after it for this link (releaseLimit) until the link overflows.
// - the dirty bitmap and coveredLsn: when active, the bitmap names every region the peer may
//   lack for records through coveredLsn; the records after it are still in the log.
//
// Overflow (docs/DESIGN-NOTES.md §2): when the log is fuller than linkOverflowFillRatio and this
// link holds its tail, a link with policy `bitmap` folds the records it lacks into its bitmap
// and lets the log go; one with policy `stall` keeps them and writes wait for room.
//
// Resync order (docs/PROTOCOL.md §5): each region is read through the group's range gate at an
// exact LSN H (Group.readOrdered); every record ≤ H is sent before the region's data and every
// record > H after it, so the peer applies the region at the very point of the write order its
// content belongs to.

import { promises as fsp } from "node:fs";
import type { Duplex } from "node:stream";
import { assert } from "../assert.js";
import { linkTwinsStaleMax, resyncReadsInflightMax, linkBatchBytesMax, linkBytesInFlightMax, linkHeartbeatMs, linkOverflowFillRatio, linkReconnectMsMax, linkReconnectMsMin, linkSilenceMsMax, replicationMessagesBytesMax, stateFileBytesMax, verifyDifferencesReportedMax, verifyRegionsPerRequestMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { readFileBounded, writeFileAtomic } from "../io/atomic-file.js";
import { scheduleIo } from "../io/io-scheduler.js";
import { plantedBug } from "../planted-bugs.js";
import type { Logger } from "../logger.js";
import { clockRepeat, type LogClock, type LogCursor } from "../log/group-log.js";
import { isOperationKind, isSnapshotChangeKind, type LogRecord, RecordKind, recordDataOmitted, recordHeaderSize } from "../log/record.js";
import { decodeOperationSet, isVolumeOperation } from "../group/operation.js";
import type { Group } from "../group/group.js";
import type { LinkMetricsView } from "../api/metrics.js";
import { allocatedRegions } from "../volume/allocated-regions.js";
import { hashesDiffer, regionDigest } from "../volume/region-hash.js";
import type { HashRequest } from "./verify-hashes.js";
import type { SnapshotImageView } from "../group/group.js";
import { DirtyBitmap, dirtyBitmapLoad, dirtyBitmapSave } from "./dirty-bitmap.js";
import { FrameStream } from "./frame-stream.js";
import { type Hello, protocolVersionMax, protocolVersionMin, protocolVersionRecordChecksums } from "./handshake.js";
import type { LinkCredential } from "./link-credential.js";
import { type SenderEffect, type SenderInput, type SenderState, senderInitial, senderStep, type StartDecision } from "./link-sender.js";
import type { Message } from "./message.js";
import type { VolumeRegion } from "./resync.js";
import { replicationBatchRecordsMax, replicationFramePayloadSizeMax, replicationRegionDataSizeMax } from "./limits.js";
import { recordsBatchHeaderSize } from "./records-batch.js";
import type { VolumeTable } from "./volume-table.js";
import { type CatalogTwin, planTwins, type Twin, doomedTwins } from "./twins.js";
import { decodeSnapshotChangeName } from "../group/snapshot-change.js";

export type LinkMode = "sync" | "async" | "periodic";
export type OverflowPolicy = "bitmap" | "stall";

export interface LinkSettings {
  readonly peer: string;
  readonly address: { readonly host: string; readonly port: number };
  readonly mode: LinkMode;
  readonly intervalMs: number; // periodic links
  readonly overflow: OverflowPolicy;
  readonly paused: boolean;
  readonly credential: LinkCredential; // the primary's half
  readonly createdAtMs: number;
}

interface LinkProgress {
  peerDurableLsn: bigint;
  peerAppliedLsn: bigint;
  bitmapActive: boolean;
  coveredLsn: bigint;
  bitmapBaseLsn: bigint | null; // the peer had everything through it when the bitmap began; null: every allocated region
  resyncs: number;
  // Twins the peer may have wrong because the link missed changes to them ("volumeId:name"),
  // or "all" (a new peer, a full resync): built again at the end of the next resync.
  twinsStale: readonly string[] | "all";
}

// The last twin build of a link, as status reports it.
interface TwinBuildReport {
  readonly atLsn: string;
  readonly built: number;
  readonly kept: number;
  readonly peerDeletes: number;
  readonly regionBytes: number; // of the twins' regions (zero regions count, and cost a header)
  readonly bytesSent: number; // on the wire for the build: lists, catalogs and regions
  readonly ms: number;
}

export interface LinkEnvironment {
  readonly node: string;
  readonly logger: Logger;
  readonly clock: LogClock;
  connect(credential: LinkCredential, host: string, port: number): Promise<Duplex>;
}

export interface LinkFiles {
  readonly state: string;
  readonly bitmap: string;
}

interface Session {
  readonly stream: FrameStream;
  state: SenderState;
  readonly closed: Promise<string>;
  close(reason: string): void;
  wake: (() => void) | null;
  cutLsn: bigint; // periodic: the last interval boundary
  resyncEndLsn: bigint | null;
  resyncMarks: number; // the bitmap's mark count when this resync began
  inFlight: { lastLsn: bigint; bytes: number }[];
  inFlightBytes: number;
  controls: Control[]; // volume tables and verify requests, each sent right after record atLsn
  hold: Promise<void> | null; // set while verify reads at an exact point: the pump parks
  parked: (() => void) | null;
  replies: Map<number, (reply: Message | null) => void>; // hashReply, twinList
  twinMarks: number; // the link's twin marks when this session's resync built the twins (-1: it did not)
  nextRequestId: number;
  protocolVersion: number; // the version the accept chose; 0 until it went out (no heartbeats before)
  peerConsistent: boolean; // the peer's last ack said its volumes are a consistent image
  carry: LogRecord | null; // read from the cursor but left for the next batch (it would overfill a frame)
  cursor: LogCursor | null; // reads records back from the log when the ship cache no longer holds them
}

interface Control {
  readonly atLsn: bigint;
  readonly message: VolumeTable | HashRequest;
}

export interface LinkVerifyReport {
  readonly peer: string;
  readonly regionBytes: number;
  readonly bytesCompared: number;
  readonly differingBytes: number; // what a resync of the differing regions would send
  readonly differing: { volume: string; offset: number; length: number }[];
}

interface ResyncProgress {
  totalBytes: number;
  sentBytes: number;
  startedAtMs: number;
}

const bitmapPieceBytes = replicationRegionDataSizeMax;

// A resync piece whose read (at an exact point of the write order) is under way.
interface ResyncRead {
  readonly volumeId: number;
  readonly offset: number;
  readonly data: Buffer;
  readonly atLsn: Promise<bigint>;
}

export class PrimaryLink {
  private progress: LinkProgress = { peerDurableLsn: 0n, peerAppliedLsn: 0n, bitmapActive: false, coveredLsn: 0n, bitmapBaseLsn: null, resyncs: 0, twinsStale: [] };
  private twinMarks = 0; // names marked stale so far: a resync clears them only if none came after its build
  private lastTwinBuild: TwinBuildReport | null = null;
  private persisted: LinkProgress = { ...this.progress };
  private bitmap: DirtyBitmap | null = null;
  private bitmapMarks = 0; // marks since the bitmap was loaded: a resync clears it only if none came during it
  private session: Session | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private resumeWaiters: (() => void)[] = [];
  private progressWaiters: { lsn: bigint; applied: boolean; resolve: () => void }[] = [];
  private stateName: "disconnected" | "connecting" | "handshaking" | "streaming" | "resyncing" | "paused" | "stopped" = "disconnected";
  private lastError: string | null = null;
  private connectedAtMs: number | null = null;
  private resync: ResyncProgress | null = null;
  private streamedThisSession = false;
  private folding: Promise<void> | null = null; // a checkpoint folding records into the bitmap
  private helloInProgress = false; // a peer's hello is being answered: no fold may start
  onShipped: (() => void) | null = null; // set by the group's links: records were sent
  readonly stats = { connects: 0, disconnects: 0, recordsSent: 0, recordBytesSent: 0, regionBytesSent: 0, overflows: 0, resyncsCompleted: 0, bytesSent: 0, operationsMissed: 0, twinsBuilt: 0, twinBytesSent: 0 };

  private constructor(
    readonly group: Group,
    private settingsValue: LinkSettings,
    private readonly files: LinkFiles,
    private readonly environment: LinkEnvironment,
  ) {}

  // Loads a link's persistent state. A link without state is new: its bitmap is seeded with
  // every allocated region (an initial sync), with the group quiet so that no write is in
  // flight between the allocation scan and coveredLsn.
  static async open(group: Group, settings: LinkSettings, files: LinkFiles, environment: LinkEnvironment): Promise<PrimaryLink> {
    const link = new PrimaryLink(group, settings, files, environment);
    const text = await readFileBounded(files.state, stateFileBytesMax, (size) => new OperatingError("CONFIG_INVALID", `${files.state}: ${size} bytes is too large for a link state file`));
    if (text === null) {
      await group.quiesce(async () => {
        link.bitmap = link.emptyBitmap();
        for (const volume of group.volumeList()) {
          for await (const region of allocatedRegions(volume.file, volume.size)) link.bitmap.mark(volume.id, region.offset, region.length);
        }
        link.progress = { ...link.progress, bitmapActive: true, coveredLsn: group.log.headLsn, bitmapBaseLsn: null, twinsStale: "all" };
        await link.saveBitmap();
        await link.persistProgress();
      });
    } else {
      const raw = JSON.parse(text.toString("utf8")) as Record<string, string | number | boolean>;
      link.progress = {
        peerDurableLsn: BigInt(raw.peerDurableLsn as string),
        peerAppliedLsn: BigInt(raw.peerAppliedLsn as string),
        bitmapActive: raw.bitmapActive as boolean,
        coveredLsn: BigInt(raw.coveredLsn as string),
        bitmapBaseLsn: raw.bitmapBaseLsn === null || raw.bitmapBaseLsn === undefined ? null : BigInt(raw.bitmapBaseLsn as string),
        resyncs: raw.resyncs as number,
        twinsStale: (raw.twinsStale as unknown as string[] | "all" | undefined) ?? [],
      };
      link.persisted = { ...link.progress };
      if (link.progress.bitmapActive) link.bitmap = (await dirtyBitmapLoad(files.bitmap)) ?? link.fullBitmapLost();
      link.forgetLostRecords();
    }
    return link;
  }

  // A crash can take records from the log that this link had counted: the peer's durable
  // position, or the bitmap's coverage (in activity-map mode a record is applied, and may be
  // folded, before it is durable). Positions past the recovered head would name records of a
  // history that is gone: every resume would fail, and records of the new history at those
  // LSNs would be released unfolded. They come back to the head; the regions the lost records
  // touched are in the bitmap (folded) or the activity map's hot extents, and a peer that holds
  // lost records is found by its hello and resynced whole.
  private forgetLostRecords(): void {
    const head = this.group.log.headLsn;
    const { peerDurableLsn, peerAppliedLsn, coveredLsn } = this.progress;
    if (peerDurableLsn <= head && coveredLsn <= head) return;
    const clamp = (lsn: bigint) => (lsn > head ? head : lsn);
    this.progress = { ...this.progress, peerDurableLsn: clamp(peerDurableLsn), peerAppliedLsn: clamp(peerAppliedLsn), coveredLsn: clamp(coveredLsn) };
    this.logger.warn({ peer: this.peer, headLsn: String(head), peerDurableLsn: String(peerDurableLsn), coveredLsn: String(coveredLsn) }, "the log lost records this link had counted (a crash): its positions come back to the head");
  }

  get settings(): LinkSettings {
    return this.settingsValue;
  }

  get peer(): string {
    return this.settingsValue.peer;
  }

  private get logger(): Logger {
    return this.environment.logger;
  }

  private emptyBitmap(): DirtyBitmap {
    return DirtyBitmap.create(this.group.volumeList().map((volume) => ({ id: volume.id, size: volume.size })));
  }

  // The bitmap file is gone although the state says it is active: resend everything.
  private fullBitmapLost(): DirtyBitmap {
    this.logger.warn({ peer: this.peer }, "link bitmap missing; every region will be resynced");
    const bitmap = this.emptyBitmap();
    for (const volume of this.group.volumeList()) bitmap.markAll(volume.id);
    this.progress = { ...this.progress, twinsStale: "all" };
    return bitmap;
  }

  // ---- Life cycle ----

  start(): void {
    assert(this.running === null, "link started twice");
    this.running = this.connectLoop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.session?.close("stopping");
    for (const wake of this.resumeWaiters.splice(0)) wake();
    await this.running;
    this.stateName = "stopped";
    this.releaseWaiters();
    await this.persistProgress().catch(() => undefined);
  }

  async setPaused(paused: boolean): Promise<LinkSettings> {
    this.settingsValue = { ...this.settingsValue, paused };
    if (paused) this.session?.close("paused by the operator");
    else for (const wake of this.resumeWaiters.splice(0)) wake();
    return this.settingsValue;
  }

  private async connectLoop(): Promise<void> {
    let backoffMs = linkReconnectMsMin;
    while (!this.stopped) {
      if (this.settingsValue.paused) {
        this.stateName = "paused";
        await new Promise<void>((resolve) => this.resumeWaiters.push(resolve));
        continue;
      }
      this.stateName = "connecting";
      const { host, port } = this.settingsValue.address;
      let socket: Duplex;
      try {
        socket = await this.environment.connect(this.settingsValue.credential, host, port);
      } catch (error) {
        this.lastError = (error as Error).message;
        this.stateName = "disconnected";
        await this.sleep(backoffMs);
        backoffMs = Math.min(backoffMs * 2, linkReconnectMsMax);
        continue;
      }
      this.stats.connects += 1;
      this.streamedThisSession = false;
      const reason = await this.runSession(socket);
      this.stats.disconnects += 1;
      this.lastError = reason;
      this.stateName = "disconnected";
      this.connectedAtMs = null;
      this.releaseWaiters();
      this.logger.info({ peer: this.peer, reason }, "link disconnected");
      // A link that got as far as streaming retries quickly: a flapping network should cost
      // seconds of lag, not a log overflow. One that keeps failing backs off.
      if (this.streamedThisSession) backoffMs = linkReconnectMsMin;
      if (!this.stopped) await this.sleep(backoffMs);
      backoffMs = Math.min(backoffMs * 2, linkReconnectMsMax);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const cancel = this.environment.clock.setTimeout(resolve, ms);
      this.resumeWaiters.push(() => {
        cancel();
        resolve();
      });
    });
  }

  // ---- One connection ----

  private runSession(socket: Duplex): Promise<string> {
    const clock = this.environment.clock;
    let finish!: (reason: string) => void;
    const closed = new Promise<string>((resolve) => (finish = resolve));
    const session: Session = {
      stream: null as unknown as FrameStream,
      state: senderInitial(clock.nowMs()),
      closed,
      close: (reason) => {
        if (!session.stream.closed) session.stream.close(new OperatingError("PEER_UNREACHABLE", { what: reason }));
      },
      wake: null,
      cutLsn: 0n,
      resyncEndLsn: null,
      resyncMarks: 0,
      inFlight: [],
      inFlightBytes: 0,
      controls: [],
      hold: null,
      parked: null,
      replies: new Map(),
      twinMarks: -1,
      nextRequestId: 1,
      protocolVersion: 0,
      peerConsistent: false,
      carry: null,
      cursor: null,
    };
    let closeReason = "closed";
    (session as { stream: FrameStream }).stream = new FrameStream(
      socket,
      {
        message: (message) => this.onMessage(session, message),
        closed: (error) => {
          if (error !== null && closeReason === "closed") closeReason = error.message;
          session.state = { ...session.state, phase: "closed" };
          session.wake?.();
          session.parked?.();
          for (const reply of session.replies.values()) reply(null);
          session.replies.clear();
          finish(closeReason);
        },
      },
      { messagesBytesMax: replicationMessagesBytesMax, nowMs: () => clock.nowMs(), clock },
    );
    this.session = session;
    this.stateName = "handshaking";
    const log = this.group.log;
    session.stream.send({
      kind: "hello",
      versionMin: protocolVersionMin,
      versionMax: protocolVersionMax,
      role: "primary",
      generation: log.generation,
      durableLsn: 0n, // the primary's own position plays no part in the handshake
      appliedLsn: 0n,
      durableChecksum: 0,
      node: this.environment.node,
      group: this.group.name,
    });
    const stopTicker = clockRepeat(clock, linkHeartbeatMs, () => {
      // Silence counts from the last bytes received (a peer busy applying still talks TCP).
      if (session.stream.heardAtMs > session.state.heardAtMs) session.state = { ...session.state, heardAtMs: session.stream.heardAtMs };
      this.step(session, { kind: "tick" });
    });
    const stopCutter = this.settingsValue.mode === "periodic" ? clockRepeat(clock, this.settingsValue.intervalMs, () => this.cut(session)) : null;
    return closed.finally(() => {
      this.stats.bytesSent += session.stream.bytesSent; // every byte of the connection's frames
      stopTicker();
      stopCutter?.();
      if (this.session === session) this.session = null;
    });
  }

  private step(session: Session, input: SenderInput): SenderEffect[] {
    const nowMs = this.environment.clock.nowMs();
    const [state, effects] = senderStep(session.state, input, nowMs, { group: this.group.name, peer: this.peer, generation: this.group.log.generation }, { silenceMsMax: linkSilenceMsMax });
    session.state = state;
    for (const effect of effects) this.perform(session, effect, nowMs);
    return effects;
  }

  private perform(session: Session, effect: SenderEffect, nowMs: number): void {
    switch (effect.kind) {
      case "reject":
        session.stream.reject(effect.reason, effect.text, new OperatingError("LINK_REJECTED", { peer: this.peer, reason: effect.reason, text: effect.text }));
        return;
      case "close":
        this.logger.warn({ peer: this.peer, reason: effect.reason }, "link closing");
        session.close(effect.reason);
        return;
      case "progress":
        this.onProgress(session);
        return;
      case "heartbeat":
        if (session.protocolVersion > 0 && nowMs - session.stream.sentAtMs >= linkHeartbeatMs) session.stream.send({ kind: "heartbeat", timestampMs: nowMs, echoTimestampMs: effect.echoTimestampMs });
        return;
      case "accept":
        void this.startStream(session, effect.protocolVersion, effect.decision).catch((error: unknown) => session.close(`stream failed: ${(error as Error).message}`));
        return;
    }
  }

  private async onMessage(session: Session, message: Message): Promise<void> {
    switch (message.kind) {
      case "hello": {
        // The start point must agree with the bitmap: wait for a fold under way, and let none
        // begin until the stream has started (then the link counts as streaming).
        this.helloInProgress = true;
        try {
          while (this.folding !== null) await this.folding;
          await this.answerHello(session, message);
        } finally {
          this.helloInProgress = false;
        }
        return;
      }
      case "ack":
        session.peerConsistent = message.consistent;
        this.step(session, { kind: "ack", ack: message });
        return;
      case "heartbeat":
        this.step(session, { kind: "heartbeat", heartbeat: message });
        return;
      case "reject":
        this.step(session, { kind: "reject", reject: message });
        return;
      case "hashReply":
      case "twinList": {
        const reply = session.replies.get(message.requestId);
        if (reply === undefined) {
          this.step(session, { kind: "protocolError", reason: `${message.kind} to unknown request ${message.requestId}` });
          return;
        }
        session.replies.delete(message.requestId);
        reply(message);
        return;
      }
      default:
        this.step(session, { kind: "protocolError", reason: `${message.kind} from a peer` });
    }
  }

  private async answerHello(session: Session, hello: Hello): Promise<void> {
    const log = this.group.log;
    const usage = log.usage();
    // A peer at LSN 0 continues our log only if it never held more (a wiped peer is resynced).
    const checksumAtPeerDurable = hello.durableLsn === 0n && this.progress.peerDurableLsn > 0n ? null : await log.previousChecksumOf(hello.durableLsn + 1n);
    this.step(session, {
      kind: "hello",
      hello,
      context: { tailLsn: usage.tailLsn, headLsn: usage.headLsn, checksumAtPeerDurable, bitmapActive: this.progress.bitmapActive, bitmapCoveredLsn: this.progress.coveredLsn, bitmapBaseLsn: this.progress.bitmapBaseLsn },
    });
  }

  // ---- Streaming ----

  private async startStream(session: Session, protocolVersion: number, decision: StartDecision): Promise<void> {
    const log = this.group.log;
    if (decision.start === "resync" && decision.seedAllocated) await this.seedFullResync();
    const resumeLsn = decision.start === "resync" && decision.seedAllocated ? this.progress.coveredLsn + 1n : decision.resumeLsn;
    const previousChecksum = await log.previousChecksumOf(resumeLsn);
    if (previousChecksum === null) throw new OperatingError("OUT_OF_RANGE", { what: "link resume point no longer in the log", lsn: resumeLsn });
    session.state = { ...session.state, sentLsn: resumeLsn - 1n, receivedLsn: decision.start === "log" ? session.state.receivedLsn : resumeLsn - 1n, durableLsn: decision.start === "log" ? session.state.durableLsn : resumeLsn - 1n };
    session.stream.send({ kind: "accept", protocolVersion, start: decision.start, resumeLsn, previousChecksum, logId: log.logId, intervals: this.settingsValue.mode === "periodic" });
    session.protocolVersion = protocolVersion;
    this.streamedThisSession = true;
    session.cutLsn = resumeLsn - 1n;
    this.connectedAtMs = this.environment.clock.nowMs();
    this.lastError = null;
    this.logger.info({ peer: this.peer, start: decision.start, resumeLsn: String(resumeLsn) }, "link streaming");
    // The peer holds every record before resumeLsn (log), or will once the bitmap's regions
    // are resent (resync: its log copy restarts at resumeLsn).
    this.progress.peerDurableLsn = resumeLsn - 1n;
    if (decision.start === "resync") this.progress.peerAppliedLsn = resumeLsn - 1n;
    session.cursor = log.cursor(resumeLsn);
    session.controls.push({ atLsn: resumeLsn - 1n, message: this.volumeTable(resumeLsn - 1n) });
    if (decision.start === "resync") {
      this.stateName = "resyncing";
      // Sync writes that began waiting for this peer before it turned out to need a resync
      // (while the link handshook) go on now, as new ones do during it: the peer is no copy
      // until the resync ends, and a waiting write holds its range, which the resync's reads
      // of that range would wait for while no record is sent.
      this.releaseWaiters();
      await this.runResync(session);
      // A session that dropped during its resync returns here late, perhaps while a newer one
      // resyncs: the state is the newer one's (a sync write would otherwise wait for a peer
      // whose link is busy building twins, which waits for that write's operation to end).
      if (this.session !== session || session.state.phase !== "streaming") return;
    }
    this.stateName = "streaming";
    await this.pumpRecords(session, null);
  }

  private volumeTable(atLsn: bigint): VolumeTable {
    const volumes = this.group.volumeList().map((volume) => ({ volumeId: volume.id, name: volume.name, size: volume.size })).sort((a, b) => a.volumeId - b.volumeId);
    return { kind: "volumeTable", atLsn, volumes };
  }

  // The group's volumes changed (created, deleted, resized) with the group quiet: the bitmap
  // follows their sizes. The change reaches the peer as an operation record at its point
  // (group/operation.ts), or in the volume table every stream starts with.
  volumesChanged(): void {
    for (const volume of this.group.volumeList()) this.bitmap?.setVolume(volume.id, volume.size);
  }

  // Sends records (and queued volume tables at their places) until throughLsn has been sent;
  // null: forever, waiting for new records (and, periodic, sending at interval cuts only).
  private async pumpRecords(session: Session, throughLsn: bigint | null): Promise<void> {
    const log = this.group.log;
    for (;;) {
      if (session.state.phase !== "streaming") return;
      if (session.hold !== null) {
        session.parked?.();
        session.parked = null;
        await session.hold;
        continue;
      }
      const sent = session.state.sentLsn;
      const table = session.controls[0];
      if (table !== undefined && table.atLsn <= sent) {
        session.controls.shift();
        if (!session.stream.send(table.message)) await session.stream.drained();
        continue;
      }
      if (throughLsn !== null && sent >= throughLsn) return;
      const periodic = this.settingsValue.mode === "periodic" && throughLsn === null;
      let limit = throughLsn ?? (periodic ? session.cutLsn : log.headLsn);
      if (table !== undefined && table.atLsn < limit) limit = table.atLsn;
      if (sent < limit) {
        await log.written(sent + 1n);
        await this.sendBatch(session, limit, periodic && limit === session.cutLsn);
        continue;
      }
      await new Promise<void>((resolve) => {
        session.wake = resolve;
        if (!periodic && throughLsn === null) void log.appended(sent).then(resolve, () => session.close("the group's log failed")); // a failed log rejects at once: resolving would spin
      });
      session.wake = null;
    }
  }

  // Whether records logged now reach the peer in the stream (not folded into a bitmap).
  get carriesInBand(): boolean {
    return !this.progress.bitmapActive;
  }

  get mode(): string {
    return this.settingsValue.mode;
  }

  // Periodic: an operation ends the interval, so the secondary applies the changes before it
  // and then the operation without waiting for the next cut.
  operationLogged(lsn: bigint): void {
    const session = this.session;
    if (this.settingsValue.mode !== "periodic" || session === null || session.state.phase !== "streaming") return;
    if (lsn > session.cutLsn) session.cutLsn = lsn;
    session.wake?.();
  }

  private cut(session: Session): void {
    if (session.state.phase !== "streaming") return;
    session.cutLsn = this.group.log.headLsn;
    session.wake?.();
  }

  // The record after `lsn − 1`, read back from the log (the ship cache no longer holds it).
  private async recordReadBack(session: Session, lsn: bigint): Promise<LogRecord | null> {
    if (session.cursor === null || session.cursor.nextLsn !== lsn) session.cursor = this.group.log.cursor(lsn);
    return session.cursor.next();
  }

  private async sendBatch(session: Session, limitLsn: bigint, closesInterval: boolean): Promise<void> {
    const writtenLsn = this.group.log.usage().writtenLsn;
    const records: LogRecord[] = [];
    let bytes = 0;
    while (records.length < replicationBatchRecordsMax && bytes < linkBatchBytesMax) {
      const nextLsn = session.state.sentLsn + 1n + BigInt(records.length);
      // From the log's ship cache without an await when it still holds the record (the common
      // case, one microtask saved per record), else read back.
      const record = session.carry ?? (nextLsn <= limitLsn && nextLsn <= writtenLsn ? (this.group.log.recent(nextLsn) ?? (await this.recordReadBack(session, nextLsn))) : null);
      session.carry = null;
      if (record === null) break;
      if (record.lsn > limitLsn || (records.length > 0 && recordsBatchHeaderSize + bytes + recordHeaderSize + record.payloadSize > replicationFramePayloadSizeMax)) {
        session.carry = record; // the next batch starts with it
        break;
      }
      assert(record.lsn === session.state.sentLsn + 1n + BigInt(records.length), "link cursor out of step");
      assert(!recordDataOmitted(record), () => `link to ${this.peer}: record ${record.lsn} was logged without its data (GroupLinks.needsData)`);
      records.push(record);
      bytes += recordHeaderSize + record.payloadSize;
    }
    if (records.length === 0) return;
    await this.windowRoom(session, bytes);
    if (session.state.phase !== "streaming") return;
    if (this.stateName === "resyncing") for (const record of records) if (isOperationKind(record.kind)) this.operationDuringResync(record);
    const lastLsn = records[records.length - 1]!.lsn;
    const ok = session.stream.send({
      kind: "records",
      records,
      ackNow: this.settingsValue.mode === "sync",
      intervalEnd: closesInterval && lastLsn === session.cutLsn,
      recordChecksums: session.protocolVersion >= protocolVersionRecordChecksums,
    });
    session.inFlight.push({ lastLsn, bytes });
    session.inFlightBytes += bytes;
    this.stats.recordsSent += records.length;
    this.stats.recordBytesSent += bytes;
    this.step(session, { kind: "sent", lastLsn });
    this.onShipped?.();
    if (!ok) await session.stream.drained();
  }

  // The last LSN this link has sent while streaming; null when it is not streaming (it does
  // not hold the log's ship cache: a reconnect reads records back from the log).
  get shippedLsn(): bigint | null {
    const session = this.session;
    return session === null || session.state.phase !== "streaming" ? null : session.state.sentLsn;
  }

  // Flow control: record bytes sent and not yet acknowledged as received stay under the window.
  private async windowRoom(session: Session, bytes: number): Promise<void> {
    while (session.inFlightBytes > 0 && session.inFlightBytes + bytes > linkBytesInFlightMax && session.state.phase === "streaming") {
      await new Promise<void>((resolve) => (session.wake = resolve));
      session.wake = null;
    }
  }

  private onProgress(session: Session): void {
    const { receivedLsn, durableLsn, appliedLsn } = session.state;
    while (session.inFlight.length > 0 && session.inFlight[0]!.lastLsn <= receivedLsn) {
      session.inFlightBytes -= session.inFlight.shift()!.bytes;
    }
    session.wake?.();
    this.progress.peerDurableLsn = durableLsn > this.progress.peerDurableLsn ? durableLsn : this.progress.peerDurableLsn;
    this.progress.peerAppliedLsn = appliedLsn;
    if (session.resyncEndLsn !== null && appliedLsn >= session.resyncEndLsn && session.peerConsistent) void this.resyncApplied(session);
    this.wakeWaiters();
  }

  // Sync waiters need the peer's durability; drain waiters its application, and a consistent peer.
  private wakeWaiters(): void {
    const { peerDurableLsn, peerAppliedLsn, bitmapActive } = this.progress;
    this.progressWaiters = this.progressWaiters.filter((waiter) => {
      const reached = waiter.applied ? peerAppliedLsn >= waiter.lsn && !bitmapActive : peerDurableLsn >= waiter.lsn;
      if (reached) waiter.resolve();
      return !reached;
    });
  }

  // ---- Resync ----

  // Marks every allocated region, with the group quiet: for a peer whose history is not ours.
  private async seedFullResync(): Promise<void> {
    await this.group.quiesce(async () => {
      this.bitmap = this.emptyBitmap();
      for (const volume of this.group.volumeList()) {
        for await (const region of allocatedRegions(volume.file, volume.size)) this.bitmap.mark(volume.id, region.offset, region.length);
      }
      this.bitmapMarks += 1;
      this.progress = { ...this.progress, bitmapActive: true, coveredLsn: this.group.log.headLsn, bitmapBaseLsn: null, twinsStale: "all" };
      await this.saveBitmap();
      await this.persistProgress();
    });
  }

  // Sends one read-ahead piece of a resync once its read is done; false when the session ended.
  private async resyncSend(session: Session, read: ResyncRead): Promise<boolean> {
    const atLsn = await read.atLsn;
    await this.pumpRecords(session, atLsn);
    if (session.state.phase !== "streaming") return false;
    const { data } = read;
    const zero = isZero(data);
    const ok = session.stream.send({ kind: "regionData", volumeId: read.volumeId, offset: read.offset, length: data.length, data: zero ? null : data });
    if (this.resync !== null) this.resync.sentBytes += data.length;
    this.stats.regionBytesSent += zero ? 16 : data.length + 16;
    if (!ok) await session.stream.drained();
    return true;
  }

  private async runResync(session: Session): Promise<void> {
    const bitmap = this.bitmap;
    assert(bitmap !== null, "resync without a bitmap");
    session.resyncMarks = this.bitmapMarks;
    this.resync = { totalBytes: bitmap.dirtyBytes, sentBytes: 0, startedAtMs: this.environment.clock.nowMs() };
    this.logger.info({ peer: this.peer, dirtyBytes: bitmap.dirtyBytes }, "resync started");
    const volumes = new Map(this.group.volumeList().map((volume) => [volume.id, volume]));
    // Reads run ahead of the sends (resyncReadsInflightMax pieces): one piece's read at a time
    // left a resync of scattered regions waiting on one disk read after another. Pieces are
    // still sent in order, each after the records through the LSN its read was taken at.
    const reads: ResyncRead[] = [];
    for (const piece of bitmap.runs(bitmapPieceBytes)) {
      if (session.state.phase !== "streaming") return;
      const volume = volumes.get(piece.volumeId);
      if (volume === undefined || piece.offset >= volume.size) continue;
      const length = Math.min(piece.length, volume.size - piece.offset);
      session.stream.send({ kind: "bitmapRegions", regions: [{ volumeId: piece.volumeId, offset: piece.offset, length }] });
      const data = Buffer.allocUnsafe(length);
      const atLsn = this.group.readOrdered(volume, piece.offset, data);
      atLsn.catch(() => undefined); // awaited in turn below; a session that ends first drops it
      reads.push({ volumeId: piece.volumeId, offset: piece.offset, data, atLsn });
      if (reads.length < resyncReadsInflightMax) continue;
      if (!(await this.resyncSend(session, reads.shift()!))) return;
    }
    while (reads.length > 0) if (!(await this.resyncSend(session, reads.shift()!))) return;
    if (session.state.phase !== "streaming") return;
    await this.pumpRecords(session, session.state.sentLsn); // volume tables queued at this point go first
    if (session.state.phase !== "streaming") return;
    await this.buildTwins(session);
    if (session.state.phase !== "streaming") return;
    if (this.bitmapMarks !== session.resyncMarks) {
      // Regions were marked while it ran (a restore from a twin that was not yet right there
      // changed the peer's volume wrongly): the peer must not be told it is consistent. It stays
      // inconsistent, behind its protective snapshot, and the next connection resyncs again.
      session.close("regions marked during the resync: resync again before the peer is consistent");
      return;
    }
    session.resyncEndLsn = session.state.sentLsn;
    session.stream.send({ kind: "resyncEnd", consistentLsn: session.state.sentLsn });
    this.logger.info({ peer: this.peer, consistentLsn: String(session.state.sentLsn), regionBytesSent: this.resync.sentBytes }, "resync sent");
  }

  // The peer applied the resync: its volumes are consistent and durable. The bitmap goes,
  // unless regions were marked while the resync ran (then the next connection resyncs them).
  private async resyncApplied(session: Session): Promise<void> {
    session.resyncEndLsn = null;
    this.stats.resyncsCompleted += 1;
    this.resync = null;
    if (this.bitmapMarks !== session.resyncMarks) {
      // Regions were marked while the resync ran: another one is needed, on a new connection.
      this.logger.info({ peer: this.peer }, "resync applied, but regions were marked meanwhile: resyncing again");
      session.close("regions marked during the resync: resync again");
      return;
    }
    this.bitmap = null;
    // the twins are built too, unless a change to one was missed after the build
    const twinsStale = session.twinMarks === this.twinMarks ? [] : this.progress.twinsStale;
    this.progress = { ...this.progress, bitmapActive: false, resyncs: this.progress.resyncs + 1, twinsStale };
    await this.persistProgress();
    await scheduleIo(this.files.bitmap, () => fsp.rm(this.files.bitmap, { force: true }));
    this.logger.info({ peer: this.peer }, "resync complete: peer consistent");
    this.wakeWaiters();
  }

  // ---- Verify ----

  // Compares the peer's volumes with ours, region by region, at exact points of the stream.
  async verify(regionBytes: number): Promise<LinkVerifyReport> {
    const session = this.session;
    if (session === null || this.stateName !== "streaming") {
      throw new OperatingError(this.progress.bitmapActive ? "REPLICA_INCONSISTENT" : "PEER_UNREACHABLE", { peer: this.peer, state: this.stateName });
    }
    const chunkBytes = regionBytes * verifyRegionsPerRequestMax;
    const buffer = Buffer.allocUnsafe(chunkBytes);
    const differing: LinkVerifyReport["differing"] = [];
    let bytesCompared = 0;
    let differingBytes = 0;
    // the volumes, then every snapshot twin of each
    const images = this.group.volumeList().flatMap((volume) => [
      { volume, snapshot: null as SnapshotImageView | null, size: volume.size },
      ...(this.group.operations?.snapshotImages(volume) ?? []).map((snapshot) => ({ volume, snapshot: snapshot as SnapshotImageView | null, size: snapshot.size })),
    ]);
    for (const { volume, snapshot, size } of images) {
      for (let offset = 0; offset < size; offset += chunkBytes) {
        const data = buffer.subarray(0, Math.min(chunkBytes, size - offset));
        const count = Math.ceil(data.length / regionBytes);
        const { requestId, reply } = this.expectReply(session);
        await this.holdPump(session, async () => {
          const atLsn = snapshot === null ? await this.group.readOrdered(volume, offset, data) : await this.group.readOrderedSnapshot(snapshot, offset, data);
          session.controls.push({ atLsn, message: { kind: "hashRequest", requestId, volumeId: volume.id, regionBytes, count, offset, snapshot: snapshot?.name ?? null } });
        });
        const local = Buffer.concat(Array.from({ length: count }, (_, index) => regionDigest(data.subarray(index * regionBytes, Math.min(data.length, (index + 1) * regionBytes)))));
        const answer = await reply;
        if (answer === null) throw new OperatingError("PEER_UNREACHABLE", { peer: this.peer, what: "link dropped during verify" });
        if (answer.kind !== "hashReply") {
          this.step(session, { kind: "protocolError", reason: `${answer.kind} answered a hashRequest` });
          throw new OperatingError("PEER_UNREACHABLE", { peer: this.peer, what: "peer answered verify with another message" });
        }
        const remote = answer.digests;
        if (remote.length > local.length || remote.length % 16 !== 0) {
          this.step(session, { kind: "protocolError", reason: `hashReply with ${remote.length / 16} digests for ${count} regions` });
          throw new OperatingError("PEER_UNREACHABLE", { peer: this.peer, what: "peer answered verify with too many digests" });
        }
        const difference = hashesDiffer(local, remote, regionBytes, Math.min(size, offset + data.length), offset / regionBytes);
        const image = snapshot === null ? volume.name : `${volume.name}@${snapshot.name}`;
        for (const region of difference.regions) differing.push({ volume: image, offset: region.offset, length: region.length });
        differingBytes += difference.differingBytes;
        bytesCompared += data.length;
      }
    }
    return { peer: this.peer, regionBytes, bytesCompared, differingBytes, differing: differing.slice(0, verifyDifferencesReportedMax) };
  }

  // A request id and the peer's answer to it (hashReply, twinList; null: the link dropped).
  private expectReply(session: Session): { requestId: number; reply: Promise<Message | null> } {
    const requestId = session.nextRequestId++;
    return { requestId, reply: new Promise((resolve) => session.replies.set(requestId, resolve)) };
  }

  // Runs action with the record pump parked between frames, so that nothing is sent while it
  // picks its point of the stream; then the pump goes on.
  private async holdPump(session: Session, action: () => Promise<void>): Promise<void> {
    while (session.hold !== null) await session.hold;
    let release!: () => void;
    session.hold = new Promise((resolve) => (release = resolve));
    try {
      await new Promise<void>((resolve) => {
        session.parked = resolve;
        session.wake?.();
        if (session.state.phase !== "streaming") resolve();
      });
      await action();
    } finally {
      session.hold = null;
      release();
    }
  }

  // ---- What the group asks ----

  // The last LSN the log may release for this link. A link in bitmap mode that is not
  // streaming folds the records up to appliedLsn into its bitmap first; a lagging link whose
  // share of the log passed the overflow ratio switches to its bitmap (policy `bitmap`).
  async releaseLimit(appliedLsn: bigint, logFill: number): Promise<bigint> {
    const streaming = this.helloInProgress || (this.session !== null && this.session.state.phase === "streaming");
    // With a bitmap, the peer lacks the bitmap's regions and the records after the later of
    // coveredLsn and its durable LSN (a resync streams records; the next one continues them).
    const held = this.progress.bitmapActive && this.progress.coveredLsn > this.progress.peerDurableLsn ? this.progress.coveredLsn : this.progress.peerDurableLsn;
    if (this.progress.bitmapActive && !streaming) {
      if (appliedLsn > held) await this.foldIntoBitmap(held, appliedLsn);
      return appliedLsn;
    }
    const limit = held;
    if (limit >= appliedLsn) return appliedLsn;
    if (logFill > linkOverflowFillRatio && this.settingsValue.overflow === "bitmap") {
      this.stats.overflows += 1;
      this.logger.warn({ peer: this.peer, peerDurableLsn: String(limit), appliedLsn: String(appliedLsn), logFill }, "link overflows the log: switching to its dirty-region bitmap");
      this.session?.close("log overflow: switching to a bitmap resync");
      await this.foldIntoBitmap(limit, appliedLsn);
      return appliedLsn;
    }
    return limit;
  }

  // Marks the regions of records (fromLsn, toLsn] (still in the log) and persists the bitmap
  // before coveredLsn says so.
  private async foldIntoBitmap(fromLsn: bigint, toLsn: bigint): Promise<void> {
    const fold = this.foldRecords(fromLsn, toLsn);
    this.folding = fold;
    try {
      await fold;
    } finally {
      if (this.folding === fold) this.folding = null;
    }
  }

  private async foldRecords(fromLsn: bigint, toLsn: bigint): Promise<void> {
    this.bitmap ??= this.emptyBitmap();
    const bitmap = this.bitmap;
    await this.group.log.written(toLsn);
    const cursor = this.group.log.cursor(fromLsn + 1n);
    const firstVolumeId = plantedBug("fold-skips-mark") ? Math.min(...this.group.volumeList().map((volume) => volume.id)) : null;
    while (cursor.nextLsn <= toLsn) {
      const record = await cursor.next();
      if (record === null) break;
      if (record.kind === RecordKind.write || record.kind === RecordKind.zero || record.kind === RecordKind.trim) this.markClipped(bitmap, firstVolumeId === null ? record : { ...record, volumeId: firstVolumeId });
      else if (isOperationKind(record.kind)) this.markMissedOperation(bitmap, record);
      else if (isSnapshotChangeKind(record.kind)) {
        this.stats.operationsMissed += 1;
        this.markTwinStale(record.volumeId, decodeSnapshotChangeName(record.payload, record.lsn)); // the twin falls behind
      }
    }
    this.bitmapMarks += 1;
    await this.saveBitmap();
    const bitmapBaseLsn = this.progress.bitmapActive ? this.progress.bitmapBaseLsn : fromLsn;
    this.progress = { ...this.progress, bitmapActive: true, coveredLsn: toLsn, bitmapBaseLsn };
    await this.persistProgress();
  }

  // An operation this link will not carry at its point (folded into the bitmap). A restore
  // changes its volume wherever the snapshot differs, which only the primary's metadata knows
  // here: the whole volume is marked. Snapshot operations leave the peer's twins behind; the
  // peer finds them missing when a later operation names them (docs/DESIGN-NOTES.md §8).
  private markMissedOperation(bitmap: DirtyBitmap, record: LogRecord): void {
    this.stats.operationsMissed += 1;
    const set = decodeOperationSet(record.payload, record.lsn);
    for (const operation of set.operations) {
      // a volume attached, resized or detached: the volume table that starts the next stream has it
      if (isVolumeOperation(operation)) continue;
      if (operation.op === "snapshot.restore") this.markWholeVolume(bitmap, operation.volumeId);
      else this.markTwinStale(operation.volumeId, operation.snapshot); // what it creates, deletes, refreshes or syncs into: built again after the resync
    }
    this.logger.warn({ lsn: String(record.lsn), operations: set.operations.map((operation) => operation.op) }, "an operation folded into the link's bitmap: the peer does not perform it at its point");
  }

  // A twin the peer may have wrong (the link missed a change to it, or the change came in a
  // resync and read an image that was not yet right there): built again after the resync.
  private markTwinStale(volumeId: number, name: string): void {
    const stale = this.progress.twinsStale;
    const key = `${volumeId}:${name}`;
    if (stale === "all" || stale.includes(key)) return;
    this.twinMarks += 1;
    this.progress = { ...this.progress, twinsStale: stale.length >= linkTwinsStaleMax ? "all" : [...stale, key] };
  }

  private staleTwins(volumeId: number): Set<string> | null {
    const stale = this.progress.twinsStale;
    if (stale === "all") return null;
    const prefix = `${volumeId}:`;
    return new Set(stale.filter((key) => key.startsWith(prefix)).map((key) => key.slice(prefix.length)));
  }

  // An operation streamed during a resync runs on the peer's images before they are right: the
  // volume is part old, and a twin may be missing or stale. What it creates, refreshes or syncs
  // into is built again at the end; a restore from a stale twin marks its whole volume, which a
  // further resync sends (the peer restored from the wrong content).
  private operationDuringResync(record: LogRecord): void {
    const set = decodeOperationSet(record.payload, record.lsn);
    for (const operation of set.operations) {
      if (operation.op === "snapshot.create" || operation.op === "snapshot.refresh" || operation.op === "snapshot.sync") this.markTwinStale(operation.volumeId, operation.snapshot);
      if (operation.op !== "snapshot.restore" || this.bitmap === null) continue;
      const stale = this.staleTwins(operation.volumeId);
      if (stale !== null && !stale.has(operation.snapshot)) continue;
      this.markWholeVolume(this.bitmap, operation.volumeId);
      this.bitmapMarks += 1;
      void this.saveBitmap();
    }
  }

  // ---- Twins when the exact point was lost (replication/twins.ts) ----

  // At the end of a resync, with the peer's volumes equal to ours: asks the peer for its twins,
  // freezes our images at one point X (the group quiet for an O(1) copy of each), sends the
  // records through X, then for each volume the catalog and the regions where each twin to
  // build differs from its base, all before any record after X.
  private async buildTwins(session: Session): Promise<void> {
    const performer = this.group.operations;
    const stale = this.progress.twinsStale;
    if (performer === null || performer === undefined || (stale !== "all" && stale.length === 0)) {
      session.twinMarks = this.twinMarks;
      return;
    }
    const startedMs = this.environment.clock.nowMs();
    const bytesBefore = session.stream.bytesSent;
    const volumes = this.group.volumeList();
    const lists = new Map<number, readonly Twin[]>();
    for (const volume of volumes) {
      const { requestId, reply } = this.expectReply(session);
      session.stream.send({ kind: "twinListRequest", requestId, volumeId: volume.id });
      const answer = await reply;
      if (answer === null) return; // the link dropped: the next resync builds them
      if (answer.kind !== "twinList" || answer.volumeId !== volume.id) {
        this.step(session, { kind: "protocolError", reason: `${answer.kind} answered a twinListRequest for volume ${volume.id}` });
        return;
      }
      lists.set(volume.id, answer.twins);
    }
    const { result: frozen } = await this.group.quiesce(async () => ({ atLsn: this.group.log.headLsn, images: await Promise.all(volumes.map((volume) => performer.freezeTwins(volume))) }));
    let built = 0;
    let kept = 0;
    let peerDeletes = 0;
    let regionBytes = 0;
    try {
      await this.pumpRecords(session, frozen.atLsn); // marks what operations in it make stale
      const marks = this.twinMarks;
      await this.persistProgress();
      for (const [index, volume] of volumes.entries()) {
        if (session.state.phase !== "streaming") return;
        const images = frozen.images[index]!;
        const peer = lists.get(volume.id)!;
        const catalog = planTwins(images.catalog, peer, this.staleTwins(volume.id));
        if (catalog.length === 0 && peer.length === 0) continue;
        peerDeletes += doomedTwins(peer, images.catalog).length;
        session.stream.send({ kind: "twinCatalog", volumeId: volume.id, twins: catalog });
        for (const twin of catalog) {
          if (!twin.build) {
            kept += 1;
            continue;
          }
          built += 1;
          for (const region of images.diffRegions(twin.name, keptBase(twin, catalog))) {
            const end = Math.min(region.offset + region.length, twin.size);
            for (let offset = region.offset; offset < end; offset += bitmapPieceBytes) {
              if (session.state.phase !== "streaming") return;
              const length = Math.min(bitmapPieceBytes, end - offset);
              const data = Buffer.allocUnsafe(length);
              await images.read(twin.name, offset, data);
              const zero = isZero(data);
              const ok = session.stream.send({ kind: "twinRegion", volumeId: volume.id, twin: twin.name, offset, length, data: zero ? null : data });
              regionBytes += length;
              if (!ok) await session.stream.drained();
            }
          }
        }
      }
      session.twinMarks = marks;
      const bytesSent = session.stream.bytesSent - bytesBefore;
      this.stats.twinsBuilt += built;
      this.stats.twinBytesSent += bytesSent;
      this.lastTwinBuild = { atLsn: String(frozen.atLsn), built, kept, peerDeletes, regionBytes, bytesSent, ms: this.environment.clock.nowMs() - startedMs };
      this.logger.info({ peer: this.peer, ...this.lastTwinBuild }, "twins built on the peer after the resync");
    } finally {
      await Promise.all(frozen.images.map((images) => images.release()));
    }
  }

  // Marks regions that may differ (hot extents after a crash) for the next resync.
  async markRegions(regions: readonly VolumeRegion[]): Promise<void> {
    if (regions.length === 0) return;
    // (the peer may hold records past our head that a crash took from us: the bitmap covers
    // through what we still have; the hello finds the rest and resyncs them)
    const through = this.progress.peerDurableLsn < this.group.log.headLsn ? this.progress.peerDurableLsn : this.group.log.headLsn;
    if (!this.progress.bitmapActive) this.progress = { ...this.progress, coveredLsn: through, bitmapBaseLsn: through };
    this.bitmap ??= this.emptyBitmap();
    for (const region of regions) this.markClipped(this.bitmap, region);
    this.bitmapMarks += 1;
    await this.saveBitmap();
    this.progress = { ...this.progress, bitmapActive: true };
    await this.persistProgress();
  }

  // Every region of a volume (a restore changed it wherever the snapshot differs, which only
  // the primary's metadata knows).
  private markWholeVolume(bitmap: DirtyBitmap, volumeId: number): void {
    this.markClipped(bitmap, { volumeId, offset: 0, length: Number.MAX_SAFE_INTEGER });
  }

  // Marks a range of a volume that still exists, cut at its current end (a shrink may have
  // removed the rest since the record was written).
  private markClipped(bitmap: DirtyBitmap, range: { volumeId: number; offset: number; length: number }): void {
    const volume = this.group.volumeList().find((candidate) => candidate.id === range.volumeId);
    if (volume === undefined || range.offset >= volume.size) return;
    if (!bitmap.hasVolume(volume.id)) bitmap.setVolume(volume.id, volume.size);
    bitmap.mark(volume.id, range.offset, Math.min(range.length, volume.size - range.offset));
  }

  // sync links: resolves once the peer has record lsn durable; null when this link does not
  // hold writes back (not sync, or not streaming: a sync link that is down degrades, and says so).
  syncWait(lsn: bigint): Promise<void> | null {
    if (this.settingsValue.mode !== "sync") return null;
    const session = this.session;
    if (session === null || session.state.phase !== "streaming" || this.stateName === "resyncing") return null;
    if (session.state.durableLsn >= lsn) return null;
    return new Promise((resolve) => this.progressWaiters.push({ lsn, applied: false, resolve }));
  }

  // Resolves once the peer has applied lsn; rejects TIMEOUT after msMax.
  appliedWait(lsn: bigint, msMax: number): Promise<void> {
    if (this.progress.peerAppliedLsn >= lsn && !this.progress.bitmapActive) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const cancel = this.environment.clock.setTimeout(() => {
        this.progressWaiters = this.progressWaiters.filter((waiter) => waiter !== entry);
        reject(new OperatingError("TIMEOUT", { what: "drain", peer: this.peer, lsn, appliedLsn: this.progress.peerAppliedLsn }));
      }, msMax);
      const entry = { lsn, applied: true, resolve: () => (cancel(), resolve()) };
      this.progressWaiters.push(entry);
    });
  }

  // Sync waiters are released when the link drops or starts a resync (the write proceeds; the
  // link is degraded).
  private releaseWaiters(): void {
    this.progressWaiters = this.progressWaiters.filter((waiter) => {
      if (!waiter.applied) waiter.resolve();
      return waiter.applied;
    });
  }

  // ---- Persistence and status ----

  private async saveBitmap(): Promise<void> {
    if (this.bitmap !== null) await dirtyBitmapSave(this.files.bitmap, this.bitmap);
  }

  async persistProgress(): Promise<void> {
    const snapshot = { ...this.progress };
    if (JSON.stringify(snapshot, bigintText) === JSON.stringify(this.persisted, bigintText)) return;
    await writeFileAtomic(this.files.state, `${JSON.stringify(snapshot, bigintText)}\n`);
    this.persisted = snapshot;
  }

  // The numbers a metrics scrape reads (synchronous, no I/O).
  metricsView(): LinkMetricsView {
    const lag = this.group.log.headLsn - this.progress.peerAppliedLsn;
    return {
      group: this.group.name,
      peer: this.peer,
      streaming: this.stateName === "streaming" || this.stateName === "resyncing",
      consistent: !this.progress.bitmapActive,
      durableLsn: this.progress.peerDurableLsn,
      appliedLsn: this.progress.peerAppliedLsn,
      lagRecords: lag > 0n ? Number(lag) : 0,
      recordBytesSent: this.stats.recordBytesSent,
      regionBytesSent: this.stats.regionBytesSent,
      connects: this.stats.connects,
      overflows: this.stats.overflows,
    };
  }

  // How long ago record lsn was written (0 when it does not exist yet; null when the log no
  // longer holds it). Reads one record: for status, not for the write path.
  private async recordAgeMs(lsn: bigint, nowMs: number): Promise<number | null> {
    const log = this.group.log;
    if (lsn > log.headLsn) return 0;
    if (lsn < log.usage().tailLsn) return null;
    try {
      await log.written(lsn);
      const record = await log.cursor(lsn).next();
      return record === null ? null : Math.max(0, nowMs - record.timestampMs);
    } catch {
      return null;
    }
  }

  async status(): Promise<Record<string, unknown>> {
    const nowMs = this.environment.clock.nowMs();
    // Lag: the age of the oldest write the peer has not applied. RPO: of the oldest write the
    // peer does not hold durably (what a loss of this site would lose now).
    const lagMs = await this.recordAgeMs(this.progress.peerAppliedLsn + 1n, nowMs);
    const rpoMs = await this.recordAgeMs(this.progress.peerDurableLsn + 1n, nowMs);
    const session = this.session;
    const headLsn = this.group.log.headLsn;
    const state = session?.state;
    const lagRecords = headLsn - this.progress.peerAppliedLsn;
    const resync = this.resync;
    const rate = resync !== null && nowMs > resync.startedAtMs ? resync.sentBytes / ((nowMs - resync.startedAtMs) / 1000) : 0;
    return {
      peer: this.peer,
      address: `${this.settingsValue.address.host}:${this.settingsValue.address.port}`,
      mode: this.settingsValue.mode,
      intervalMs: this.settingsValue.mode === "periodic" ? this.settingsValue.intervalMs : undefined,
      overflow: this.settingsValue.overflow,
      state: this.stateName,
      paused: this.settingsValue.paused,
      consistent: !this.progress.bitmapActive,
      lastError: this.lastError,
      connectedForMs: this.connectedAtMs === null ? null : nowMs - this.connectedAtMs,
      headLsn: String(headLsn),
      sentLsn: String(state?.sentLsn ?? 0n),
      receivedLsn: String(state?.receivedLsn ?? this.progress.peerDurableLsn),
      durableLsn: String(this.progress.peerDurableLsn),
      appliedLsn: String(this.progress.peerAppliedLsn),
      lagRecords: String(lagRecords > 0n ? lagRecords : 0n),
      lagBytes: this.lagBytes(),
      lagSeconds: lagMs === null ? null : lagMs / 1000,
      rpoSeconds: rpoMs === null ? null : rpoMs / 1000,
      rttMs: state?.rttMs ?? null,
      // the protocol version the connection's accept chose (null: not connected yet)
      protocolVersion: session !== null && session.protocolVersion > 0 ? session.protocolVersion : null,
      bitmap: this.progress.bitmapActive ? { coveredLsn: String(this.progress.coveredLsn), dirtyBytes: this.bitmap?.dirtyBytes ?? 0 } : null,
      twinsStale: this.progress.twinsStale === "all" ? "all" : this.progress.twinsStale.length,
      lastTwinBuild: this.lastTwinBuild,
      resync: resync === null ? null : { totalBytes: resync.totalBytes, sentBytes: resync.sentBytes, percent: resync.totalBytes === 0 ? 100 : Math.floor((resync.sentBytes / resync.totalBytes) * 1000) / 10, bytesPerSecond: Math.round(rate), etaSeconds: rate > 0 ? Math.ceil((resync.totalBytes - resync.sentBytes) / rate) : null },
      // bytesSent counts the closed connections' bytes and, live, the current one's
      stats: { ...this.stats, bytesSent: this.stats.bytesSent + (session?.stream.bytesSent ?? 0) },
    };
  }

  private lagBytes(): number {
    const log = this.group.log;
    const usage = log.usage();
    // Bytes of log the peer has not applied: approximated from the log's use per record.
    const records = usage.headLsn - usage.tailLsn + 1n;
    if (records <= 0n) return 0;
    const behind = usage.headLsn - this.progress.peerAppliedLsn;
    const share = Number(behind > records ? records : behind) / Number(records);
    return Math.round(usage.usedBytes * share);
  }
}

function bigintText(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? String(value) : value;
}

const zeroPiece = Buffer.alloc(bitmapPieceBytes);

// What a twin to build is built on at the peer: the nearest ancestor the peer keeps (a parent
// being built too is, when its child is built, still only its own base), or the volume.
function keptBase(twin: CatalogTwin, catalog: readonly CatalogTwin[]): string | null {
  const byName = new Map(catalog.map((entry) => [entry.name, entry]));
  for (let parent = twin.parent === null ? undefined : byName.get(twin.parent); parent !== undefined; parent = parent.parent === null ? undefined : byName.get(parent.parent)) {
    if (!parent.build) return parent.name;
  }
  return null;
}

function isZero(data: Buffer): boolean {
  return data.equals(zeroPiece.subarray(0, data.length));
}
