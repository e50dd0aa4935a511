// One connection from a primary to this node's replica of a group: the shell around
// link-receiver.ts. The TLS layer has already proved who connected (io/link-tls.ts: the
// link's own CA and the primary's name); here the hello must agree, and then the stream is
// handed to the replica in order: records to its log copy, everything else into its applier's
// stream at the exact point it arrived.
//
// Acknowledgements: a records frame flagged ackNow (sync links) is answered once it is durable
// (the frames after it are appended meanwhile); otherwise the session acknowledges every
// linkAckIntervalMs while anything moved, so the primary can release its log and report lag.

import type { Duplex } from "node:stream";
import { linkAckIntervalMs, linkHeartbeatMs, linkSilenceMsMax, replicaPendingBytesMax, replicationMessagesBytesMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { Logger } from "../logger.js";
import { clockRepeat, type LogClock } from "../log/group-log.js";
import type { Replica } from "../group/replica.js";
import { FrameError } from "./frame-error.js";
import { isOperationKind, type LogRecord, RecordKind, recordDataOmitted } from "../log/record.js";
import { decodeOperationSet, type OperationSet } from "../group/operation.js";
import { FrameStream } from "./frame-stream.js";
import { protocolVersionMax, protocolVersionMin } from "./handshake.js";
import { type ReceiverEffect, type ReceiverExpectation, type ReceiverState, receiverInitial, receiverStep, receiverTick } from "./link-receiver.js";
import type { Message } from "./message.js";
import { hashRequestPerform } from "./verify-hashes.js";

export interface ReplicaSessionContext {
  readonly node: string; // our name
  readonly replica: Replica;
  readonly expected: ReceiverExpectation;
  readonly logger: Logger;
  readonly clock: LogClock;
}

export class ReplicaSession {
  private readonly stream: FrameStream;
  private state: ReceiverState;
  private lastAck = { receivedLsn: -1n, durableLsn: -1n, appliedLsn: -1n, consistent: false };
  private streamReady = false; // the accept has been acted on: acks describe this stream
  // The primary's volumes as of the last volume table received (in stream order): a record
  // that names another volume, or reaches past its end, is refused before it is appended.
  private tableVolumes: Map<number, number> | null = null;
  private readonly stopTimers: () => void;
  readonly closed: Promise<string>;

  constructor(
    socket: Duplex,
    private readonly context: ReplicaSessionContext,
  ) {
    const clock = context.clock;
    this.state = receiverInitial(clock.nowMs());
    let finish!: (reason: string) => void;
    this.closed = new Promise((resolve) => (finish = resolve));
    this.stream = new FrameStream(
      socket,
      {
        message: (message) => this.onMessage(message),
        closed: (error) => {
          this.stopTimers();
          this.state = { ...this.state, phase: "closed" };
          finish(error?.message ?? "closed");
        },
      },
      { messagesBytesMax: replicationMessagesBytesMax, nowMs: () => clock.nowMs(), clock },
    );
    const stopTicker = clockRepeat(clock, linkHeartbeatMs, () => this.tick());
    const stopAcker = clockRepeat(clock, linkAckIntervalMs, () => this.ackIfMoved());
    this.stopTimers = () => {
      stopTicker();
      stopAcker();
    };
  }

  // Closed, and its last message handler has returned: a new session may use the replica.
  async finished(): Promise<void> {
    await this.closed;
    await this.stream.whenIdle();
  }

  close(reason: string): void {
    this.stream.close(new OperatingError("SHUTTING_DOWN", { what: reason }));
  }

  private get replica(): Replica {
    return this.context.replica;
  }

  // Silence is measured from the last bytes received, not the last message handled: a replica
  // busy applying (its handler waiting for room) still hears a live primary.
  private tick(): void {
    const heard = { ...this.state, heardAtMs: Math.max(this.state.heardAtMs, this.stream.heardAtMs) };
    const [state, effects] = receiverTick(heard, this.context.clock.nowMs(), linkSilenceMsMax);
    this.state = state;
    for (const effect of effects) void this.perform(effect, null);
  }

  private async onMessage(message: Message): Promise<void> {
    const [state, effects] = receiverStep(this.state, message, this.context.clock.nowMs(), this.context.expected);
    this.state = state;
    for (const effect of effects) await this.perform(effect, message);
  }

  private async perform(effect: ReceiverEffect, message: Message | null): Promise<void> {
    switch (effect.kind) {
      case "hello": {
        const position = await this.replica.position();
        this.stream.send({
          kind: "hello",
          versionMin: protocolVersionMin,
          versionMax: protocolVersionMax,
          role: "secondary",
          generation: this.replica.log.generation,
          durableLsn: position.durableLsn,
          appliedLsn: position.appliedLsn < position.durableLsn ? position.appliedLsn : position.durableLsn,
          durableChecksum: position.durableLsn === 0n ? 0 : position.durableChecksum,
          node: this.context.node,
          group: this.replica.name,
        });
        return;
      }
      case "begin": {
        const { accept } = effect;
        if (accept.start === "log") {
          if (!this.replica.continues(accept)) throw new FrameError("field", { field: "resumeLsn", reason: "accept does not continue this replica's log", resumeLsn: accept.resumeLsn });
        } else {
          await this.replica.beginResync(accept, this.context.expected.primary);
        }
        this.replica.useIntervals(accept.intervals);
        this.streamReady = true;
        this.context.logger.info({ start: accept.start, resumeLsn: String(accept.resumeLsn) }, "replica streaming");
        return;
      }
      case "records": {
        if (message?.kind !== "records") return;
        this.checkVolumes(message.records);
        await this.replica.appendRecords(message.records);
        const last = message.records[message.records.length - 1]!;
        if (message.intervalEnd) this.replica.intervalEnd(last.lsn);
        if (message.ackNow) this.ackWhenDurable(last.lsn);
        return;
      }
      case "item":
        await this.enqueue(message);
        return;
      case "heartbeat": {
        const nowMs = this.context.clock.nowMs();
        if (nowMs - this.stream.sentAtMs >= linkHeartbeatMs) this.stream.send({ kind: "heartbeat", timestampMs: nowMs, echoTimestampMs: effect.echoTimestampMs });
        return;
      }
      case "reject":
        this.stream.reject(effect.reason, effect.text, new OperatingError("LINK_REJECTED", { group: this.replica.name, reason: effect.reason, text: effect.text }));
        return;
      case "close":
        this.context.logger.warn({ reason: effect.reason }, "replica link closing");
        this.stream.close(new OperatingError("PEER_UNREACHABLE", { what: effect.reason }));
        return;
    }
  }

  private async enqueue(message: Message | null): Promise<void> {
    switch (message?.kind) {
      case "regionData":
        await this.replica.pendingBelow(replicaPendingBytesMax);
        this.replica.enqueue({ kind: "regionData", message }, message.length);
        return;
      case "volumeTable":
        this.tableVolumes = new Map(message.volumes.map((volume) => [volume.volumeId, volume.size]));
        this.replica.enqueue({ kind: "volumeTable", message });
        return;
      case "resyncEnd":
        if (message.consistentLsn !== this.replica.log.headLsn) throw new FrameError("field", { field: "consistentLsn", value: message.consistentLsn, receivedLsn: this.replica.log.headLsn });
        this.replica.enqueue({ kind: "resyncEnd", consistentLsn: message.consistentLsn });
        return;
      case "twinListRequest":
        this.replica.enqueue({ kind: "task", run: async () => void this.stream.send({ kind: "twinList", requestId: message.requestId, volumeId: message.volumeId, twins: this.replica.twinList(message.volumeId) }) });
        return;
      case "twinCatalog":
        this.replica.enqueue({ kind: "twinCatalog", message });
        return;
      case "twinRegion":
        await this.replica.pendingBelow(replicaPendingBytesMax);
        this.replica.enqueue({ kind: "twinRegion", message }, message.length);
        return;
      case "hashRequest":
        await this.replica.pendingBelow(replicaPendingBytesMax);
        this.replica.enqueue({ kind: "task", run: () => hashRequestPerform(this.replica, message, (reply) => this.stream.send(reply)) });
        return;
      default:
        return;
    }
  }

  private checkVolumes(records: readonly LogRecord[]): void {
    for (const record of records) {
      if (isOperationKind(record.kind)) this.followVolumeOperations(record);
      if (record.kind !== RecordKind.write && record.kind !== RecordKind.zero && record.kind !== RecordKind.trim) continue;
      if (recordDataOmitted(record)) throw new FrameError("field", { field: "flags", lsn: record.lsn, reason: "a write record without its data" });
      const size = this.tableVolumes?.get(record.volumeId);
      if (size === undefined) throw new FrameError("field", { field: "volumeId", lsn: record.lsn, volumeId: record.volumeId, reason: "no such volume in the primary's table" });
      if (record.offset + record.length > size) throw new FrameError("field", { field: "offset", lsn: record.lsn, volumeId: record.volumeId, reason: "past the volume's end" });
    }
  }

  // Volumes attached, resized or detached by an operation record: the records after it are
  // checked against the table as it changes. (A record that does not decode stops the applier
  // with LOG_CORRUPT when it gets there; here it changes nothing.)
  private followVolumeOperations(record: LogRecord): void {
    let set: OperationSet;
    try {
      set = decodeOperationSet(record.payload, record.lsn);
    } catch {
      return;
    }
    const table = this.tableVolumes;
    if (table === null) return;
    for (const operation of set.operations) {
      if (operation.op === "volume.attach" || operation.op === "volume.resize") table.set(operation.volumeId, operation.size);
      else if (operation.op === "volume.detach") table.delete(operation.volumeId);
    }
  }

  // A sync frame is answered once its last record is durable, without holding the next frames
  // back: they are appended meanwhile and made durable by the log's next sync, as a group. Waiting
  // here instead gave every frame a sync of its own, one after another (R5: 3.0k sync writes a
  // second at QD16). A log that fails ends the session, as a failed append does.
  private ackWhenDurable(lsn: bigint): void {
    this.replica.log.durable(lsn).then(
      () => {
        if (this.state.phase === "streaming") this.ack();
      },
      (error: unknown) => this.stream.close(error as Error),
    );
  }

  private ack(): void {
    const log = this.replica.log;
    const receivedLsn = log.headLsn;
    const durableLsn = log.durableLsn;
    const applied = this.replica.appliedLsn;
    const appliedLsn = applied < durableLsn ? applied : durableLsn;
    const consistent = this.replica.consistent;
    this.lastAck = { receivedLsn, durableLsn, appliedLsn, consistent };
    this.stream.send({ kind: "ack", receivedLsn, durableLsn, appliedLsn, consistent });
  }

  private ackIfMoved(): void {
    if (this.state.phase !== "streaming" || !this.streamReady) return;
    const log = this.replica.log;
    const last = this.lastAck;
    if (log.headLsn === last.receivedLsn && log.durableLsn === last.durableLsn && this.replica.appliedLsn === last.appliedLsn && this.replica.consistent === last.consistent) return;
    this.ack();
  }
}

// The one session of a replica at a time. A new connection from the primary supersedes the
// current session and starts only once that session's last handler has returned. Of
// connections that arrive while it finishes, only the newest starts: an older one, started
// after it, would restart the replica's copy at a stale point of the primary's log.
export class ReplicaSessionSlot {
  private current: ReplicaSession | null = null; // open
  private last: ReplicaSession | null = null; // the newest started, open or not: its handler may still run
  private arrivals = 0;

  get active(): boolean {
    return this.current !== null;
  }

  // Runs the session start() makes, once it may; resolves with the reason it closed, or null
  // when a newer connection superseded this one first (start() was not called).
  async run(start: () => ReplicaSession | null): Promise<string | null> {
    this.arrivals += 1;
    const arrival = this.arrivals;
    const previous = this.last;
    if (previous !== null) {
      // Closed already or not: its last handler (a resync's start, say) may still be running.
      previous.close("superseded by a new connection from the primary");
      await previous.finished();
    }
    if (arrival !== this.arrivals) return null;
    const session = start();
    if (session === null) return null;
    this.current = session;
    this.last = session;
    try {
      return await session.closed;
    } finally {
      if (this.current === session) this.current = null;
    }
  }

  close(reason: string): void {
    this.last?.close(reason);
  }

  async finished(): Promise<void> {
    await this.last?.finished();
  }

  // The node forgets its sessions without closing them (its process is gone).
  forget(): void {
    this.current = null;
    this.last = null;
  }
}
