// Performs one logged change on its volume: the primary's write path, the primary's redo at
// recovery, and a replica's applier all go through here, so a record means the same thing
// wherever it is applied.

import { RecordFlag, RecordKind } from "../log/record.js";
import { assert } from "../assert.js";
import type { Volume } from "../volume/volume.js";

// durable: this change alone must be on stable storage when it resolves (FUA).
export async function applyChange(volume: Volume, kind: number, flags: number, offset: number, length: number, payload: Buffer | undefined, durable: boolean): Promise<void> {
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
      return; // operations arrive with later issues; nothing to do on a volume yet
  }
  if (durable) await volume.flush();
}
