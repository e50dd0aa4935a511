// One link connection as a stream of messages: frames out through a FrameEncoder, frames in
// through a FrameDecoder, decoded into messages and handed to the owner ONE AT A TIME in
// arrival order (the owner's handler may be async; the next message waits for it). The socket
// is injected: on a primary the WorkerLinkSocket of the link I/O thread (src/io/link-worker.ts),
// on a secondary the listener's TLS socket, any Duplex in tests and the simulator.
//
// Bounds: the decoder holds at most one partial frame; decoded messages waiting for the
// handler are counted in bytes and the socket is paused above messagesBytesMax, so a fast
// sender cannot make this side buffer without limit. A records frame is decoded against what
// the stream expects next (LSN, chain, logId), so a gap, a duplicate or a broken chain is a
// FrameError before the owner sees it.
//
// Any fault (a bad frame, a handler that throws, a socket error) ends the stream: the socket is
// destroyed after an optional `reject`, and closed(error) is called exactly once.

import type { Duplex } from "node:stream";
import { linkCloseMsMax } from "../constants.js";
import { type LogClock, systemClock } from "../log/group-log.js";
import { OperatingError } from "../errors.js";
import { FrameDecoder } from "./frame-decoder.js";
import { FrameEncoder } from "./frame.js";
import { frameErrorReason } from "./frame-error.js";
import { type Message, type MessageToSend, messageDecode, messageEncode } from "./message.js";
import type { RecordsExpectation } from "./records-batch.js";
import type { RejectReasonName } from "./handshake.js";

export interface FrameStreamHandlers {
  message(message: Message): void | Promise<void>;
  closed(error: Error | null): void;
}

export interface FrameStreamOptions {
  readonly payloadSizeMax?: number;
  readonly messagesBytesMax: number;
  readonly nowMs: () => number;
  // Timers come from the injected clock (a simulation controls them); default: the system's.
  readonly clock?: LogClock;
}

// A socket that copies a frame's parts itself (src/io/worker-link-socket.ts): the frame is
// then never assembled into one buffer here.
interface PartsWriter {
  writeParts(parts: readonly Buffer[]): boolean;
}

function partsWriterOf(socket: Duplex): PartsWriter | null {
  return typeof (socket as Partial<PartsWriter>).writeParts === "function" ? (socket as unknown as PartsWriter) : null;
}

export class FrameStream {
  private readonly encoder = new FrameEncoder();
  private readonly partsWriter: PartsWriter | null;
  private readonly decoder: FrameDecoder;
  private readonly queue: { message: Message; bytes: number }[] = [];
  private queueBytes = 0;
  private processing = false;
  private ended = false;
  private expectation: RecordsExpectation = {};
  private drainWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  sentAtMs: number;
  heardAtMs: number;
  bytesSent = 0;
  bytesReceived = 0;

  constructor(
    private readonly socket: Duplex,
    private readonly handlers: FrameStreamHandlers,
    private readonly options: FrameStreamOptions,
  ) {
    this.decoder = new FrameDecoder({ payloadSizeMax: options.payloadSizeMax });
    this.partsWriter = partsWriterOf(socket);
    this.sentAtMs = options.nowMs();
    this.heardAtMs = options.nowMs();
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => {
      for (const wake of this.drainWaiters.splice(0)) wake();
    });
    socket.on("error", (error: Error) => this.end(new OperatingError("PEER_UNREACHABLE", { what: "link socket", reason: (error as NodeJS.ErrnoException).code ?? error.message }, { cause: error })));
    socket.on("close", () => this.end(this.ended ? null : new OperatingError("PEER_UNREACHABLE", { what: "link closed by the peer" })));
  }

  get closed(): boolean {
    return this.ended;
  }

  // Sends a message; false when the socket's buffer is full (await drained() before more).
  send(message: MessageToSend): boolean {
    if (this.ended) return false;
    const ok = this.partsWriter !== null ? this.sendParts(this.partsWriter, message) : this.sendWhole(message);
    this.sentAtMs = this.options.nowMs();
    return ok;
  }

  // One frame is many parts (headers, record payloads): sent as one buffer, TLS seals it into
  // as few records as it can and the kernel sends it as one write (frame.ts, encodeWhole).
  private sendWhole(message: MessageToSend): boolean {
    const frame = this.encoder.encodeWhole(messageEncode(message));
    this.bytesSent += frame.length;
    return this.socket.write(frame);
  }

  // The socket copies the parts into its own buffers: one copy, as encodeWhole's, not two.
  private sendParts(writer: PartsWriter, message: MessageToSend): boolean {
    const parts = this.encoder.encode(messageEncode(message));
    for (const part of parts) this.bytesSent += part.length;
    return writer.writeParts(parts);
  }

  drained(): Promise<void> {
    if (this.ended || !this.socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  // Sends a reject (for the other side's log), then closes.
  reject(reason: RejectReasonName, text: string, error: Error): void {
    if (this.ended) return;
    this.send({ kind: "reject", reason, text: text.replace(/[^\x20-\x7e]/g, "?").slice(0, 256) });
    this.end(error, true);
  }

  close(error: Error | null = null): void {
    this.end(error);
  }

  private onData(chunk: Buffer): void {
    if (this.ended) return;
    this.bytesReceived += chunk.length;
    this.heardAtMs = this.options.nowMs();
    try {
      for (const frame of this.decoder.push(chunk)) {
        const message = messageDecode(frame, this.expectation);
        if (message.kind === "records") {
          const last = message.records[message.records.length - 1]!;
          this.expectation = { firstLsn: last.lsn + 1n, previousChecksum: last.checksum, logId: last.logId };
        } else if (message.kind === "accept") {
          // Frames behind the accept are decoded before its handler runs: they continue it.
          this.expectation = { firstLsn: message.resumeLsn, previousChecksum: message.previousChecksum, logId: message.logId };
        }
        this.queue.push({ message, bytes: frame.payload.length });
        this.queueBytes += frame.payload.length;
      }
    } catch (error) {
      const reason = frameErrorReason(error);
      if (reason !== null) {
        this.reject("protocolError", reason, error as Error);
        return;
      }
      this.end(error as Error);
      return;
    }
    if (this.queueBytes > this.options.messagesBytesMax) this.socket.pause();
    if (!this.processing) void this.process();
  }

  private async process(): Promise<void> {
    this.processing = true;
    try {
      while (this.queue.length > 0 && !this.ended) {
        const { message, bytes } = this.queue.shift()!;
        this.queueBytes -= bytes;
        if (this.queueBytes <= this.options.messagesBytesMax / 2 && this.socket.isPaused()) this.socket.resume();
        await this.handlers.message(message);
      }
    } catch (error) {
      const reason = frameErrorReason(error);
      if (reason !== null) this.reject("protocolError", reason, error as Error);
      else this.end(error as Error);
    } finally {
      this.processing = false;
      for (const wake of this.idleWaiters.splice(0)) wake();
    }
  }

  // What the next records frame must continue. The stream sets it itself from each accept and
  // records frame it decodes; tests and tools may set it directly.
  expect(expectation: RecordsExpectation): void {
    this.expectation = expectation;
  }

  // Resolves once no handler is running (after close(): once the last one has returned).
  whenIdle(): Promise<void> {
    if (!this.processing) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // graceful: let what was written (a reject) reach the peer, then close; bounded by a timer.
  private end(error: Error | null, graceful = false): void {
    if (this.ended) return;
    this.ended = true;
    this.queue.length = 0;
    this.queueBytes = 0;
    if (graceful) {
      this.socket.end();
      (this.options.clock ?? systemClock).setTimeout(() => this.socket.destroy(), linkCloseMsMax);
    } else {
      this.socket.destroy();
    }
    for (const wake of this.drainWaiters.splice(0)) wake();
    this.handlers.closed(error);
  }
}
