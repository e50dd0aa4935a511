// Loads the lockstep-fs addon (native/lockstep-fs.c): fallocate, block-device ranges,
// SEEK_DATA/SEEK_HOLE and batches of positioned writes, which node:fs does not expose, and
// CRC-32C (native/crc32c.c).

import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

export interface NativeFs {
  seek(fd: number, offset: number, whence: number): number;
  // allocate: fallocate mode 0, the blocks reserved (reading back as before) and the file
  // grown to offset + length if it was shorter.
  fallocate(fd: number, mode: "punch" | "zero" | "allocate", offset: number, length: number): Promise<void>;
  blockRange(fd: number, request: "discard" | "zeroout", offset: number, length: number): Promise<void>;
  // sync_file_range(SYNC_FILE_RANGE_WRITE) on the thread pool: starts writeback, waits for none.
  startWriteback(fd: number, mode: "writeback", offset: number, length: number): Promise<void>;
  // preadv2(RWF_NOWAIT) on the calling thread: bytes read, or -1 when the page cache cannot
  // serve it at once.
  readNoWait(fd: number, target: Buffer, position: number): number;
  writeNoWait(fd: number, sources: readonly Buffer[], position: number): number;
  // Each buffer at its own position, in order, by one thread-pool job (1..1024 of them).
  writeBatch(fd: number, sources: readonly Buffer[], positions: readonly number[]): Promise<void>;
  // The buffers back to back at position, on a descriptor opened with O_DIRECT, through the
  // pool thread's page-aligned buffer (1..1024 buffers; position and total length multiples
  // of directAlignBytes).
  writeDirect(fd: number, sources: readonly Buffer[], position: number): Promise<void>;
  readonly directAlignBytes: number;
  // The most buffers one writeBatch or writeDirect takes.
  readonly writeSourcesMax: number;
  // CRC-32C of the bytes in place, continuing from `initial` (src/io/crc32c.ts calls it).
  crc32c(data: Uint8Array, initial: number): number;
  // The same with the portable tables whatever the CPU: for the tests of that path only.
  crc32cPortable(data: Uint8Array, initial: number): number;
  // Whether crc32c uses the crc32 instruction (x86-64 with SSE4.2 and PCLMULQDQ).
  readonly crc32cHardware: boolean;
  readonly SEEK_DATA: number;
  readonly SEEK_HOLE: number;
  readonly SEEK_END: number;
}

function projectRoot(): string {
  // dist/src/io/native.js -> project root is three levels up.
  return join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
}

const require = createRequire(import.meta.url);
export const nativeFs: NativeFs = require(join(projectRoot(), "build", "Release", "lockstep_fs.node")) as NativeFs;
