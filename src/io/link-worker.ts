// The primary's link sockets in one worker thread per node (link-worker-thread.ts), so that the
// main thread, which serves NBD, only copies frame bytes and posts them.
//
// Why: a link's TLS socket in the main thread sealed every record and made the kernel's
// loopback send there, about 7 µs per 4 KiB record on the thread every NBD request waits for.
// The thread does that work now; the main thread copies each frame once into a staging buffer
// (src/io/worker-link-socket.ts, which also bounds the memory) and hands the buffer over.
//
//   connect ──▶ (no thread) ──start──▶ running ──exit or error──▶ (no thread; the next connect starts one)
//                                         └──close()──▶ closed (connects are refused)
//
// One thread serves every connection of the node, each known by an id. connect() runs
// linkConnect in the thread (the same checks, the same timeout) and fails with the same
// OperatingError code and detail it would give here. A thread that dies fails every connection
// it had (PEER_UNREACHABLE), as a network that failed would: the links reconnect through a new
// thread. The thread keeps the process alive only while it has connections, as sockets would.

import { Worker } from "node:worker_threads";
import { assert } from "../assert.js";
import { type ErrorDetail, OperatingError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { LinkCredential } from "../replication/link-credential.js";
import { type ConnectErrorFields, type FromLinkThread, type ToLinkThread, socketErrorFromFields } from "./link-worker-messages.js";
import { WorkerLinkSocket } from "./worker-link-socket.js";

interface PendingConnect {
  readonly where: ErrorDetail; // as linkConnect names the attempt in its errors
  resolve(socket: WorkerLinkSocket): void;
  reject(error: Error): void;
}

// One started thread and what it serves; replaced by a new one when it dies.
interface ThreadState {
  readonly worker: Worker;
  readonly connecting: Map<number, PendingConnect>;
  readonly sockets: Map<number, WorkerLinkSocket>;
  dead: boolean;
}

export class LinkIoThread {
  private thread: ThreadState | null = null;
  private idNext = 1;
  private closed = false;
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger.child({ subsystem: "link-io-thread" });
  }

  // Connects as linkConnect (src/io/link-tls.ts) does, through the thread.
  connect(credential: LinkCredential, host: string, port: number, options: { timeoutMs?: number } = {}): Promise<WorkerLinkSocket> {
    assert(credential.role === "primary", "only the primary half dials a link");
    if (this.closed) return Promise.reject(new OperatingError("SHUTTING_DOWN", { what: "link I/O thread" }));
    const thread = this.thread ?? (this.thread = this.start());
    const id = this.idNext++;
    const where = { link: credential.linkId, peer: credential.peer, address: `${host}:${port}` };
    return new Promise((resolve, reject) => {
      thread.connecting.set(id, { where, resolve, reject });
      this.holdProcess(thread);
      this.post(thread, { kind: "connect", id, credential, host, port, timeoutMs: options.timeoutMs });
    });
  }

  // Ends the thread and, with it, every connection it still had. Later connects are refused.
  async close(): Promise<void> {
    this.closed = true;
    const thread = this.thread;
    if (thread === null) return;
    this.died(thread, "the link I/O thread stopped");
    await thread.worker.terminate();
  }

  // Connections of the running thread, open or connecting (for status and tests).
  get connections(): number {
    return this.thread === null ? 0 : this.thread.connecting.size + this.thread.sockets.size;
  }

  // The running thread's id, null when none runs (a new thread has a new id).
  get threadId(): number | null {
    return this.thread?.worker.threadId ?? null;
  }

  private start(): ThreadState {
    // From dist/src/io/link-worker.js, the compiled thread is its neighbour.
    const worker = new Worker(new URL("./link-worker-thread.js", import.meta.url));
    const thread: ThreadState = { worker, connecting: new Map(), sockets: new Map(), dead: false };
    worker.on("message", (message: FromLinkThread) => this.onMessage(thread, message));
    worker.on("error", (error) => this.died(thread, `the link I/O thread failed: ${error.message}`, error));
    worker.on("exit", (exitCode) => this.died(thread, `the link I/O thread exited with code ${exitCode}`));
    this.holdProcess(thread);
    this.logger.debug({ threadId: worker.threadId }, "link I/O thread started");
    return thread;
  }

  private post(thread: ThreadState, message: ToLinkThread, transfer: ArrayBuffer[] = []): void {
    if (!thread.dead) thread.worker.postMessage(message, transfer);
  }

  private onMessage(thread: ThreadState, message: FromLinkThread): void {
    if (thread.dead) return;
    switch (message.kind) {
      case "connected": {
        const pending = thread.connecting.get(message.id);
        assert(pending !== undefined, "connected: a connect the main thread made");
        thread.connecting.delete(message.id);
        const channel = {
          post: (toThread: ToLinkThread, transfer?: ArrayBuffer[]) => this.post(thread, toThread, transfer),
          released: (id: number) => {
            thread.sockets.delete(id);
            this.holdProcess(thread);
          },
        };
        const socket = new WorkerLinkSocket(message.id, message.address, channel);
        thread.sockets.set(message.id, socket);
        pending.resolve(socket);
        return;
      }
      case "connectFailed": {
        const pending = thread.connecting.get(message.id);
        assert(pending !== undefined, "connectFailed: a connect the main thread made");
        thread.connecting.delete(message.id);
        this.holdProcess(thread);
        pending.reject(connectError(message.error));
        return;
      }
      default:
        // A socket released meanwhile (destroyed here) may still hear from the thread.
        thread.sockets.get(message.id)?.onThreadMessage(message);
    }
  }

  // Fails everything the thread served; the next connect starts another.
  private died(thread: ThreadState, reason: string, error?: Error): void {
    if (thread.dead) return;
    thread.dead = true;
    if (this.thread === thread) this.thread = null;
    if (!this.closed || error !== undefined) this.logger.warn({ err: error, connections: thread.connecting.size + thread.sockets.size }, reason);
    const options = error === undefined ? undefined : { cause: error };
    for (const pending of thread.connecting.values()) pending.reject(new OperatingError("PEER_UNREACHABLE", { ...pending.where, reason }, options));
    thread.connecting.clear();
    for (const socket of [...thread.sockets.values()]) socket.destroy(new OperatingError("PEER_UNREACHABLE", { what: "link socket", reason }, options));
    thread.sockets.clear();
    thread.worker.unref();
  }

  // The thread keeps the process alive while it has connections, as their sockets would.
  private holdProcess(thread: ThreadState): void {
    if (thread.dead) return;
    if (thread.connecting.size + thread.sockets.size > 0) thread.worker.ref();
    else thread.worker.unref();
  }
}

// linkConnect's error, as the thread described it.
function connectError(fields: ConnectErrorFields): Error {
  const options = fields.cause === undefined ? undefined : { cause: socketErrorFromFields(fields.cause) };
  if (fields.code === undefined) return new Error(`link I/O thread: ${String(fields.detail)}`, options);
  return new OperatingError(fields.code, fields.detail, options);
}
