// Small helpers shared by the payload codecs: a bounds-checked reader of untrusted bytes that
// fails only with FrameError, a writer that asserts (its input comes from inside the process),
// and the name rule. All integers are little-endian.

import { assert } from "../assert.js";
import { FrameError } from "./frame-error.js";
import { replicationNameBytesMax } from "./limits.js";
import { isName as isNameText } from "../names.js";

export const u64Max = 0xffff_ffff_ffff_ffffn;
const safeMax = BigInt(Number.MAX_SAFE_INTEGER);

// Reads fields in order from a payload; every read checks the bytes left first.
export class PayloadReader {
  private at = 0;
  constructor(private readonly source: Buffer) {}

  get remaining(): number {
    return this.source.length - this.at;
  }

  u8(): number {
    this.need(1);
    this.at += 1;
    return this.source[this.at - 1]!;
  }

  u16(): number {
    this.need(2);
    this.at += 2;
    return this.source.readUInt16LE(this.at - 2);
  }

  u32(): number {
    this.need(4);
    this.at += 4;
    return this.source.readUInt32LE(this.at - 4);
  }

  u64(): bigint {
    this.need(8);
    this.at += 8;
    return this.source.readBigUInt64LE(this.at - 8);
  }

  // A u64 that must fit a JS number exactly (byte offsets, times): above 2^53 is `field`.
  u64Number(field: string): number {
    const value = this.u64();
    if (value > safeMax) throw new FrameError("field", { field, value });
    return Number(value);
  }

  // A u16/u32 reserved field: must be zero.
  zero32(field: string): void {
    const value = this.u32();
    if (value !== 0) throw new FrameError("field", { field, value });
  }

  zero16(field: string): void {
    const value = this.u16();
    if (value !== 0) throw new FrameError("field", { field, value });
  }

  // A view of the next `size` bytes (no copy).
  bytes(size: number): Buffer {
    this.need(size);
    this.at += size;
    return this.source.subarray(this.at - size, this.at);
  }

  // u8 length, then that many bytes obeying the name rule.
  name(field: string): string {
    this.need(1);
    const length = this.source[this.at]!;
    this.at += 1;
    const bytes = this.bytes(length);
    if (!isName(bytes)) throw new FrameError("name", { field, length });
    return bytes.toString("latin1");
  }

  // Every byte of the payload was consumed.
  end(): void {
    if (this.at !== this.source.length) throw new FrameError("length", { trailing: this.source.length - this.at });
  }

  private need(size: number): void {
    if (this.source.length - this.at < size) throw new FrameError("length", { needed: size, left: this.source.length - this.at });
  }
}

// Writes fields in order into a buffer of a known size.
export class PayloadWriter {
  private at = 0;
  readonly target: Buffer;
  constructor(size: number) {
    this.target = Buffer.alloc(size);
  }

  u8(value: number): this {
    this.at = this.target.writeUInt8(value, this.at);
    return this;
  }

  u16(value: number): this {
    this.at = this.target.writeUInt16LE(value, this.at);
    return this;
  }

  u32(value: number): this {
    this.at = this.target.writeUInt32LE(value, this.at);
    return this;
  }

  u64(value: bigint | number): this {
    assert(typeof value === "number" ? Number.isSafeInteger(value) && value >= 0 : value >= 0n && value <= u64Max, "u64 out of range");
    this.at = this.target.writeBigUInt64LE(BigInt(value), this.at);
    return this;
  }

  name(value: string): this {
    assert(isNameString(value), () => `not a valid name: ${JSON.stringify(value)}`);
    this.at = this.target.writeUInt8(value.length, this.at);
    this.at += this.target.write(value, this.at, "latin1");
    return this;
  }

  bytes(value: Buffer): this {
    this.at += value.copy(this.target, this.at);
    return this;
  }

  done(): Buffer {
    assert(this.at === this.target.length, () => `payload writer filled ${this.at} of ${this.target.length} bytes`);
    return this.target;
  }
}

function isAlphanumeric(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
}

// The name rule (names.ts), on bytes.
export function isName(bytes: Uint8Array): boolean {
  if (bytes.length < 1 || bytes.length > replicationNameBytesMax || !isAlphanumeric(bytes[0]!)) return false;
  for (let index = 1; index < bytes.length; index++) {
    const byte = bytes[index]!;
    if (!isAlphanumeric(byte) && byte !== 0x5f && byte !== 0x2e && byte !== 0x2d) return false;
  }
  return true;
}

export function isNameString(value: string): boolean {
  return isNameText(value, replicationNameBytesMax);
}

// Printable ASCII (0x20-0x7e), for texts meant for a log line.
export function isPrintable(bytes: Uint8Array): boolean {
  for (const byte of bytes) if (byte < 0x20 || byte > 0x7e) return false;
  return true;
}
