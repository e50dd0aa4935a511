// The NBD wire format (fixed newstyle handshake, simple and structured replies): constants and
// pure codecs. Nothing here touches a socket. Every decoder reads untrusted bytes: it checks a
// length against what is present and against a limit before using it, and it fails only with
// NbdFrameError (an OperatingError with a stable code), never with a RangeError.
//
// All integers are big-endian. 64-bit handles travel as two 32-bit halves (never interpreted);
// 64-bit offsets decode to a JS number, exact below 2^53. An offset at or above 2^53 decodes
// as offsetBeyond (2^53), which lies past the end of every export (volumeSizeMax < 2^53).
//
//   request (28 bytes)                       simple reply (16 bytes)
//   0  magic 0x25609513                      0  magic 0x67446698
//   4  command flags (16) | type (16)        4  errno
//   8  handle (64)                           8  handle (64)
//   16 offset (64)                           (READ data follows on success)
//   24 length (32)
//
//   structured reply chunk (20 bytes + payload)
//   0  magic 0x668e33ef   4 flags (16) | type (16)   8 handle (64)   16 payload length (32)

import { assert } from "../assert.js";
import { nbdOptionDataSizeMax, nbdStringLengthMax, volumeSizeMax } from "../constants.js";
import { OperatingError } from "../errors.js";

// ---- Magics ----
export const magicInitPassword = Buffer.from("NBDMAGIC", "latin1");
export const magicOption = Buffer.from("IHAVEOPT", "latin1"); // also the newstyle magic
export const magicOptionReplyHigh = 0x0003e889;
export const magicOptionReplyLow = 0x045565a9;
export const magicRequest = 0x25609513;
export const magicSimpleReply = 0x67446698;
export const magicStructuredReply = 0x668e33ef;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) ----
export const handshakeFlag = { fixedNewstyle: 1 << 0, noZeroes: 1 << 1 } as const;
export const clientFlag = { fixedNewstyle: 1 << 0, noZeroes: 1 << 1 } as const;
export const clientFlagsKnown = clientFlag.fixedNewstyle | clientFlag.noZeroes;

// ---- Transmission flags (16 bits) ----
export const transmissionFlag = {
  hasFlags: 1 << 0,
  readOnly: 1 << 1,
  sendFlush: 1 << 2,
  sendFua: 1 << 3,
  rotational: 1 << 4,
  sendTrim: 1 << 5,
  sendWriteZeroes: 1 << 6,
  sendDf: 1 << 7,
  canMultiConn: 1 << 8,
  sendResize: 1 << 9,
  sendCache: 1 << 10,
  sendFastZero: 1 << 11,
} as const;

// ---- Options ----
export const option = {
  exportName: 1,
  abort: 2,
  list: 3,
  peekExport: 4,
  startTls: 5,
  info: 6,
  go: 7,
  structuredReply: 8,
  listMetaContext: 9,
  setMetaContext: 10,
} as const;

// ---- Option reply types ----
const replyError = 0x80000000;
export const optionReply = {
  ack: 1,
  server: 2,
  info: 3,
  metaContext: 4,
  errUnsupported: replyError + 1,
  errPolicy: replyError + 2,
  errInvalid: replyError + 3,
  errPlatform: replyError + 4,
  errTlsRequired: replyError + 5,
  errUnknown: replyError + 6,
  errShutdown: replyError + 7,
  errBlockSizeRequired: replyError + 8,
  errTooBig: replyError + 9,
} as const;

// ---- NBD_REP_INFO types ----
export const info = { export: 0, name: 1, description: 2, blockSize: 3 } as const;

// ---- Commands and command flags ----
export const command = {
  read: 0,
  write: 1,
  disconnect: 2,
  flush: 3,
  trim: 4,
  cache: 5,
  writeZeroes: 6,
  blockStatus: 7,
} as const;

export const commandFlag = {
  fua: 1 << 0,
  noHole: 1 << 1,
  df: 1 << 2,
  reqOne: 1 << 3,
  fastZero: 1 << 4,
} as const;

// ---- Structured replies ----
export const replyFlagDone = 1 << 0;
export const chunkType = {
  none: 0,
  offsetData: 1,
  offsetHole: 2,
  blockStatus: 5,
  error: (1 << 15) + 1,
  errorOffset: (1 << 15) + 2,
} as const;

// ---- base:allocation ----
export const metaContextBaseAllocation = "base:allocation";
export const stateFlag = { hole: 1 << 0, zero: 1 << 1 } as const;

// ---- Sizes ----
export const greetingSize = 18; // NBDMAGIC, IHAVEOPT, handshake flags
export const clientFlagsSize = 4;
export const optionHeaderSize = 16;
export const optionReplyHeaderSize = 20;
export const requestHeaderSize = 28;
export const simpleReplyHeaderSize = 16;
export const chunkHeaderSize = 20;
export const readChunkHeaderSize = chunkHeaderSize + 8; // OFFSET_DATA: header + offset
export const exportNameReplyZeroesSize = 124;

export const offsetBeyond = 2 ** 53;
assert(volumeSizeMax < offsetBeyond, "offsetBeyond lies past every export");

// ---- The one error decoders throw ----
export type NbdFrameReason = "truncated" | "magic" | "size" | "invalid";

export class NbdFrameError extends OperatingError<"REQUEST_INVALID" | "REQUEST_TOO_LARGE"> {
  override name = "NbdFrameError";
  constructor(
    readonly reason: NbdFrameReason,
    what: string,
  ) {
    super(reason === "size" ? "REQUEST_TOO_LARGE" : "REQUEST_INVALID", { frame: what, reason });
  }
}

// ---- Requests ----

// Mutable on purpose: a connection decodes every request into one reused record.
export interface RequestHeader {
  flags: number;
  type: number;
  handleHigh: number;
  handleLow: number;
  offset: number; // exact below 2^53, else offsetBeyond
  length: number;
}

export function requestHeaderEmpty(): RequestHeader {
  return { flags: 0, type: 0, handleHigh: 0, handleLow: 0, offset: 0, length: 0 };
}

export function requestHeaderDecode(source: Buffer, position: number, into: RequestHeader): RequestHeader {
  if (!(position >= 0 && source.length - position >= requestHeaderSize)) throw new NbdFrameError("truncated", "request");
  if (source.readUInt32BE(position) !== magicRequest) throw new NbdFrameError("magic", "request");
  into.flags = source.readUInt16BE(position + 4);
  into.type = source.readUInt16BE(position + 6);
  into.handleHigh = source.readUInt32BE(position + 8);
  into.handleLow = source.readUInt32BE(position + 12);
  into.offset = offset64Decode(source.readUInt32BE(position + 16), source.readUInt32BE(position + 20));
  into.length = source.readUInt32BE(position + 24);
  return into;
}

// For tests and clients: the inverse of requestHeaderDecode (offset must be exact).
export function requestHeaderEncode(header: Readonly<RequestHeader>): Buffer {
  assert(Number.isSafeInteger(header.offset) && header.offset >= 0, "offset is a safe integer");
  const target = Buffer.alloc(requestHeaderSize);
  target.writeUInt32BE(magicRequest, 0);
  target.writeUInt16BE(header.flags, 4);
  target.writeUInt16BE(header.type, 6);
  target.writeUInt32BE(header.handleHigh, 8);
  target.writeUInt32BE(header.handleLow, 12);
  offset64Write(target, 16, header.offset);
  target.writeUInt32BE(header.length, 24);
  return target;
}

function offset64Decode(high: number, low: number): number {
  if (high >= 0x200000) return offsetBeyond; // high * 2^32 >= 2^53
  return high * 0x100000000 + low;
}

function offset64Write(target: Buffer, position: number, value: number): void {
  target.writeUInt32BE(Math.floor(value / 0x100000000), position);
  target.writeUInt32BE(value >>> 0, position + 4);
}

// ---- Options ----

export interface OptionHeader {
  readonly option: number;
  readonly length: number; // unchecked: the caller decides between reading, draining, dropping
}

export function optionHeaderDecode(source: Buffer, position: number): OptionHeader {
  if (!(position >= 0 && source.length - position >= optionHeaderSize)) throw new NbdFrameError("truncated", "option");
  if (magicOption.compare(source, position, position + 8) !== 0) throw new NbdFrameError("magic", "option");
  return { option: source.readUInt32BE(position + 8), length: source.readUInt32BE(position + 12) };
}

export interface OptionFrame {
  readonly option: number;
  readonly data: Buffer; // a view of the source, never a copy
}

// A whole option frame (header and data) from one buffer. Rejects an oversize length before
// looking for the data, so a forged length never causes an allocation or a long wait.
export function optionDecode(source: Buffer): OptionFrame {
  const header = optionHeaderDecode(source, 0);
  if (header.length > nbdOptionDataSizeMax) throw new NbdFrameError("size", "option");
  if (source.length - optionHeaderSize < header.length) throw new NbdFrameError("truncated", "option");
  return { option: header.option, data: source.subarray(optionHeaderSize, optionHeaderSize + header.length) };
}

export function optionEncode(optionType: number, data: Uint8Array = Buffer.alloc(0)): Buffer {
  const target = Buffer.allocUnsafe(optionHeaderSize + data.length);
  magicOption.copy(target, 0);
  target.writeUInt32BE(optionType >>> 0, 8);
  target.writeUInt32BE(data.length, 12);
  target.set(data, optionHeaderSize);
  return target;
}

// NBD_OPT_INFO / NBD_OPT_GO data: name length (32), name, count (16), info types (16 each).
export interface GoOption {
  readonly name: string;
  readonly infoRequests: readonly number[];
}

export function goOptionDecode(data: Buffer): GoOption {
  if (data.length < 6) throw new NbdFrameError("truncated", "go");
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 6) throw new NbdFrameError("invalid", "go name length");
  const name = stringDecode(data, 4, nameLength, "go name");
  let position = 4 + nameLength;
  const count = data.readUInt16BE(position);
  position += 2;
  if (data.length - position !== count * 2) throw new NbdFrameError("invalid", "go info count");
  const infoRequests: number[] = [];
  for (let index = 0; index < count; index += 1) infoRequests.push(data.readUInt16BE(position + index * 2));
  return { name, infoRequests };
}

export function goOptionEncode(name: string, infoRequests: readonly number[]): Buffer {
  const nameBytes = Buffer.from(name, "utf8");
  const target = Buffer.alloc(4 + nameBytes.length + 2 + infoRequests.length * 2);
  target.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(target, 4);
  target.writeUInt16BE(infoRequests.length, 4 + nameBytes.length);
  infoRequests.forEach((type, index) => target.writeUInt16BE(type, 6 + nameBytes.length + index * 2));
  return target;
}

// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data: export name length (32), name,
// query count (32), then each query as length (32) and string.
export interface MetaContextOption {
  readonly exportName: string;
  readonly queries: readonly string[];
}

export function metaContextOptionDecode(data: Buffer, queriesMax: number): MetaContextOption {
  if (data.length < 8) throw new NbdFrameError("truncated", "meta context");
  const nameLength = data.readUInt32BE(0);
  if (nameLength > data.length - 8) throw new NbdFrameError("invalid", "meta context name length");
  const exportName = stringDecode(data, 4, nameLength, "meta context export name");
  let position = 4 + nameLength;
  const count = data.readUInt32BE(position);
  position += 4;
  // Each query takes at least 4 bytes: a count the data cannot hold is invalid, not "too many".
  if (count > (data.length - position) / 4) throw new NbdFrameError("invalid", "meta context query count");
  if (count > queriesMax) throw new NbdFrameError("size", "meta context query count");
  const queries: string[] = [];
  for (let index = 0; index < count; index += 1) {
    if (data.length - position < 4) throw new NbdFrameError("invalid", "meta context query");
    const length = data.readUInt32BE(position);
    position += 4;
    if (length > data.length - position) throw new NbdFrameError("invalid", "meta context query length");
    queries.push(stringDecode(data, position, length, "meta context query"));
    position += length;
  }
  if (position !== data.length) throw new NbdFrameError("invalid", "meta context trailing bytes");
  return { exportName, queries };
}

export function metaContextOptionEncode(exportName: string, queries: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const name = Buffer.from(exportName, "utf8");
  parts.push(uint32(name.length), name, uint32(queries.length));
  for (const query of queries) {
    const bytes = Buffer.from(query, "utf8");
    parts.push(uint32(bytes.length), bytes);
  }
  return Buffer.concat(parts);
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });

// A protocol string: valid UTF-8, no NUL, at most nbdStringLengthMax bytes.
export function stringDecode(source: Buffer, position: number, length: number, what: string): string {
  if (length > nbdStringLengthMax) throw new NbdFrameError("size", what);
  if (position < 0 || source.length - position < length) throw new NbdFrameError("truncated", what);
  const bytes = source.subarray(position, position + length);
  if (bytes.includes(0)) throw new NbdFrameError("invalid", what);
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new NbdFrameError("invalid", what);
  }
}

// ---- Handshake encoders ----

export function greetingEncode(): Buffer {
  const target = Buffer.allocUnsafe(greetingSize);
  magicInitPassword.copy(target, 0);
  magicOption.copy(target, 8);
  target.writeUInt16BE(handshakeFlag.fixedNewstyle | handshakeFlag.noZeroes, 16);
  return target;
}

export function optionReplyEncode(optionType: number, replyType: number, data?: Buffer): Buffer {
  const length = data?.length ?? 0;
  const target = Buffer.allocUnsafe(optionReplyHeaderSize + length);
  target.writeUInt32BE(magicOptionReplyHigh, 0);
  target.writeUInt32BE(magicOptionReplyLow, 4);
  target.writeUInt32BE(optionType >>> 0, 8);
  target.writeUInt32BE(replyType >>> 0, 12);
  target.writeUInt32BE(length, 16);
  if (data) data.copy(target, optionReplyHeaderSize);
  return target;
}

export function optionReplyErrorEncode(optionType: number, replyType: number, message: string): Buffer {
  assert(replyType >= replyError, "an error reply type has bit 31 set");
  return optionReplyEncode(optionType, replyType, stringEncode(message));
}

export function serverReplyDataEncode(name: string, description: string): Buffer {
  const nameBytes = stringEncode(name);
  return Buffer.concat([uint32(nameBytes.length), nameBytes, stringEncode(description)]);
}

export function infoExportEncode(size: number, flags: number): Buffer {
  const target = Buffer.allocUnsafe(12);
  target.writeUInt16BE(info.export, 0);
  offset64Write(target, 2, size);
  target.writeUInt16BE(flags, 10);
  return target;
}

export function infoStringEncode(type: typeof info.name | typeof info.description, text: string): Buffer {
  const target = Buffer.allocUnsafe(2);
  target.writeUInt16BE(type, 0);
  return Buffer.concat([target, stringEncode(text)]);
}

export function infoBlockSizeEncode(minimum: number, preferred: number, maximum: number): Buffer {
  const target = Buffer.allocUnsafe(14);
  target.writeUInt16BE(info.blockSize, 0);
  target.writeUInt32BE(minimum, 2);
  target.writeUInt32BE(preferred, 6);
  target.writeUInt32BE(maximum, 10);
  return target;
}

export function metaContextReplyDataEncode(contextId: number, name: string): Buffer {
  return Buffer.concat([uint32(contextId), stringEncode(name)]);
}

// The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless NO_ZEROES.
export function exportNameReplyEncode(size: number, flags: number, noZeroes: boolean): Buffer {
  const target = Buffer.alloc(10 + (noZeroes ? 0 : exportNameReplyZeroesSize));
  offset64Write(target, 0, size);
  target.writeUInt16BE(flags, 8);
  return target;
}

// ---- Transmission encoders (write into a caller's buffer: no allocation on the hot path) ----

export function simpleReplyWrite(target: Buffer, position: number, errno: number, handleHigh: number, handleLow: number): void {
  target.writeUInt32BE(magicSimpleReply, position);
  target.writeUInt32BE(errno, position + 4);
  target.writeUInt32BE(handleHigh, position + 8);
  target.writeUInt32BE(handleLow, position + 12);
}

export function chunkHeaderWrite(
  target: Buffer,
  position: number,
  flags: number,
  type: number,
  handleHigh: number,
  handleLow: number,
  payloadLength: number,
): void {
  target.writeUInt32BE(magicStructuredReply, position);
  target.writeUInt16BE(flags, position + 4);
  target.writeUInt16BE(type, position + 6);
  target.writeUInt32BE(handleHigh, position + 8);
  target.writeUInt32BE(handleLow, position + 12);
  target.writeUInt32BE(payloadLength, position + 16);
}

// OFFSET_DATA chunk header, DONE set: the data (dataLength bytes) follows at position + 28.
export function readChunkHeaderWrite(
  target: Buffer,
  position: number,
  handleHigh: number,
  handleLow: number,
  offset: number,
  dataLength: number,
): void {
  chunkHeaderWrite(target, position, replyFlagDone, chunkType.offsetData, handleHigh, handleLow, dataLength + 8);
  offset64Write(target, position + chunkHeaderSize, offset);
}

export function noneChunkEncode(handleHigh: number, handleLow: number): Buffer {
  const target = Buffer.allocUnsafe(chunkHeaderSize);
  chunkHeaderWrite(target, 0, replyFlagDone, chunkType.none, handleHigh, handleLow, 0);
  return target;
}

// NBD_REPLY_TYPE_ERROR with DONE: errno, message length (16), message.
export function errorChunkEncode(handleHigh: number, handleLow: number, errno: number, message: string): Buffer {
  assert(errno !== 0, "an error chunk carries a nonzero errno");
  const text = stringEncode(message);
  const target = Buffer.allocUnsafe(chunkHeaderSize + 6 + text.length);
  chunkHeaderWrite(target, 0, replyFlagDone, chunkType.error, handleHigh, handleLow, 6 + text.length);
  target.writeUInt32BE(errno, chunkHeaderSize);
  target.writeUInt16BE(text.length, chunkHeaderSize + 4);
  text.copy(target, chunkHeaderSize + 6);
  return target;
}

// NBD_REPLY_TYPE_BLOCK_STATUS with DONE: context id, then (length, flags) pairs.
export function blockStatusChunkEncode(
  handleHigh: number,
  handleLow: number,
  contextId: number,
  descriptors: readonly { readonly length: number; readonly flags: number }[],
): Buffer {
  assert(descriptors.length > 0, "block status carries at least one descriptor");
  const payloadLength = 4 + descriptors.length * 8;
  const target = Buffer.allocUnsafe(chunkHeaderSize + payloadLength);
  chunkHeaderWrite(target, 0, replyFlagDone, chunkType.blockStatus, handleHigh, handleLow, payloadLength);
  target.writeUInt32BE(contextId, chunkHeaderSize);
  let position = chunkHeaderSize + 4;
  for (const descriptor of descriptors) {
    assert(descriptor.length > 0 && descriptor.length <= 0xffffffff, "a descriptor length fits 32 bits and is nonzero");
    target.writeUInt32BE(descriptor.length, position);
    target.writeUInt32BE(descriptor.flags, position + 4);
    position += 8;
  }
  return target;
}

// ---- Helpers ----

// Encodes a protocol string, cutting it (at a character boundary) to nbdStringLengthMax bytes.
export function stringEncode(text: string): Buffer {
  const bytes = Buffer.from(text.replaceAll("\0", ""), "utf8");
  if (bytes.length <= nbdStringLengthMax) return bytes;
  let end = nbdStringLengthMax;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end -= 1; // not inside a character
  return bytes.subarray(0, end);
}

function uint32(value: number): Buffer {
  const target = Buffer.allocUnsafe(4);
  target.writeUInt32BE(value >>> 0, 0);
  return target;
}
