// CRC-32C (Castagnoli), the checksum of every on-disk and on-wire format (docs/FORMAT.md,
// docs/PROTOCOL.md). The native addon computes it (native/crc32c.c): the crc32 instruction in
// three interleaved streams on x86-64, slicing-by-8 tables elsewhere.

import { nativeFs } from "./native.js";

const crc32cNative = nativeFs.crc32c;

// The standard CRC-32C of `data`, continuing from `initial`, a previous result:
// crc32c(b, crc32c(a)) === crc32c(a followed by b).
export function crc32c(data: Uint8Array, initial = 0): number {
  return crc32cNative(data, initial);
}
