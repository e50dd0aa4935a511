// Storage-management operations as log records (docs/FORMAT.md §1.2, kind 0x100): one record
// carries one *set* of operations, performed at the record's LSN — after every change with a
// smaller LSN and before every change with a larger one — on the primary and, when the
// replication stream reaches it, on every secondary. The record's payload is the set as UTF-8
// JSON (small: names and numbers, never data), validated with a schema when decoded.
//
//   ordered    the operations run one after another, no change between them
//   unordered  the operations run together at one point (e.g. a snapshot of every volume)
//
// Volumes are named by id (the same on every site); snapshots by name (a twin has its
// original's name). The set is idempotent per volume: each snapshot store records the LSN of
// the last operation it performed, in the same commit as the operation's effect, so redo after
// a crash performs every operation exactly once.

import { z } from "zod";
import { operationPayloadBytesMax, operationsPerSetMax, sectorSize, volumeNameLengthMax, volumeSizeMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { RecordKind } from "../log/record.js";
import { isName, nameRuleText } from "../names.js";

export const operationSetKind = RecordKind.operationFirst; // 0x100

const volumeId = z.number().int().positive();
const snapshotName = z.string().min(1).max(64);
const volumeName = z.string().refine((value) => isName(value, volumeNameLengthMax), `a volume name: ${nameRuleText}`);
const volumeSize = z.number().int().positive().max(volumeSizeMax).refine((size) => size % sectorSize === 0, "a volume's size is whole sectors");

const operationSchema = z.discriminatedUnion("op", [
  z.object({ op: z.literal("snapshot.create"), volumeId, snapshot: snapshotName, from: snapshotName.nullable(), writable: z.boolean() }).strict(),
  z.object({ op: z.literal("snapshot.delete"), volumeId, snapshot: snapshotName, recursive: z.boolean() }).strict(),
  z.object({ op: z.literal("snapshot.refresh"), volumeId, snapshot: snapshotName, fromVolume: z.boolean() }).strict(),
  z.object({ op: z.literal("snapshot.restore"), volumeId, snapshot: snapshotName }).strict(),
  // make the writable snapshot `snapshot` equal to `from` (a snapshot, or null: the volume)
  z.object({ op: z.literal("snapshot.sync"), volumeId, snapshot: snapshotName, from: snapshotName.nullable() }).strict(),
  // the group's volumes: performed on the primary before the record, at the same point
  z.object({ op: z.literal("volume.attach"), volumeId, name: volumeName, size: volumeSize }).strict(),
  z.object({ op: z.literal("volume.resize"), volumeId, size: volumeSize }).strict(),
  z.object({ op: z.literal("volume.detach"), volumeId }).strict(),
]);

const operationSetSchema = z
  .object({
    version: z.literal(1),
    order: z.enum(["ordered", "unordered"]),
    operations: z.array(operationSchema).min(1).max(operationsPerSetMax),
  })
  .strict();

export type Operation = z.infer<typeof operationSchema>;
export type SnapshotOperation = Extract<Operation, { snapshot: string }>;
export type VolumeOperation = Exclude<Operation, SnapshotOperation>;

export function isVolumeOperation(operation: Operation): operation is VolumeOperation {
  return operation.op.startsWith("volume.");
}
export type OperationSet = z.infer<typeof operationSetSchema>;

export function encodeOperationSet(set: OperationSet): Buffer {
  const payload = Buffer.from(JSON.stringify(set), "utf8");
  if (payload.length > operationPayloadBytesMax) throw new OperatingError("REQUEST_TOO_LARGE", { operationBytesMax: operationPayloadBytesMax });
  return payload;
}

// A payload that fails here was checksummed and chained like any record, so it was written by
// a build that does not agree with this one: LOG_CORRUPT stops whoever applies it.
export function decodeOperationSet(payload: Buffer, lsn: bigint): OperationSet {
  if (payload.length > operationPayloadBytesMax) throw new OperatingError("LOG_CORRUPT", { lsn: String(lsn), reason: "operation size" });
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString("utf8"));
  } catch {
    throw new OperatingError("LOG_CORRUPT", { lsn: String(lsn), reason: "operation is not JSON" });
  }
  const result = operationSetSchema.safeParse(parsed);
  if (!result.success) throw new OperatingError("LOG_CORRUPT", { lsn: String(lsn), reason: `operation: ${result.error.issues[0]!.message}` });
  return result.data;
}

// The volumes a set touches (a record names one in its header when there is exactly one).
export function operationVolumes(set: OperationSet): number[] {
  return [...new Set(set.operations.map((operation) => operation.volumeId))];
}
