// Performs one logged change on its volume: the primary's write path, the primary's redo at
// recovery, and a replica's applier all go through here, so a record means the same thing
// wherever it is applied.

import { RecordFlag, RecordKind } from "../log/record.js";
import { assert } from "../assert.js";
import type { ChangeTicket } from "../volume/change-guard.js";
import type { Volume } from "../volume/volume.js";

// durable: this change alone must be on stable storage when it resolves (FUA).
// ticket: the volume guard's reservation, taken by the caller before the change got its LSN;
// when the caller has none (redo, a replica's applier), one is taken here.
export async function applyChange(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined, durable: boolean, ticket?: ChangeTicket | null): Promise<void> {
  if (!isDataChange(kind)) return; // operations arrive with later issues; nothing to do on a volume yet
  const guarded = ticket === undefined ? (volume.changeGuard?.reserve(offset, length) ?? null) : ticket;
  if (guarded === null) return applyData(volume, kind, flags, offset, length, payload, durable);
  try {
    await guarded.preserve();
    await applyData(volume, kind, flags, offset, length, payload, durable);
  } finally {
    guarded.release();
  }
}

export function isDataChange(kind: number): boolean {
  return kind === RecordKind.write || kind === RecordKind.zero || kind === RecordKind.trim;
}

async function applyData(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined, durable: boolean): Promise<void> {
  switch (kind) {
    case RecordKind.write:
      assert(payload !== undefined && payload.length === length, "write record without its payload");
      await volume.write(payload, offset, durable);
      return;
    case RecordKind.zero:
      await volume.zero(offset, length, (flags & RecordFlag.keepAllocated) !== 0);
      break;
    case RecordKind.trim:
      await volume.trim(offset, length);
      break;
    default:
      assert(false, `record kind ${kind} is not a data change`);
  }
  if (durable) await volume.flush();
}
