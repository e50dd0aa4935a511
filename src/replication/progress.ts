// The progress messages of a link (docs/PROTOCOL.md §4.4–4.5): the peer's acknowledgement of
// how far it has received, made durable and applied the stream, and the heartbeat both sides
// send while idle (with an echo, so each side measures the round trip on its own clock).
//
//   ack (32 bytes)
//   0 receivedLsn u64 │ 8 durableLsn u64 │ 16 appliedLsn u64      appliedLsn ≤ durableLsn ≤ receivedLsn
//   24 flags u32 (bit 0 consistent: the replica's volumes are a consistent image, durably) │ 28 reserved u32
//
//   heartbeat (16 bytes)
//   0 timestampMs u64 │ 8 echoTimestampMs u64                       both ≤ 2^53; echo 0: none yet

import { assert } from "../assert.js";
import { FrameError } from "./frame-error.js";
import { PayloadReader, PayloadWriter } from "./payload-codec.js";

export const ackSize = 32;
const ackFlagConsistent = 0x1;
export const heartbeatSize = 16;

export interface Ack {
  readonly kind: "ack";
  readonly receivedLsn: bigint; // the last LSN received (in memory)
  readonly durableLsn: bigint; // the last LSN durable in the peer's log
  readonly appliedLsn: bigint; // the last LSN applied to the peer's volumes (bunker: 0)
  // The peer's volumes are a consistent image (no resync under way, its end made durable): a
  // primary counts a resync complete only from an ack that says so.
  readonly consistent: boolean;
}

export interface Heartbeat {
  readonly kind: "heartbeat";
  readonly timestampMs: number; // the sender's clock when sent (ms since the epoch)
  readonly echoTimestampMs: number; // the timestampMs of the last heartbeat received, 0 if none
}

export function ackEncode(ack: Ack): Buffer {
  assert(ack.appliedLsn <= ack.durableLsn && ack.durableLsn <= ack.receivedLsn, "ack LSNs out of order");
  return new PayloadWriter(ackSize).u64(ack.receivedLsn).u64(ack.durableLsn).u64(ack.appliedLsn).u32(ack.consistent ? ackFlagConsistent : 0).u32(0).done();
}

export function ackDecode(payload: Buffer): Ack {
  const reader = new PayloadReader(payload);
  const receivedLsn = reader.u64();
  const durableLsn = reader.u64();
  const appliedLsn = reader.u64();
  const flags = reader.u32();
  if ((flags & ~ackFlagConsistent) !== 0) throw new FrameError("field", { field: "flags", value: flags });
  reader.zero32("reserved");
  reader.end();
  if (durableLsn > receivedLsn) throw new FrameError("field", { field: "durableLsn", durableLsn, receivedLsn });
  if (appliedLsn > durableLsn) throw new FrameError("field", { field: "appliedLsn", appliedLsn, durableLsn });
  return { kind: "ack", receivedLsn, durableLsn, appliedLsn, consistent: (flags & ackFlagConsistent) !== 0 };
}

export function heartbeatEncode(heartbeat: Heartbeat): Buffer {
  return new PayloadWriter(heartbeatSize).u64(heartbeat.timestampMs).u64(heartbeat.echoTimestampMs).done();
}

export function heartbeatDecode(payload: Buffer): Heartbeat {
  const reader = new PayloadReader(payload);
  const timestampMs = reader.u64Number("timestampMs");
  const echoTimestampMs = reader.u64Number("echoTimestampMs");
  reader.end();
  return { kind: "heartbeat", timestampMs, echoTimestampMs };
}
