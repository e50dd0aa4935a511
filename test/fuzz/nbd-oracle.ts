// The fuzzer's own reference of what a correct NBD server does with a stream of transmission
// requests: which of them change the image, where, and to what. It is written from the NBD
// protocol and this server's documented limits (constants.ts, nbd/request-check.ts's header),
// not from the server's code, so that the server and the oracle can disagree: the live
// campaign compares the image after each mutant with the oracle's model.
//
//   header (28 bytes) ── bad magic ──▶ the server hangs up: nothing after it runs
//     │ DISC ──▶ nothing after it runs
//     │ WRITE ── valid ──▶ payload (length bytes) ──▶ the range becomes the payload
//     │       └─ refused ─▶ payload skipped (up to nbdWriteDrainSizeMax; beyond: hang-up)
//     │ WRITE_ZEROES, TRIM ── valid ──▶ the range reads as zero (trim: volume.ts zeroes it)
//     └ anything else: no change, no payload
//   a stream that ends inside a header or a valid WRITE's payload: that request never runs.
//   every other whole request but DISC gets one reply (a hang-up may cut the replies short).

import { nbdBlockSizeMinimum, nbdPayloadSizeMax, nbdWriteDrainSizeMax } from "../../src/constants.js";
import { command, commandFlag, magicRequest, requestHeaderSize } from "../../src/nbd/protocol.js";

// What the valid handshake of the connection agreed on.
export interface SessionTerms {
  readonly size: number;
  readonly readOnly: boolean;
  readonly blockSizeNegotiated: boolean; // NBD_INFO_BLOCK_SIZE asked for in GO: misaligned is refused
  readonly canFastZero: boolean; // file volumes can (volume.ts); block devices cannot
}

export interface ImageChange {
  readonly kind: "write" | "zero" | "trim";
  readonly offset: number;
  readonly length: number;
  readonly data: Buffer | null; // WRITE's payload; null: zeroes
}

export interface StreamExpectation {
  readonly changes: readonly ImageChange[]; // in stream order; each one log record
  readonly replies: number; // requests that are answered (a hang-up may cut them short)
  readonly hangUp: boolean; // the stream breaks a rule that ends the connection
}

const flagsWrite = commandFlag.fua;
const flagsZero = commandFlag.fua | commandFlag.noHole | commandFlag.fastZero;

function inRange(terms: SessionTerms, offset: bigint, length: number): boolean {
  if (offset + BigInt(length) > BigInt(terms.size)) return false;
  return !terms.blockSizeNegotiated || (offset % BigInt(nbdBlockSizeMinimum) === 0n && length % nbdBlockSizeMinimum === 0);
}

// Whether a correct server carries out this change (or refuses it with an error reply).
function changeAccepted(terms: SessionTerms, type: number, flags: number, offset: bigint, length: number): boolean {
  if (terms.readOnly) return false;
  switch (type) {
    case command.write:
      return (flags & ~flagsWrite) === 0 && length <= nbdPayloadSizeMax && inRange(terms, offset, length);
    case command.trim:
      return (flags & ~flagsWrite) === 0 && inRange(terms, offset, length);
    case command.writeZeroes: {
      const fastZero = (flags & commandFlag.fastZero) !== 0;
      if ((flags & ~flagsZero) !== 0 || (fastZero && !terms.canFastZero)) return false;
      if (terms.blockSizeNegotiated && !fastZero && length > nbdPayloadSizeMax) return false;
      return inRange(terms, offset, length);
    }
    default:
      return false;
  }
}

export function streamExpectation(stream: Buffer, terms: SessionTerms): StreamExpectation {
  const changes: ImageChange[] = [];
  let replies = 0;
  for (let at = 0; stream.length - at >= requestHeaderSize; ) {
    if (stream.readUInt32BE(at) !== magicRequest) return { changes, replies, hangUp: true };
    const flags = stream.readUInt16BE(at + 4);
    const type = stream.readUInt16BE(at + 6);
    const offset = stream.readBigUInt64BE(at + 16);
    const length = stream.readUInt32BE(at + 24);
    at += requestHeaderSize;
    if (type === command.disconnect) return { changes, replies, hangUp: false };
    const accepted = changeAccepted(terms, type, flags, offset, length);
    if (type === command.write) {
      if (!accepted && length > nbdWriteDrainSizeMax) return { changes, replies, hangUp: true };
      if (stream.length - at < length) break; // the payload never arrives: the request never runs
      if (accepted && length > 0) changes.push({ kind: "write", offset: Number(offset), length, data: stream.subarray(at, at + length) });
      at += length;
    } else if (accepted && length > 0) {
      changes.push({ kind: type === command.trim ? "trim" : "zero", offset: Number(offset), length, data: null });
    }
    replies += 1;
  }
  return { changes, replies, hangUp: false };
}

// Applies changes to a model of the image.
export function applyChanges(model: Buffer, changes: readonly ImageChange[]): void {
  for (const change of changes) {
    if (change.data !== null) change.data.copy(model, change.offset);
    else model.fill(0, change.offset, change.offset + change.length);
  }
}
