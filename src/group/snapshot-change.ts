// A change to a writable snapshot as a log record (kinds 4 and 5, docs/FORMAT.md §1.2), so
// that it reaches the snapshot's twin on every secondary in write order:
//
//   payload = u8 nameLength · the snapshot's name (UTF-8, 1..64 bytes) · [the bytes written]
//
// The header's volumeId, offset and length are the volume, and the range in the snapshot.

import { assert } from "../assert.js";
import { OperatingError } from "../errors.js";

export function encodeSnapshotChange(snapshot: string, data: Buffer | null): Buffer {
  const name = Buffer.from(snapshot, "utf8");
  assert(name.length >= 1 && name.length <= 64, "snapshot names are 1-64 bytes");
  const payload = Buffer.allocUnsafe(1 + name.length + (data?.length ?? 0));
  payload[0] = name.length;
  name.copy(payload, 1);
  data?.copy(payload, 1 + name.length);
  return payload;
}

// The record codec checked the payload's size against the header; the name's length is
// checked here against the payload.
export function decodeSnapshotChange(payload: Buffer, length: number, withData: boolean, lsn: bigint): { snapshot: string; data: Buffer | null } {
  const nameLength = payload[0] ?? 0;
  if (nameLength < 1 || 1 + nameLength + (withData ? length : 0) !== payload.length) {
    throw new OperatingError("LOG_CORRUPT", { lsn: String(lsn), reason: "snapshot change payload" });
  }
  return { snapshot: payload.subarray(1, 1 + nameLength).toString("utf8"), data: withData ? payload.subarray(1 + nameLength) : null };
}

// Only the snapshot's name (a link folding the record into its bitmap needs no more).
export function decodeSnapshotChangeName(payload: Buffer, lsn: bigint): string {
  const nameLength = payload[0] ?? 0;
  if (nameLength < 1 || 1 + nameLength > payload.length) throw new OperatingError("LOG_CORRUPT", { lsn: String(lsn), reason: "snapshot change payload" });
  return payload.subarray(1, 1 + nameLength).toString("utf8");
}
