// What the NBD server serves: an export is anything that can answer these calls. The node
// wires each volume (and later each snapshot) of a group to one export; the NBD layer knows
// nothing of logs or groups.
//
// The NBD layer validates every request at the edge (range, alignment, size, read-only) before
// calling an export, so an export may assert these properties. Exports reject with
// OperatingError; the NBD layer maps its code to the reply's errno (src/errors.ts).

import type { Extent } from "../io/block-file.js";

export interface NbdExportFlags {
  readonly readOnly: boolean;
  readonly canTrim: boolean;
  readonly canZero: boolean; // WRITE_ZEROES (always fast-zero capable when true: see fastZero)
  readonly canFastZero: boolean;
  readonly canCache: boolean;
  // True only if FLUSH on any connection makes durable every write completed on every
  // connection to this export before the FLUSH arrived.
  readonly canMultiConn: boolean;
}

export interface WriteOptions {
  readonly fua: boolean;
}

export interface ZeroOptions extends WriteOptions {
  readonly noHole: boolean; // NBD_CMD_FLAG_NO_HOLE: keep the range allocated
  readonly fastZero: boolean; // NBD_CMD_FLAG_FAST_ZERO: fail with NOT_SUPPORTED rather than write slowly
}

export interface NbdExport {
  readonly name: string;
  readonly description: string;
  readonly flags: NbdExportFlags;
  // Current size in bytes (a volume may be resized between connections).
  size(): number;
  // Reads length bytes at offset into target (target.length === length).
  read(offset: number, target: Buffer): Promise<void>;
  write(offset: number, data: Buffer, options: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  trim(offset: number, length: number, options: WriteOptions): Promise<void>;
  zero(offset: number, length: number, options: ZeroOptions): Promise<void>;
  cache(offset: number, length: number): Promise<void>;
  // Allocated extents in [offset, offset+length); null means "all data" (cannot tell).
  allocation(offset: number, length: number, extentsMax: number): Promise<Extent[] | null>;
  // Called when a connection opens/closes this export (for accounting and "in use" checks).
  attach(): void;
  detach(): void;
}

export interface NbdExportRegistry {
  lookup(name: string): NbdExport | undefined;
  list(): readonly { name: string; description: string }[];
}

// Observes the NBD layer for metrics and logs, never for decisions.
export interface NbdObserver {
  connectionOpened(remote: string): void;
  connectionClosed(remote: string, reason: string): void;
  request(kind: NbdRequestKind, exportName: string, bytes: number, latencyMs: number, errorCode: string | undefined): void;
  protocolError(remote: string, code: string, message: string): void;
}

export type NbdRequestKind = "read" | "write" | "flush" | "trim" | "zero" | "cache" | "block_status" | "disc";
