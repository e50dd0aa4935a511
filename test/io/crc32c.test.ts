// CRC-32C, both native paths (the one this CPU runs and the portable tables), against a
// bit-by-bit reference written here: the published vectors, every length to 300 at every
// misalignment (one stream, three streams and their join), the lengths where the three-stream
// rounds change (native/crc32c.c: 128 bytes, parts of 8 KiB), 1 MiB, chaining, and a property
// over random lengths, splits and initial values.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import fc from "fast-check";
import { crc32c } from "../../src/io/crc32c.js";
import { nativeFs } from "../../src/io/native.js";

type Crc32c = (data: Uint8Array, initial?: number) => number;

const castagnoliReflected = 0x82f63b78;

function crc32cReference(data: Uint8Array, initial = 0): number {
  let state = ~initial >>> 0;
  for (const byte of data) {
    state ^= byte;
    for (let bit = 0; bit < 8; bit++) state = state & 1 ? (state >>> 1) ^ castagnoliReflected : state >>> 1;
  }
  return ~state >>> 0;
}

// Deterministic bytes (xorshift32), so a failing length replays.
function bytesFilled(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = seed | 1;
  for (let index = 0; index < length; index++) {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    bytes[index] = state & 0xff;
  }
  return bytes;
}

// `length` bytes starting `offset` bytes into a larger buffer: a view that is not 8-byte aligned.
function misaligned(length: number, offset: number, seed: number): Uint8Array {
  return bytesFilled(length + offset, seed).subarray(offset);
}

const implementations: ReadonlyArray<[string, Crc32c]> = [
  ["crc32c (this CPU's path)", crc32c],
  ["portable tables", (data, initial = 0) => nativeFs.crc32cPortable(data, initial)],
];

for (const [name, checksum] of implementations) {
  describe(`CRC-32C: ${name}`, () => {
    it("gives the published check values (RFC 3720 B.4 and the catalogue's 123456789)", () => {
      assert.equal(checksum(Buffer.from("123456789")), 0xe3069283);
      assert.equal(checksum(new Uint8Array(32)), 0x8a9136aa);
      assert.equal(checksum(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
      assert.equal(checksum(Uint8Array.from({ length: 32 }, (_, index) => index)), 0x46dd794e);
      assert.equal(checksum(Uint8Array.from({ length: 32 }, (_, index) => 31 - index)), 0x113fdb5c);
    });

    it("returns the initial value for no bytes", () => {
      assert.equal(checksum(new Uint8Array(0)), 0);
      assert.equal(checksum(new Uint8Array(0), 0xdeadbeef), 0xdeadbeef);
      assert.equal(checksum(Buffer.alloc(10).subarray(10), 0x12345678), 0x12345678);
    });

    it("matches the reference for every length 0..300 at every offset 0..7", () => {
      for (let length = 0; length <= 300; length++) {
        for (let offset = 0; offset < 8; offset++) {
          const data = misaligned(length, offset, length * 8 + offset);
          assert.equal(checksum(data, 0x9e3779b9), crc32cReference(data, 0x9e3779b9), `length ${length}, offset ${offset}`);
        }
      }
    });

    it("matches the reference where the three-stream rounds change", () => {
      const lengths = [4096, 4096 + 17, 3 * 8192 - 1, 3 * 8192, 3 * 8192 + 1, 3 * 8192 + 255, 3 * 8192 + 256, 6 * 8192 + 23];
      for (const length of lengths) {
        for (const offset of [0, 1, 7]) {
          const data = misaligned(length, offset, length + offset);
          assert.equal(checksum(data, 7), crc32cReference(data, 7), `length ${length}, offset ${offset}`);
        }
      }
    });

    it("matches the reference for 1 MiB and 1 MiB + 13 bytes", () => {
      for (const length of [1 << 20, (1 << 20) + 13]) {
        const data = misaligned(length, 3, length);
        assert.equal(checksum(data), crc32cReference(data));
      }
    });

    it("chains: crc32c(b, crc32c(a)) === crc32c(a followed by b)", () => {
      const data = bytesFilled(5000, 42);
      const whole = checksum(data);
      for (const split of [0, 1, 7, 8, 255, 256, 1000, 4096, 4999, 5000]) {
        assert.equal(checksum(data.subarray(split), checksum(data.subarray(0, split))), whole, `split ${split}`);
      }
    });

    it("reads any view in place: a Buffer slice of the pool, a Uint8Array with a byte offset", () => {
      const bytes = bytesFilled(100, 5);
      const view = new Uint8Array(bytes.buffer, 37, 50);
      assert.equal(checksum(view), crc32cReference(bytes.subarray(37, 87)));
      const pooled = Buffer.from("a pooled buffer starts at an offset in a shared ArrayBuffer");
      assert.equal(checksum(pooled), crc32cReference(pooled));
    });

    it("agrees with the reference on random lengths, offsets, splits and initial values", () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: 7 * 8192 }),
          fc.integer({ min: 0, max: 7 }),
          fc.double({ min: 0, max: 1, noNaN: true }),
          fc.integer({ min: 0, max: 0xffff_ffff }),
          fc.integer(),
          (length, offset, splitFraction, initial, seed) => {
            const data = misaligned(length, offset, seed);
            const split = Math.floor(length * splitFraction);
            const expected = crc32cReference(data, initial);
            assert.equal(checksum(data, initial), expected);
            assert.equal(checksum(data.subarray(split), checksum(data.subarray(0, split), initial)), expected);
          },
        ),
        { numRuns: 100 },
      );
    });
  });
}

describe("CRC-32C: the native function", () => {
  it("uses the crc32 instruction on x86-64 with SSE4.2 and PCLMULQDQ", () => {
    const flags = process.platform === "linux" ? (/^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "") : "";
    const capable = process.arch === "x64" && / sse4_2( |$)/.test(flags) && / pclmulqdq( |$)/.test(flags);
    assert.equal(nativeFs.crc32cHardware, capable);
  });

  it("throws a TypeError for what is not a byte view or an initial value", () => {
    const call = nativeFs.crc32c as (...values: unknown[]) => number;
    assert.throws(() => call("123456789", 0), TypeError);
    assert.throws(() => call(Buffer.alloc(4)), TypeError);
    assert.throws(() => call(Buffer.alloc(4), "0"), TypeError);
  });
});
