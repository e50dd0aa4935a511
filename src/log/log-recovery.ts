// The recovery scan run by GroupLog.open(): from the superblock's tail, read records in order
// (following wrap markers) until the first one that is torn, corrupt, stale (wrong LSN, wrong
// log, broken chain) or placed where the writer would not have put it. That point is the head.
//
// The scan replays LogSpace.reserve() for every record it accepts, so the rebuilt accounting
// (segments, used bytes, head position) is exactly what the writer had, and a record found at
// any other position than the writer's rule gives is refused.
//
// A record that was durable can only be missing if the disk lost or damaged it: every
// superblock carries durableLsn (all records up to it were datasync'd before it was written)
// and a scan that stops short of it is LOG_CORRUPT "lost" unless the caller accepts the loss.

import { OperatingError } from "../errors.js";
import type { BlockFile } from "../io/block-file.js";
import { LogSpace } from "./log-space.js";
import type { LogCorruptReason } from "./record.js";
import { RecordScanner, type ScanLayout } from "./record-scanner.js";
import type { Superblock } from "./superblock.js";

export interface LogRecovery {
  readonly tailLsn: bigint; // the oldest LSN not released (records below it may still be on disk)
  readonly headLsn: bigint; // the last valid LSN (tailLsn - 1 when there is none)
  readonly records: number; // valid records from tailLsn to headLsn
  readonly bytes: number; // bytes scanned, from the superblock's tail to the head
  readonly stoppedBecause: LogCorruptReason | "created";
  readonly stoppedAt: number; // the file position where the scan stopped (the new head)
  readonly superblockSequence: bigint;
  readonly superblockFallback: boolean; // the other slot was invalid (a torn or damaged write)
}

export interface RecoveredLog {
  readonly space: LogSpace;
  readonly headLsn: bigint;
  readonly headChecksum: number; // the checksum of record headLsn (the chain's next link)
  readonly releasedLsn: bigint;
  readonly report: LogRecovery;
}

export interface RecoveryInput {
  readonly file: BlockFile;
  readonly layout: ScanLayout;
  readonly superblock: Superblock;
  readonly superblockFallback: boolean;
  readonly segmentBytes: number;
  readonly readChunkBytes: number;
  readonly acceptLoss: boolean;
}

const lsnUnbounded = 0xffff_ffff_ffff_ffffn; // nothing is being written during recovery

export async function recoverLog(input: RecoveryInput): Promise<RecoveredLog> {
  const { superblock, layout } = input;
  const space = new LogSpace(layout.dataStart, layout.dataEnd, input.segmentBytes, superblock.tailPosition);
  const scanner = new RecordScanner(
    input.file,
    layout,
    input.readChunkBytes,
    () => lsnUnbounded,
    superblock.tailPosition,
    superblock.tailLsn,
    superblock.tailPreviousChecksum,
  );
  let stoppedBecause: LogCorruptReason;
  let headLsn = superblock.tailLsn - 1n;
  let headChecksum = superblock.tailPreviousChecksum;
  for (;;) {
    const step = await scanner.next();
    if (step.kind === "wrap") continue;
    if (step.kind === "stop") {
      stoppedBecause = step.reason;
      break;
    }
    const placement = space.place(step.diskBytes);
    if (placement === null || placement.position !== step.position) {
      stoppedBecause = "field"; // valid bytes where the writer would never have put them
      break;
    }
    space.reserve(step.record.lsn, step.diskBytes, step.record.previousChecksum);
    headLsn = step.record.lsn;
    headChecksum = step.record.checksum;
  }
  if (headLsn < superblock.durableLsn && !input.acceptLoss) {
    throw new OperatingError("LOG_CORRUPT", {
      reason: "lost",
      durableLsn: superblock.durableLsn,
      headLsn,
      stoppedBecause,
      position: space.headPosition,
    });
  }
  const releasedLsn = superblock.releasedLsn < headLsn ? superblock.releasedLsn : headLsn;
  const tailLsn = releasedLsn + 1n;
  const report: LogRecovery = {
    tailLsn,
    headLsn,
    records: Number(headLsn - releasedLsn),
    bytes: space.usedBytes,
    stoppedBecause,
    stoppedAt: space.headPosition,
    superblockSequence: superblock.sequence,
    superblockFallback: input.superblockFallback,
  };
  return { space, headLsn, headChecksum, releasedLsn, report };
}
