// The link I/O thread: the primary's replication sockets (TCP and TLS) live here, so that TLS
// sealing and the kernel's send run off the main thread, which serves NBD. The main thread's
// side, and why, is src/io/link-worker.ts; the messages are link-worker-messages.ts.
//
// The thread keeps no state but its sockets and connects under way: it connects with linkConnect (the very checks and
// timeout the main thread would run), writes the staging buffers it is handed and hands each
// back once the socket's write callback fired, and forwards what the socket reads and how it
// ends. It never decides anything about a link; the main thread does.

import { parentPort } from "node:worker_threads";
import type { TLSSocket } from "node:tls";
import { assert } from "../assert.js";
import { OperatingError } from "../errors.js";
import { linkConnect } from "./link-tls.js";
import { type FromLinkThread, type ToLinkThread, socketErrorFields } from "./link-worker-messages.js";

assert(parentPort !== null, "link-worker-thread.js runs as a worker thread");
const port = parentPort;

const sockets = new Map<number, TLSSocket>();
const connecting = new Map<number, { destroyed: boolean }>(); // destroyed: the main thread gave up on it

function post(message: FromLinkThread, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

port.on("message", (message: ToLinkThread) => {
  switch (message.kind) {
    case "connect":
      connect(message.id, message);
      return;
    case "write": {
      const socket = sockets.get(message.id);
      // Closed meanwhile: the main thread learns it from `closed` and drops its buffers.
      if (socket === undefined) return;
      const { buffer, length } = message;
      // The callback also runs (with an error) when the socket dies with this write queued.
      socket.write(new Uint8Array(buffer, 0, length), () => post({ kind: "written", id: message.id, buffer, length }, [buffer]));
      return;
    }
    case "pause":
      sockets.get(message.id)?.pause();
      return;
    case "resume":
      sockets.get(message.id)?.resume();
      return;
    case "end":
      // The callback also runs (with an error) if the socket ended or died first.
      sockets.get(message.id)?.end(() => post({ kind: "finished", id: message.id }));
      return;
    case "destroy": {
      const attempt = connecting.get(message.id);
      if (attempt !== undefined) attempt.destroyed = true;
      sockets.get(message.id)?.destroy();
      sockets.delete(message.id);
      return;
    }
  }
});

function connect(id: number, request: Extract<ToLinkThread, { kind: "connect" }>): void {
  const options = request.timeoutMs === undefined ? {} : { timeoutMs: request.timeoutMs };
  const attempt = { destroyed: false };
  connecting.set(id, attempt);
  // A throw of linkConnect itself (an assertion) fails this connect, not the thread.
  new Promise<TLSSocket>((resolve) => resolve(linkConnect(request.credential, request.host, request.port, options))).then(
    (socket) => {
      connecting.delete(id);
      if (attempt.destroyed) return void socket.destroy();
      sockets.set(id, socket);
      attach(id, socket);
      const address = { remoteAddress: socket.remoteAddress, remotePort: socket.remotePort, localAddress: socket.localAddress, localPort: socket.localPort };
      post({ kind: "connected", id, address });
    },
    (error: unknown) => {
      connecting.delete(id);
      const cause = error instanceof Error && error.cause !== undefined ? socketErrorFields(error.cause) : undefined;
      if (error instanceof OperatingError) return post({ kind: "connectFailed", id, error: { code: error.code, detail: error.detail, cause } });
      post({ kind: "connectFailed", id, error: { code: undefined, detail: (error as Error)?.message ?? String(error), cause } });
    },
  );
}

function attach(id: number, socket: TLSSocket): void {
  socket.on("data", (chunk: Buffer) => {
    // Handed over, not copied, when the chunk is the whole of its memory; a view into a
    // larger buffer is copied first (transferring that buffer would take its neighbours too).
    const owned = chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength ? chunk : new Uint8Array(chunk);
    const buffer = owned.buffer as ArrayBuffer;
    post({ kind: "data", id, buffer }, [buffer]);
  });
  socket.on("end", () => post({ kind: "end", id }));
  socket.on("error", (error: Error) => post({ kind: "error", id, error: socketErrorFields(error) }));
  socket.on("close", () => {
    if (sockets.get(id) === socket) sockets.delete(id);
    post({ kind: "closed", id });
  });
}
