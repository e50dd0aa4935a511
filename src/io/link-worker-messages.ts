// The messages between the main thread and the link I/O thread (src/io/link-worker.ts is the
// main thread's side, link-worker-thread.ts the thread's). One thread serves every link
// connection of a node; each message names its connection by an id the main thread chose.
//
//   main thread                                      link I/O thread
//   connect(id, credential, host, port) ───────────▶ linkConnect (TCP, TLS, checks, timeout)
//            ◀─────────────── connected(id) | connectFailed(id, code, detail)
//   write(id, staging buffer) [transferred] ───────▶ socket.write; once its callback fired:
//            ◀─────────────── written(id, the same buffer) [transferred back, reused]
//            ◀─────────────── data(id, bytes) [transferred]
//   pause(id) / resume(id) ────────────────────────▶ socket.pause() / resume()
//   end(id) ───────────────────────────────────────▶ socket.end(), then ◀── finished(id)
//   destroy(id) ───────────────────────────────────▶ socket.destroy()
//            ◀─────────────── end(id) (the peer's) | error(id, errno fields) | closed(id)
//
// Messages of one port arrive in the order they were posted, so a write posted before an end
// is written before the socket ends.

import type { ErrorCode, ErrorDetail } from "../errors.js";
import type { LinkCredential } from "../replication/link-credential.js";

export type ToLinkThread =
  | { readonly kind: "connect"; readonly id: number; readonly credential: LinkCredential; readonly host: string; readonly port: number; readonly timeoutMs: number | undefined }
  | { readonly kind: "write"; readonly id: number; readonly buffer: ArrayBuffer; readonly length: number }
  | { readonly kind: "pause" | "resume" | "end" | "destroy"; readonly id: number };

export type FromLinkThread =
  | { readonly kind: "connected"; readonly id: number; readonly address: LinkAddress }
  | { readonly kind: "connectFailed"; readonly id: number; readonly error: ConnectErrorFields }
  | { readonly kind: "written"; readonly id: number; readonly buffer: ArrayBuffer; readonly length: number }
  | { readonly kind: "data"; readonly id: number; readonly buffer: ArrayBuffer }
  | { readonly kind: "error"; readonly id: number; readonly error: SocketErrorFields }
  | { readonly kind: "end" | "finished" | "closed"; readonly id: number };

export interface LinkAddress {
  readonly remoteAddress: string | undefined;
  readonly remotePort: number | undefined;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
}

// An error crosses threads as its fields: structured cloning keeps neither an Error's class
// nor its own properties (code, errno), which are what the receiving side reads.
export interface SocketErrorFields {
  readonly name: string;
  readonly message: string;
  readonly code: string | undefined;
  readonly errno: number | undefined;
  readonly syscall: string | undefined;
}

// A failed connect: linkConnect's OperatingError (code and detail, and the socket error that
// caused it), or, for a bug, only a message.
export interface ConnectErrorFields {
  readonly code: ErrorCode | undefined;
  readonly detail: ErrorDetail | string;
  readonly cause: SocketErrorFields | undefined;
}

export function socketErrorFields(error: unknown): SocketErrorFields {
  const fields = error as Partial<NodeJS.ErrnoException> | null;
  return {
    name: typeof fields?.name === "string" ? fields.name : "Error",
    message: typeof fields?.message === "string" ? fields.message : String(error),
    code: typeof fields?.code === "string" ? fields.code : undefined,
    errno: typeof fields?.errno === "number" ? fields.errno : undefined,
    syscall: typeof fields?.syscall === "string" ? fields.syscall : undefined,
  };
}

// The error the socket in the link thread raised, again as an Error with the same fields.
export function socketErrorFromFields(fields: SocketErrorFields): NodeJS.ErrnoException {
  const error: NodeJS.ErrnoException = new Error(fields.message);
  error.name = fields.name;
  if (fields.code !== undefined) error.code = fields.code;
  if (fields.errno !== undefined) error.errno = fields.errno;
  if (fields.syscall !== undefined) error.syscall = fields.syscall;
  return error;
}
