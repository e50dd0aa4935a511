// The typed error of the replication wire protocol. Every malformed frame or payload a peer
// can send becomes a FrameError: an OperatingError (code REQUEST_INVALID until a dedicated
// code exists) with a stable `reason`. The connection that produced it is dropped; nothing it
// carried is acknowledged. docs/PROTOCOL.md §7 lists the reasons.

import { type ErrorDetail, OperatingError } from "../errors.js";

export type FrameErrorReason =
  // the frame header (checked from its 32 bytes, before any payload is read)
  | "magic" // not a Lockstep replication frame
  | "version" // a frame format version this node does not read
  | "headerChecksum"
  | "reserved" // a reserved field is not zero
  | "type" // an unknown frame type
  | "flags" // a flag not defined for this frame type
  | "size" // payloadSize outside the range of this type or above the receiver's limit
  | "sequence" // not the next frame of this direction of the connection
  // the payload
  | "payloadChecksum"
  | "truncated" // the stream ended inside a frame
  | "length" // the payload's length disagrees with its own layout
  | "field" // a value out of range, an unknown enum value, contradicting fields
  | "name" // a node or group name breaks the name rule
  | "lsn" // records: LSNs not consecutive from firstLsn, or not the LSN expected next
  | "record"; // records: a record fails its own checks (detail.recordReason says which)

export class FrameError extends OperatingError<"REQUEST_INVALID"> {
  override name = "FrameError";
  constructor(
    readonly reason: FrameErrorReason,
    detail: ErrorDetail = {},
    options?: ErrorOptions,
  ) {
    super("REQUEST_INVALID", { what: "replication frame", reason, ...detail }, options);
  }
}

// The reason of a FrameError, or null for any other error.
export function frameErrorReason(error: unknown): FrameErrorReason | null {
  return error instanceof FrameError ? error.reason : null;
}
