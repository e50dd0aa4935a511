// Validation of one transmission request at the edge, before any export is called: flags,
// read-only, size, range and alignment. Pure: the header and the session in, an error code out.
// The export may then assert these properties (src/nbd/export.ts).
//
// Errors follow the spec: unknown command or flag → EINVAL; write or trim on a read-only
// export → EPERM; WRITE / WRITE_ZEROES past the end → ENOSPC; READ, TRIM, CACHE, BLOCK_STATUS
// past the end → EINVAL; READ / WRITE / CACHE over the maximum block size → EINVAL; misaligned →
// EINVAL, but only when the client asked for NBD_INFO_BLOCK_SIZE in NBD_OPT_GO (otherwise the
// spec's default minimum block size of 1 applies); FAST_ZERO the export cannot do fast → ENOTSUP.

import { nbdPayloadSizeMax } from "../constants.js";
import { errorTable, nbdErrno, type ErrorCode } from "../errors.js";
import type { Session } from "./handshake.js";
import { nbdBlockSizeMinimum } from "../constants.js";
import { command, commandFlag, type RequestHeader } from "./protocol.js";

const flagsFuaOnly = commandFlag.fua;
const flagsRead = commandFlag.fua | commandFlag.df;
const flagsZero = commandFlag.fua | commandFlag.noHole | commandFlag.fastZero;
const flagsBlockStatus = commandFlag.fua | commandFlag.reqOne;

export function requestCheck(header: Readonly<RequestHeader>, session: Session): ErrorCode | undefined {
  const { flags, offset, length } = header;
  const flagsOf = session.export.flags;
  switch (header.type) {
    case command.read:
      if ((flags & ~(session.structuredReplies ? flagsRead : flagsFuaOnly)) !== 0) return "REQUEST_INVALID";
      if (length > nbdPayloadSizeMax) return "REQUEST_TOO_LARGE";
      return rangeCheck(session, offset, length, "OUT_OF_RANGE");
    case command.write:
      if ((flags & ~flagsFuaOnly) !== 0) return "REQUEST_INVALID";
      if (flagsOf.readOnly) return "READ_ONLY";
      if (length > nbdPayloadSizeMax) return "REQUEST_TOO_LARGE";
      return rangeCheck(session, offset, length, "WRITE_OUT_OF_RANGE");
    case command.flush:
      if ((flags & ~flagsFuaOnly) !== 0 || offset !== 0 || length !== 0) return "REQUEST_INVALID";
      return undefined;
    case command.trim:
      if ((flags & ~flagsFuaOnly) !== 0) return "REQUEST_INVALID";
      if (flagsOf.readOnly) return "READ_ONLY";
      if (!flagsOf.canTrim) return "REQUEST_INVALID"; // not advertised
      return rangeCheck(session, offset, length, "OUT_OF_RANGE");
    case command.cache:
      if ((flags & ~flagsFuaOnly) !== 0) return "REQUEST_INVALID";
      // Always bounded: a hint that fails changes nothing for the client, and it keeps the
      // export's prefetch work per request bounded.
      if (length > nbdPayloadSizeMax) return "REQUEST_TOO_LARGE";
      return rangeCheck(session, offset, length, "OUT_OF_RANGE");
    case command.writeZeroes:
      return zeroCheck(session, flags, offset, length);
    case command.blockStatus:
      if ((flags & ~flagsBlockStatus) !== 0 || session.metaContextId === 0 || length === 0) return "REQUEST_INVALID";
      return rangeCheck(session, offset, length, "OUT_OF_RANGE");
    case command.disconnect:
      return undefined;
    default:
      return "REQUEST_INVALID";
  }
}

function zeroCheck(session: Session, flags: number, offset: number, length: number): ErrorCode | undefined {
  const flagsOf = session.export.flags;
  if ((flags & ~flagsZero) !== 0) return "REQUEST_INVALID";
  if (flagsOf.readOnly) return "READ_ONLY";
  if (!flagsOf.canZero) return "REQUEST_INVALID"; // not advertised
  const fastZero = (flags & commandFlag.fastZero) !== 0;
  // The maximum block size binds WRITE_ZEROES only without FAST_ZERO, and only once advertised.
  if (session.blockSizeNegotiated && !fastZero && length > nbdPayloadSizeMax) return "REQUEST_TOO_LARGE";
  const rangeError = rangeCheck(session, offset, length, "WRITE_OUT_OF_RANGE");
  if (rangeError !== undefined) return rangeError;
  if (fastZero && !flagsOf.canFastZero) return "NOT_SUPPORTED";
  return undefined;
}

function rangeCheck(session: Session, offset: number, length: number, past: ErrorCode): ErrorCode | undefined {
  // offset < 2^53 + 1 and length < 2^32: the sum may round, but never below session.size.
  if (offset + length > session.size) return past;
  if (session.blockSizeNegotiated && (offset % nbdBlockSizeMinimum !== 0 || length % nbdBlockSizeMinimum !== 0)) {
    return "REQUEST_MISALIGNED";
  }
  return undefined;
}

export function errnoOf(code: ErrorCode): number {
  return nbdErrno[errorTable[code].nbd];
}
