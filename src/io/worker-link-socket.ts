// One link connection whose TLS socket lives in the link I/O thread (src/io/link-worker.ts),
// seen from the main thread as the Duplex a TLS socket is: 'data', 'drain', 'error', 'close',
// write() that returns false under back-pressure, writableNeedDrain, pause()/resume(), end(),
// destroy(). FrameStream and PrimaryLink use it as they would the socket itself.
//
// Writes are copied into staging buffers and handed to the thread, which hands each back once
// its socket's write callback fired:
//
//   write(a) write(b) writeParts([h, p1, p2])      (one tick)
//     └────────┴──────────┴─ copied ─▶ [ a b h p1 p2 ····· ] filling ──(full, or next tick)──▶ thread
//   free ◀──────────────────────────────── written(buffer) ◀── socket.write callback ──────────┘
//
// Writes of one tick share a buffer; a frame may span buffers. A connection makes at most
// linkIoBuffersMax of them, lazily. When every one is out (in the thread, or filling and full),
// write() returns false, and 'drain' follows once linkIoDrainBuffersMin are back; bytes written
// meanwhile are copied aside (the caller may reuse its buffers once write() returned) and go
// first into the buffers that come back. So memory is the staging buffers plus what a caller
// writes after being told to wait, never the backlog of a link that cannot send.
//
// Write callbacks run when the thread's socket has written the chunk's last byte. Writable's
// own write path is bypassed (it would hold each chunk by reference until the one before it was
// written); end() still goes through it, to _final, which ends the thread's socket after the
// last staged byte.
//
// Reads: chunks arrive transferred; push() refusing one pauses the thread's socket, and _read
// resumes it, so a consumer that stops reading stops the socket as it would in-thread.

import { Duplex } from "node:stream";
import { assert } from "../assert.js";
import { linkIoBufferBytes, linkIoBuffersMax, linkIoDrainBuffersMin, linkIoPostBytesMin } from "../constants.js";
import { type FromLinkThread, type LinkAddress, type ToLinkThread, socketErrorFromFields } from "./link-worker-messages.js";

type WriteCallback = (error?: Error | null) => void;

// How a connection reaches its thread; the thread's owner (LinkIoThread) provides it.
export interface LinkThreadChannel {
  post(message: ToLinkThread, transfer?: ArrayBuffer[]): void;
  // The connection is over on both sides: the owner forgets its id.
  released(id: number): void;
}

interface FillingBuffer {
  readonly buffer: ArrayBuffer;
  readonly bytes: Buffer; // a view of buffer, detached once it is handed over
  used: number;
}

export class WorkerLinkSocket extends Duplex {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  private readonly free: ArrayBuffer[] = [];
  private buffersMade = 0;
  private filling: FillingBuffer | null = null;
  private readonly overflow: Buffer[] = []; // copies written while every buffer was out, in order
  private flushQueued = false;
  private inThread = 0; // buffers handed over and not yet back
  private needDrain = false;
  private bytesAccepted = 0; // by write() and writeParts(), since the connection began
  private bytesSentByThread = 0; // written by the thread's socket (their buffers came back)
  private readonly callbacks: { bytesEnd: number; callback: WriteCallback }[] = [];
  private finalCallback: WriteCallback | null = null;
  private endPosted = false;
  private threadPaused = false;
  private released = false; // the thread no longer knows this connection

  static {
    // Writable's getters read its own state, which write() bypasses (see the header).
    Object.defineProperty(this.prototype, "writableNeedDrain", {
      get(this: WorkerLinkSocket) {
        return this.needDrain && !this.destroyed;
      },
    });
    Object.defineProperty(this.prototype, "writableLength", {
      get(this: WorkerLinkSocket) {
        return this.bytesAccepted - this.bytesSentByThread;
      },
    });
  }

  constructor(
    readonly id: number,
    address: LinkAddress,
    private readonly channel: LinkThreadChannel,
  ) {
    super({ allowHalfOpen: false }); // as a TLS socket: the peer's end ends ours
    this.remoteAddress = address.remoteAddress;
    this.remotePort = address.remotePort;
    this.localAddress = address.localAddress;
    this.localPort = address.localPort;
  }

  // Staging buffers this connection has made (at most linkIoBuffersMax).
  get stagingBuffers(): number {
    return this.buffersMade;
  }

  override write(chunk: unknown, encodingOrCallback?: BufferEncoding | WriteCallback, callback?: WriteCallback): boolean {
    const done = typeof encodingOrCallback === "function" ? encodingOrCallback : callback;
    const bytes = chunkBytes(chunk, typeof encodingOrCallback === "string" ? encodingOrCallback : "utf8");
    // Writable reports these as it does for any stream (write after end, destroyed, bad chunk).
    if (this.writableEnded || this.destroyed || bytes === null) return super.write(chunk, encodingOrCallback as BufferEncoding, callback);
    return this.stage([bytes], done);
  }

  // The parts of one frame, copied straight into staging: no whole-frame buffer in between.
  writeParts(parts: readonly Buffer[]): boolean {
    if (this.writableEnded || this.destroyed) return super.write(Buffer.concat(parts));
    return this.stage(parts, undefined);
  }

  // Reached only through end(chunk): write() does not call it.
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    this.stage([chunk], callback);
  }

  override _final(callback: WriteCallback): void {
    this.finalCallback = callback;
    this.endWhenStaged();
  }

  override _read(): void {
    if (!this.threadPaused || this.released) return;
    this.threadPaused = false;
    this.channel.post({ kind: "resume", id: this.id });
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.released) {
      this.channel.post({ kind: "destroy", id: this.id });
      this.release();
    }
    this.filling = null;
    this.free.length = 0;
    this.overflow.length = 0;
    const failure = error ?? Object.assign(new Error("the link socket was destroyed"), { code: "ERR_STREAM_DESTROYED" });
    for (const { callback: done } of this.callbacks.splice(0)) done(failure);
    callback(error);
  }

  // A message from the thread about this connection (LinkIoThread routes them by id).
  onThreadMessage(message: FromLinkThread): void {
    assert(message.id === this.id);
    switch (message.kind) {
      case "written":
        return this.bufferReturned(message.buffer, message.length);
      case "data":
        return this.received(Buffer.from(message.buffer));
      case "end":
        if (!this.destroyed) this.push(null);
        return;
      case "finished":
        this.finalCallback?.();
        this.finalCallback = null;
        return;
      case "error":
        // The socket's own error, as the in-thread socket would have raised it (errno code).
        this.destroy(socketErrorFromFields(message.error));
        return;
      case "closed":
        this.release();
        this.destroy();
        return;
      case "connected":
      case "connectFailed":
        assert(false, `${message.kind} for a connected link socket`);
    }
  }

  // ---- Writes ----

  private stage(parts: readonly Buffer[], callback: WriteCallback | undefined): boolean {
    for (const part of parts) {
      this.bytesAccepted += part.length;
      this.copyIn(part);
    }
    if (callback !== undefined) {
      // Nothing of it left to write (an empty chunk): no buffer will come back for it.
      if (this.bytesAccepted === this.bytesSentByThread) process.nextTick(callback);
      else this.callbacks.push({ bytesEnd: this.bytesAccepted, callback });
    }
    this.queueFlush();
    if (!this.full()) return true;
    this.needDrain = true;
    return false;
  }

  // Into staging as far as it has room; the rest is copied aside until a buffer comes back.
  private copyIn(part: Buffer): void {
    let at = 0;
    while (at < part.length && this.overflow.length === 0 && this.takeRoom()) at += this.fill(part, at);
    if (at < part.length) this.overflow.push(Buffer.from(part.subarray(at)));
  }

  // Copies bytes of `part` from `at` into the filling buffer as far as it has room, and hands it
  // over once full. Returns how many it copied.
  private fill(part: Buffer, at: number): number {
    const filling = this.filling!;
    const copied = part.copy(filling.bytes, filling.used, at);
    filling.used += copied;
    if (filling.used === filling.bytes.length) this.handOver();
    return copied;
  }

  // Makes sure a buffer with room is filling; false when every buffer is out.
  private takeRoom(): boolean {
    if (this.filling !== null) return true; // a full one is handed over at once
    let buffer = this.free.pop();
    if (buffer === undefined) {
      if (this.buffersMade === linkIoBuffersMax) return false;
      buffer = new ArrayBuffer(linkIoBufferBytes);
      this.buffersMade += 1;
    }
    this.filling = { buffer, bytes: Buffer.from(buffer), used: 0 };
    return true;
  }

  private full(): boolean {
    return this.overflow.length > 0 || (this.filling === null && this.free.length === 0 && this.buffersMade === linkIoBuffersMax);
  }

  // What this tick wrote goes out together when the tick ends, unless the thread is still
  // writing an earlier buffer: then it goes when that one comes back (or once the buffer holds
  // linkIoPostBytesMin). A post costs the event loop several µs whatever it carries; with
  // records frames sent every tick under load, posting each one at once cost more of the
  // primary's event loop than the TLS sealing it moved away. Idle, a frame goes at once.
  private queueFlush(): void {
    if (this.flushQueued || this.filling === null || this.filling.used === 0) return;
    this.flushQueued = true;
    process.nextTick(() => {
      this.flushQueued = false;
      if (this.filling !== null && this.filling.used > 0 && !this.destroyed && (this.inThread === 0 || this.filling.used >= linkIoPostBytesMin)) this.handOver();
    });
  }

  private handOver(): void {
    const { buffer, used } = this.filling!;
    this.filling = null;
    this.inThread += 1;
    this.channel.post({ kind: "write", id: this.id, buffer, length: used }, [buffer]);
  }

  private bufferReturned(buffer: ArrayBuffer, length: number): void {
    this.inThread -= 1;
    this.bytesSentByThread += length;
    while (this.callbacks.length > 0 && this.callbacks[0]!.bytesEnd <= this.bytesSentByThread) this.callbacks.shift()!.callback();
    if (this.destroyed) return;
    this.free.push(buffer);
    this.moveOverflow();
    this.endWhenStaged();
    if (this.needDrain && this.overflow.length === 0 && this.free.length + linkIoBuffersMax - this.buffersMade >= linkIoDrainBuffersMin) {
      this.needDrain = false;
      this.emit("drain");
    }
  }

  private moveOverflow(): void {
    while (this.overflow.length > 0 && this.takeRoom()) {
      const head = this.overflow[0]!;
      const copied = this.fill(head, 0);
      if (copied === head.length) this.overflow.shift();
      else this.overflow[0] = head.subarray(copied);
    }
    this.queueFlush();
  }

  // After end(): once every staged byte is handed over, the thread ends its socket behind them
  // and says when that is done ('finish' waits for it).
  private endWhenStaged(): void {
    if (this.finalCallback === null || this.endPosted || this.overflow.length > 0 || this.released) return;
    if (this.filling !== null && this.filling.used > 0) this.handOver();
    this.endPosted = true;
    this.channel.post({ kind: "end", id: this.id });
  }

  // ---- Reads ----

  private received(chunk: Buffer): void {
    if (this.destroyed) return;
    if (this.push(chunk) || this.threadPaused || this.released) return;
    this.threadPaused = true;
    this.channel.post({ kind: "pause", id: this.id });
  }

  private release(): void {
    if (this.released) return;
    this.released = true;
    this.channel.released(this.id);
  }
}

// A written chunk as bytes (no copy), or null for what a byte stream does not take.
function chunkBytes(chunk: unknown, encoding: BufferEncoding): Buffer | null {
  if (Buffer.isBuffer(chunk)) return chunk;
  if (typeof chunk === "string") return Buffer.from(chunk, encoding);
  if (chunk instanceof Uint8Array) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  return null;
}
