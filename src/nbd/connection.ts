// One NBD client connection: the I/O shell around the pure handshake (handshake.ts) and the
// request checks (request-check.ts). It parses bytes straight out of each incoming chunk, runs
// requests concurrently against the export, and writes replies, in any order.
//
//   client flags ─▶ option header ─▶ option data | option drain ─▶ … ─▶ request header ◀─┐
//                                                                  │                 │
//                          WRITE: write payload | write drain (bad WRITE) ───────────┘
//   DISC or server shutdown ─▶ disconnecting (in-flight requests finish, then the socket ends)
//   protocol violation ─▶ closed (hard disconnect)
//
// Hot path, per 4 KiB request: a header is decoded from the chunk in place (a 28-byte scratch
// buffer only when a header straddles two chunks); a WRITE payload is allocated once and the
// chunk pieces copied in; a READ reply is one buffer (reply header + data, the export reads
// into the tail); replies completed in the same tick leave in one writev (cork, uncork on the
// next tick), after which the event loop polls for a moment before it sleeps (PollWindow).
// Requests carry their state in arguments, not in per-request objects.
//
// Flow control: before decoding the next request header, the connection stops reading while
// nbdRequestsInflightMax requests are running, nbdInflightBytesMax bytes of payload are held,
// or as many reply bytes wait in the socket; it resumes when a request finishes or the socket
// drains. Overshoot is at most one request (nbdPayloadSizeMax).

import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import {
  nbdBlockStatusExtentsMax,
  nbdHandshakeMsMax,
  nbdInflightBytesMax,
  nbdOptionDataSizeMax,
  nbdRequestsInflightMax,
  sectorSize,
} from "../constants.js";
import { OperatingError, errorTable, type ErrorCode } from "../errors.js";
import type { Extent } from "../io/block-file.js";
import type { Logger } from "../logger.js";
import { blockStatusDescriptors } from "./block-status.js";
import type { NbdExport, NbdExportRegistry, NbdObserver, NbdRequestKind, WriteOptions, ZeroOptions } from "./export.js";
import { Handshake, type HandshakeStep, type Session } from "./handshake.js";
import { noPollWindow, type PollWindow } from "./poll-window.js";
import { nbdOptionDrainSizeMax, nbdWriteDrainSizeMax } from "../constants.js";
import {
  NbdFrameError,
  blockStatusChunkEncode,
  clientFlag,
  clientFlagsKnown,
  clientFlagsSize,
  command,
  commandFlag,
  errorChunkEncode,
  greetingEncode,
  noneChunkEncode,
  optionHeaderDecode,
  optionHeaderSize,
  readChunkHeaderSize,
  readChunkHeaderWrite,
  requestHeaderDecode,
  requestHeaderEmpty,
  requestHeaderSize,
  simpleReplyHeaderSize,
  simpleReplyWrite,
} from "./protocol.js";
import { errnoOf, requestCheck } from "./request-check.js";

const enum Phase {
  ClientFlags,
  OptionHeader,
  OptionData,
  OptionDrain,
  RequestHeader,
  WritePayload,
  WriteDrain,
  Disconnecting,
  Closed,
}

const writeOptionsFua: WriteOptions = Object.freeze({ fua: true });
const writeOptionsPlain: WriteOptions = Object.freeze({ fua: false });
// Indexed by (fua | noHole << 1 | fastZero << 2).
const zeroOptionsByFlags: readonly ZeroOptions[] = Array.from({ length: 8 }, (_, bits) =>
  Object.freeze({ fua: (bits & 1) !== 0, noHole: (bits & 2) !== 0, fastZero: (bits & 4) !== 0 }),
);

const emptyData = Buffer.alloc(0);
const succeeded = Symbol("succeeded"); // "no failure", distinct from any rejection value

let unixConnections = 0; // unix peers have no address: number them for logs and metrics

const kindOfCommand: readonly NbdRequestKind[] = ["read", "write", "disc", "flush", "trim", "cache", "zero", "block_status"];

export class NbdConnection {
  readonly remote: string;
  readonly closed: Promise<void>;
  private closedResolve!: () => void;

  private phase = Phase.ClientFlags;
  private chunk: Buffer | undefined;
  private chunkPosition = 0;
  private readonly scratch = Buffer.allocUnsafe(requestHeaderSize);
  private scratchFilled = 0;
  private target: Buffer = emptyData; // option data or WRITE payload being filled
  private targetFilled = 0;
  private drainRemaining = 0;
  private optionType = 0;
  private readonly header = requestHeaderEmpty();

  // The WRITE whose payload is arriving or being drained.
  private writeHandleHigh = 0;
  private writeHandleLow = 0;
  private writeOffset = 0;
  private writeFlags = 0;
  private writeStartMs = 0;
  private writeError: ErrorCode | undefined;

  private handshake: Handshake | undefined;
  private session: Session | undefined;
  private export: NbdExport | undefined;
  private exportName = "";
  private attached = false;

  private inflightCount = 0; // requests handed to the export, not yet answered
  private inflightBytes = 0; // payload and read buffers held for them
  private readingPaused = false;
  private parsing = false;
  private corked = false;
  private closeReason = "closed by the client";
  private handshakeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly registry: NbdExportRegistry,
    private readonly observer: NbdObserver,
    private readonly logger: Logger,
    private readonly onClosed: (connection: NbdConnection) => void = () => {},
    private readonly handshakeMsMax = nbdHandshakeMsMax,
    private readonly pollWindow: PollWindow = noPollWindow,
  ) {
    unixConnections += 1;
    this.remote = socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort ?? 0}` : `unix#${unixConnections}`;
    this.closed = new Promise((resolve) => (this.closedResolve = resolve));
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("drain", () => this.onDrain());
    socket.on("error", (error: Error) => this.onError(error));
    socket.on("close", () => this.onClose());
    this.observer.connectionOpened(this.remote);
    this.handshakeTimer = setTimeout(handshakeExpired, handshakeMsMax, this);
    this.handshakeTimer.unref();
    this.send(greetingEncode());
  }

  get isClosed(): boolean {
    return this.phase === Phase.Closed;
  }

  // Server shutdown: take no new requests, let those running finish, then end the connection.
  shutdown(): void {
    if (this.phase === Phase.Closed) return;
    this.closeReason = "server shutting down";
    if (this.phase < Phase.RequestHeader) {
      this.socket.destroy();
      this.phase = Phase.Closed;
      return;
    }
    if (this.phase === Phase.WritePayload) this.inflightBytes -= this.target.length; // never started
    this.target = emptyData;
    this.phase = Phase.Disconnecting;
    this.chunk = undefined;
    this.socket.pause();
    this.finishIfIdle();
  }

  destroy(): void {
    this.phase = Phase.Closed;
    this.socket.destroy();
  }

  // ---- Input ----

  private onData(chunk: Buffer): void {
    if (this.phase >= Phase.Disconnecting) return; // nothing may follow DISC
    if (this.chunk !== undefined && this.chunkPosition < this.chunk.length) {
      // Arrived while paused (rare): keep the order of bytes.
      this.chunk = Buffer.concat([this.chunk.subarray(this.chunkPosition), chunk]);
    } else {
      this.chunk = chunk;
    }
    this.chunkPosition = 0;
    if (!this.readingPaused) this.parse();
  }

  private parse(): void {
    this.parsing = true;
    try {
      let chunk = this.chunk;
      while (chunk !== undefined && this.chunkPosition < chunk.length) {
        switch (this.phase) {
          case Phase.RequestHeader:
            if (this.overLimits()) {
              this.readPause();
              return;
            }
            this.requestHeaderStep(chunk);
            break;
          case Phase.WritePayload:
            this.writePayloadStep(chunk);
            break;
          case Phase.WriteDrain:
          case Phase.OptionDrain:
            this.drainStep(chunk);
            break;
          case Phase.ClientFlags:
            this.clientFlagsStep(chunk);
            break;
          case Phase.OptionHeader:
            this.optionHeaderStep(chunk);
            break;
          case Phase.OptionData:
            this.optionDataStep(chunk);
            break;
          default: // disconnecting or closed: the rest is ignored
            this.chunk = undefined;
            return;
        }
        chunk = this.chunk;
      }
      this.chunk = undefined;
    } finally {
      this.parsing = false;
    }
  }

  // Copies into the scratch buffer until it holds `size` bytes; true when complete.
  private scratchFill(chunk: Buffer, size: number): boolean {
    const count = Math.min(size - this.scratchFilled, chunk.length - this.chunkPosition);
    chunk.copy(this.scratch, this.scratchFilled, this.chunkPosition, this.chunkPosition + count);
    this.chunkPosition += count;
    this.scratchFilled += count;
    if (this.scratchFilled < size) return false;
    this.scratchFilled = 0;
    return true;
  }

  // Copies into this.target; true when complete.
  private targetFill(chunk: Buffer): boolean {
    const count = Math.min(this.target.length - this.targetFilled, chunk.length - this.chunkPosition);
    chunk.copy(this.target, this.targetFilled, this.chunkPosition, this.chunkPosition + count);
    this.chunkPosition += count;
    this.targetFilled += count;
    return this.targetFilled === this.target.length;
  }

  private drainStep(chunk: Buffer): void {
    const count = Math.min(this.drainRemaining, chunk.length - this.chunkPosition);
    this.chunkPosition += count;
    this.drainRemaining -= count;
    if (this.drainRemaining > 0) return;
    if (this.phase === Phase.OptionDrain) this.handshakeApply((this.handshake as Handshake).optionTooBig(this.optionType));
    else this.writeRefuse();
  }

  private writeRefuse(): void {
    this.phase = Phase.RequestHeader;
    this.replyFailure(this.writeHandleHigh, this.writeHandleLow, this.writeError as ErrorCode);
    this.report("write", 0, this.writeStartMs, this.writeError);
  }

  // ---- Handshake ----

  private clientFlagsStep(chunk: Buffer): void {
    if (!this.scratchFill(chunk, clientFlagsSize)) return;
    const flags = this.scratch.readUInt32BE(0);
    if ((flags & ~clientFlagsKnown) !== 0) {
      this.violation(`unknown client flags 0x${flags.toString(16)}`);
      return;
    }
    this.handshake = new Handshake(this.registry, (flags & clientFlag.noZeroes) !== 0);
    this.phase = Phase.OptionHeader;
  }

  private optionHeaderStep(chunk: Buffer): void {
    if (!this.scratchFill(chunk, optionHeaderSize)) return;
    let header;
    try {
      header = optionHeaderDecode(this.scratch, 0);
    } catch (error) {
      if (!(error instanceof NbdFrameError)) throw error;
      this.violation("bad option magic");
      return;
    }
    this.optionType = header.option;
    if (header.length > nbdOptionDrainSizeMax) {
      this.violation(`option length ${header.length} is absurd`);
    } else if (header.length > nbdOptionDataSizeMax) {
      this.drainRemaining = header.length;
      this.phase = Phase.OptionDrain;
    } else if (header.length === 0) {
      this.handshakeApply((this.handshake as Handshake).option(header.option, emptyData));
    } else {
      this.target = Buffer.allocUnsafe(header.length);
      this.targetFilled = 0;
      this.phase = Phase.OptionData;
    }
  }

  private optionDataStep(chunk: Buffer): void {
    if (!this.targetFill(chunk)) return;
    const data = this.target;
    this.target = emptyData;
    this.handshakeApply((this.handshake as Handshake).option(this.optionType, data));
  }

  private handshakeApply(step: HandshakeStep): void {
    for (const reply of step.replies) this.send(reply);
    switch (step.kind) {
      case "continue":
        this.phase = Phase.OptionHeader;
        return;
      case "close":
        if (step.hard) {
          this.violation(step.reason);
        } else {
          this.closeReason = step.reason;
          this.phase = Phase.Closed;
          this.socket.end(() => this.socket.destroy());
        }
        return;
      case "transmission":
        this.transmissionEnter(step.session);
        return;
    }
  }

  private transmissionEnter(session: Session): void {
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.handshake = undefined;
    this.session = session;
    this.export = session.export;
    this.exportName = session.exportName;
    try {
      session.export.attach();
      this.attached = true;
    } catch (error) {
      this.logger.error({ err: error, export: session.exportName, remote: this.remote }, "export refused to attach");
      this.closeReason = "export refused to attach";
      this.destroy();
      return;
    }
    this.phase = Phase.RequestHeader;
    this.logger.debug({ remote: this.remote, export: session.exportName, structured: session.structuredReplies }, "transmission");
  }

  // ---- Transmission ----

  private requestHeaderStep(chunk: Buffer): void {
    let source = chunk;
    let position = this.chunkPosition;
    if (this.scratchFilled === 0 && chunk.length - position >= requestHeaderSize) {
      this.chunkPosition = position + requestHeaderSize;
    } else {
      if (!this.scratchFill(chunk, requestHeaderSize)) return;
      source = this.scratch;
      position = 0;
    }
    try {
      requestHeaderDecode(source, position, this.header);
    } catch (error) {
      if (!(error instanceof NbdFrameError)) throw error;
      this.violation("bad request magic");
      return;
    }
    this.requestStart();
  }

  private requestStart(): void {
    const header = this.header;
    const session = this.session as Session;
    const startMs = performance.now();
    if (header.type === command.write) {
      this.writeStart(session, startMs);
      return;
    }
    if (header.type === command.disconnect) {
      this.report("disc", 0, startMs, undefined);
      this.phase = Phase.Disconnecting;
      this.closeReason = "disconnect requested";
      this.finishIfIdle();
      return;
    }
    const code = requestCheck(header, session);
    if (code !== undefined) {
      const kind = kindOfCommand[header.type];
      this.replyFailure(header.handleHigh, header.handleLow, code);
      if (kind !== undefined) this.report(kind, 0, startMs, code);
      else this.observer.protocolError(this.remote, code, `unknown command ${header.type}`);
      return;
    }
    this.inflightCount += 1;
    switch (header.type) {
      case command.read:
        this.inflightBytes += header.length;
        void this.runRead(header.handleHigh, header.handleLow, header.offset, header.length, startMs);
        return;
      case command.blockStatus:
        void this.runBlockStatus(header.handleHigh, header.handleLow, header.offset, header.length, header.flags, startMs);
        return;
      default:
        void this.runCommand(header.type, header.handleHigh, header.handleLow, header.offset, header.length, header.flags, startMs);
    }
  }

  private writeStart(session: Session, startMs: number): void {
    const header = this.header;
    this.writeHandleHigh = header.handleHigh;
    this.writeHandleLow = header.handleLow;
    this.writeOffset = header.offset;
    this.writeFlags = header.flags;
    this.writeStartMs = startMs;
    const code = requestCheck(header, session);
    if (code !== undefined) {
      // The payload follows whatever we think of the request: skip it, then refuse.
      if (header.length > nbdWriteDrainSizeMax) {
        this.violation(`write length ${header.length} is absurd`);
        return;
      }
      this.writeError = code;
      this.drainRemaining = header.length;
      this.phase = Phase.WriteDrain;
      if (header.length === 0) this.writeRefuse(); // nothing to skip
      return;
    }
    if (header.length === 0) {
      this.send(this.simpleReply(header.handleHigh, header.handleLow, 0));
      this.report("write", 0, startMs, undefined);
      return;
    }
    this.target = Buffer.allocUnsafe(header.length);
    this.targetFilled = 0;
    this.inflightBytes += header.length;
    this.phase = Phase.WritePayload;
  }

  private writePayloadStep(chunk: Buffer): void {
    if (!this.targetFill(chunk)) return;
    const payload = this.target;
    this.target = emptyData;
    this.phase = Phase.RequestHeader;
    this.inflightCount += 1;
    void this.runWrite(this.writeHandleHigh, this.writeHandleLow, this.writeOffset, payload, this.writeFlags, this.writeStartMs);
  }

  private async runWrite(handleHigh: number, handleLow: number, offset: number, payload: Buffer, flags: number, startMs: number): Promise<void> {
    let failure: unknown = succeeded;
    try {
      await (this.export as NbdExport).write(offset, payload, (flags & commandFlag.fua) !== 0 ? writeOptionsFua : writeOptionsPlain);
    } catch (error) {
      failure = error;
    }
    try {
      let code: ErrorCode | undefined;
      if (failure === succeeded) this.send(this.simpleReply(handleHigh, handleLow, 0));
      else code = this.replyExportFailure(handleHigh, handleLow, failure, "write");
      this.finished("write", payload.length, payload.length, startMs, code);
    } catch (error) {
      this.bug(error);
    }
  }

  // The reply is one buffer: header, then the data the export reads into its tail.
  private async runRead(handleHigh: number, handleLow: number, offset: number, length: number, startMs: number): Promise<void> {
    const structured = (this.session as Session).structuredReplies;
    const headerSize = structured ? readChunkHeaderSize : simpleReplyHeaderSize;
    const reply = Buffer.allocUnsafe(headerSize + length);
    let failure: unknown = succeeded;
    try {
      if (length > 0) await (this.export as NbdExport).read(offset, reply.subarray(headerSize));
    } catch (error) {
      failure = error;
    }
    try {
      let code: ErrorCode | undefined;
      if (failure !== succeeded) {
        code = this.replyExportFailure(handleHigh, handleLow, failure, "read");
      } else if (!structured) {
        simpleReplyWrite(reply, 0, 0, handleHigh, handleLow);
        this.send(reply);
      } else if (length > 0) {
        readChunkHeaderWrite(reply, 0, handleHigh, handleLow, offset, length);
        this.send(reply);
      } else {
        this.send(noneChunkEncode(handleHigh, handleLow)); // OFFSET_DATA needs at least one byte
      }
      this.finished("read", length, length, startMs, code);
    } catch (error) {
      this.bug(error);
    }
  }

  // FLUSH, TRIM, WRITE_ZEROES, CACHE: no payload either way.
  private async runCommand(type: number, handleHigh: number, handleLow: number, offset: number, length: number, flags: number, startMs: number): Promise<void> {
    const target = this.export as NbdExport;
    const kind = kindOfCommand[type] as NbdRequestKind;
    let failure: unknown = succeeded;
    try {
      const fua = (flags & commandFlag.fua) !== 0;
      if (type === command.flush) {
        await target.flush();
      } else if (length === 0) {
        // Nothing to do: exports may assume nonempty ranges.
      } else if (type === command.trim) {
        await target.trim(offset, length, fua ? writeOptionsFua : writeOptionsPlain);
      } else if (type === command.writeZeroes) {
        const bits = (fua ? 1 : 0) | ((flags & commandFlag.noHole) !== 0 ? 2 : 0) | ((flags & commandFlag.fastZero) !== 0 ? 4 : 0);
        await target.zero(offset, length, zeroOptionsByFlags[bits] as ZeroOptions);
      } else if (type === command.cache) {
        if (target.flags.canCache) await target.cache(offset, length); // else a no-op hint
      }
    } catch (error) {
      failure = error;
    }
    try {
      let code: ErrorCode | undefined;
      if (failure === succeeded) this.send(this.simpleReply(handleHigh, handleLow, 0));
      else code = this.replyExportFailure(handleHigh, handleLow, failure, kind);
      this.finished(kind, length, 0, startMs, code);
    } catch (error) {
      this.bug(error);
    }
  }

  private async runBlockStatus(handleHigh: number, handleLow: number, offset: number, length: number, flags: number, startMs: number): Promise<void> {
    const session = this.session as Session;
    const descriptorsMax = (flags & commandFlag.reqOne) !== 0 ? 1 : nbdBlockStatusExtentsMax;
    let failure: unknown = succeeded;
    let extents: Extent[] | null = null;
    try {
      extents = await session.export.allocation(offset, length, nbdBlockStatusExtentsMax);
    } catch (error) {
      failure = error;
    }
    try {
      let code: ErrorCode | undefined;
      if (failure === succeeded) {
        const descriptors = blockStatusDescriptors(offset, length, extents, descriptorsMax, sectorSize);
        this.send(blockStatusChunkEncode(handleHigh, handleLow, session.metaContextId, descriptors));
      } else {
        code = this.replyExportFailure(handleHigh, handleLow, failure, "block_status");
      }
      this.finished("block_status", length, 0, startMs, code);
    } catch (error) {
      this.bug(error);
    }
  }

  // An export rejected: OperatingError keeps its code (and errno); anything else is a fault of
  // the export, logged, and answered with EIO. Returns the code reported to the observer.
  private replyExportFailure(handleHigh: number, handleLow: number, error: unknown, kind: NbdRequestKind): ErrorCode {
    if (error instanceof OperatingError) {
      this.logger.debug({ err: error, export: this.exportName, kind, remote: this.remote }, "export refused a request");
      this.replyFailure(handleHigh, handleLow, error.code);
      return error.code;
    }
    this.logger.error({ err: error, export: this.exportName, kind, remote: this.remote }, "export failed unexpectedly");
    this.replyFailure(handleHigh, handleLow, "INTERNAL");
    return "INTERNAL";
  }

  private finished(kind: NbdRequestKind, bytes: number, bytesHeld: number, startMs: number, code: ErrorCode | undefined): void {
    this.inflightCount -= 1;
    this.inflightBytes -= bytesHeld;
    this.report(kind, bytes, startMs, code);
    if (this.readingPaused && !this.overLimits()) this.readResume();
    if (this.inflightCount === 0) this.finishIfIdle();
  }

  private report(kind: NbdRequestKind, bytes: number, startMs: number, code: ErrorCode | undefined): void {
    this.observer.request(kind, this.exportName, bytes, performance.now() - startMs, code);
  }

  // ---- Output ----

  private simpleReply(handleHigh: number, handleLow: number, errno: number): Buffer {
    const reply = Buffer.allocUnsafe(simpleReplyHeaderSize);
    simpleReplyWrite(reply, 0, errno, handleHigh, handleLow);
    return reply;
  }

  // An error reply: a structured ERROR chunk once structured replies are on (a READ requires
  // it), carrying the code and its summary (never a path or an internal message); a simple
  // reply otherwise.
  private replyFailure(handleHigh: number, handleLow: number, code: ErrorCode): void {
    const errno = errnoOf(code);
    if ((this.session as Session).structuredReplies) {
      this.send(errorChunkEncode(handleHigh, handleLow, errno, `${code}: ${errorTable[code].summary}`));
    } else {
      this.send(this.simpleReply(handleHigh, handleLow, errno));
    }
  }

  private send(buffer: Buffer): void {
    if (this.phase === Phase.Closed) return;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(uncork, this);
    }
    this.socket.write(buffer);
  }

  uncorkNow(): void {
    this.corked = false;
    this.socket.uncork();
    // Only when nothing is left in flight: then the client alone can bring the next piece of
    // work. With requests still waiting (for the disk, a sync peer), the loop must not spin
    // and keep the threads and processes they wait for off this CPU.
    if (this.inflightCount === 0) this.pollWindow.extend();
  }

  // ---- Flow control and endings ----

  private overLimits(): boolean {
    return (
      this.inflightCount >= nbdRequestsInflightMax ||
      this.inflightBytes >= nbdInflightBytesMax ||
      this.socket.writableLength >= nbdInflightBytesMax
    );
  }

  private readPause(): void {
    this.readingPaused = true;
    this.socket.pause();
  }

  private readResume(): void {
    this.readingPaused = false;
    if (!this.parsing) this.parse();
    if (!this.readingPaused && this.phase < Phase.Disconnecting) this.socket.resume();
  }

  private onDrain(): void {
    if (this.readingPaused && !this.overLimits()) this.readResume();
  }

  private finishIfIdle(): void {
    if (this.phase !== Phase.Disconnecting || this.inflightCount !== 0) return;
    this.phase = Phase.Closed;
    this.socket.end(() => this.socket.destroy());
  }

  // A client broke a mandatory rule: hard disconnect.
  private violation(message: string): void {
    this.logger.info({ remote: this.remote, export: this.exportName || undefined, reason: message }, "NBD protocol violation: disconnecting");
    this.observer.protocolError(this.remote, "REQUEST_INVALID", message);
    this.closeReason = message;
    this.destroy();
  }

  handshakeExpire(): void {
    if (this.phase >= Phase.RequestHeader) return;
    this.violation(`handshake not finished within ${this.handshakeMsMax} ms`);
  }

  private bug(error: unknown): void {
    this.logger.error({ err: error, remote: this.remote }, "NBD connection failed: closing it");
    this.closeReason = "internal error";
    this.destroy();
  }

  private onError(error: Error): void {
    this.logger.debug({ err: error, remote: this.remote }, "NBD socket error");
    if (this.phase !== Phase.Closed) this.closeReason = `socket error: ${error.message}`;
  }

  private onClose(): void {
    this.phase = Phase.Closed;
    this.chunk = undefined;
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    if (this.attached) {
      this.attached = false;
      try {
        (this.export as NbdExport).detach();
      } catch (error) {
        this.logger.error({ err: error, export: this.exportName }, "export failed to detach");
      }
    }
    this.logger.debug({ remote: this.remote, reason: this.closeReason }, "NBD connection closed");
    this.observer.connectionClosed(this.remote, this.closeReason);
    this.onClosed(this);
    this.closedResolve();
  }
}

function uncork(connection: NbdConnection): void {
  connection.uncorkNow();
}

function handshakeExpired(connection: NbdConnection): void {
  connection.handshakeExpire();
}
