// The log's superblock: two 4 KiB slots at the start of the file, written alternately
// (sequence n goes to slot n % 2) and each followed by a datasync before anything depends on
// it. A torn write can only damage the slot being written, so the other slot, one sequence
// older, always survives; open() takes the valid slot with the highest sequence.
//
//   0 ─────── 4096 ─────── 8192 ──────────────────────────────── sizeBytes
//   │ slot 0  │  slot 1   │ data area: records, circular        │
//
// Slot layout (little-endian; docs/FORMAT.md §2):
//   0 checksum u32 (CRC32C of bytes 4..4096) · 4 magic u32 · 8 version u16 · 10 zero u16
//   12 slotSize u32 · 16 sequence u64 · 24 logId u64 · 32 sizeBytes u64 · 40 dataStart u64
//   48 generation u64 · 56 tailLsn u64 · 64 tailPosition u64 · 72 tailPreviousChecksum u32
//   76 zero u32 · 80 releasedLsn u64 · 88 durableLsn u64 · 96 timestampMs u64
//   104 groupIdLength u16 · 106 groupId (UTF-8) · zeros to 4096

import { assert } from "../assert.js";
import { logSizeMax, logSizeMin, sectorSize } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { BlockFile } from "../io/block-file.js";
import { crc32c } from "../io/crc32c.js";
import { logGroupIdBytesMax } from "./limits.js";
import { recordDiskSizeMax } from "./record.js";

export const superblockSlotSize = 4096;
export const superblockMagic = 0x4253_534c; // "LSSB" as little-endian bytes
export const superblockVersion = 1;
export const logDataStart = 2 * superblockSlotSize;

const groupIdOffset = 106;

assert(logDataStart + 2 * recordDiskSizeMax <= logSizeMin, "the smallest log holds two largest records");

export interface Superblock {
  readonly sequence: bigint;
  readonly logId: bigint;
  readonly groupId: string;
  readonly sizeBytes: number; // the log's bytes in the file: superblocks + data area
  readonly dataStart: number;
  readonly generation: bigint;
  // The oldest record still kept: recovery starts reading here.
  readonly tailLsn: bigint;
  readonly tailPosition: number;
  readonly tailPreviousChecksum: number; // checksum of record tailLsn - 1 (0 for LSN 1)
  // Checkpoint: every record ≤ releasedLsn was released (tailLsn ≤ releasedLsn + 1), and every
  // record ≤ durableLsn was durable before this superblock was written.
  readonly releasedLsn: bigint;
  readonly durableLsn: bigint;
  readonly timestampMs: number;
}

function superblockCorrupt(reason: string, detail: Record<string, string | number | bigint> = {}): OperatingError<"LOG_CORRUPT"> {
  return new OperatingError("LOG_CORRUPT", { reason: `superblock-${reason}`, ...detail });
}

export function superblockEncode(superblock: Superblock): Buffer {
  const groupId = Buffer.from(superblock.groupId, "utf8");
  assert(groupId.length > 0 && groupId.length <= logGroupIdBytesMax, "group id length");
  assert(superblock.tailLsn >= 1n && superblock.releasedLsn + 1n >= superblock.tailLsn, "superblock tail");
  assert(superblock.releasedLsn <= superblock.durableLsn, "the persisted tail never passes durable records");
  const slot = Buffer.alloc(superblockSlotSize);
  slot.writeUInt32LE(superblockMagic, 4);
  slot.writeUInt16LE(superblockVersion, 8);
  slot.writeUInt32LE(superblockSlotSize, 12);
  slot.writeBigUInt64LE(superblock.sequence, 16);
  slot.writeBigUInt64LE(superblock.logId, 24);
  slot.writeBigUInt64LE(BigInt(superblock.sizeBytes), 32);
  slot.writeBigUInt64LE(BigInt(superblock.dataStart), 40);
  slot.writeBigUInt64LE(superblock.generation, 48);
  slot.writeBigUInt64LE(superblock.tailLsn, 56);
  slot.writeBigUInt64LE(BigInt(superblock.tailPosition), 64);
  slot.writeUInt32LE(superblock.tailPreviousChecksum, 72);
  slot.writeBigUInt64LE(superblock.releasedLsn, 80);
  slot.writeBigUInt64LE(superblock.durableLsn, 88);
  slot.writeBigUInt64LE(BigInt(superblock.timestampMs), 96);
  slot.writeUInt16LE(groupId.length, 104);
  groupId.copy(slot, groupIdOffset);
  slot.writeUInt32LE(crc32c(slot.subarray(4)), 0);
  return slot;
}

// Decodes one slot; every inconsistency is LOG_CORRUPT with reason "superblock-…".
export function superblockDecode(slot: Buffer): Superblock {
  if (slot.length !== superblockSlotSize) throw superblockCorrupt("header", { bytes: slot.length });
  if (slot.readUInt32LE(4) !== superblockMagic) throw superblockCorrupt("magic");
  if (crc32c(slot.subarray(4)) !== slot.readUInt32LE(0)) throw superblockCorrupt("checksum");
  const version = slot.readUInt16LE(8);
  if (version !== superblockVersion) throw superblockCorrupt("version", { version });
  if (slot.readUInt32LE(12) !== superblockSlotSize) throw superblockCorrupt("field", { field: "slotSize" });
  const groupIdLength = slot.readUInt16LE(104);
  if (groupIdLength === 0 || groupIdLength > logGroupIdBytesMax) throw superblockCorrupt("field", { field: "groupId" });
  const sizeBytes = slot.readBigUInt64LE(32);
  const dataStart = slot.readBigUInt64LE(40);
  const tailPosition = slot.readBigUInt64LE(64);
  const sequence = slot.readBigUInt64LE(16);
  const tailLsn = slot.readBigUInt64LE(56);
  const releasedLsn = slot.readBigUInt64LE(80);
  const layoutValid =
    dataStart === BigInt(logDataStart) &&
    sizeBytes > dataStart &&
    sizeBytes <= BigInt(logSizeMax) &&
    (sizeBytes - dataStart) % BigInt(sectorSize) === 0n &&
    tailPosition >= dataStart &&
    tailPosition < sizeBytes &&
    tailPosition % BigInt(sectorSize) === 0n;
  if (!layoutValid) throw superblockCorrupt("field", { field: "layout" });
  const durableLsn = slot.readBigUInt64LE(88);
  if (tailLsn < 1n || releasedLsn + 1n < tailLsn || releasedLsn > durableLsn) throw superblockCorrupt("field", { field: "tail" });
  return {
    sequence,
    logId: slot.readBigUInt64LE(24),
    groupId: slot.toString("utf8", groupIdOffset, groupIdOffset + groupIdLength),
    sizeBytes: Number(sizeBytes),
    dataStart: Number(dataStart),
    generation: slot.readBigUInt64LE(48),
    tailLsn,
    tailPosition: Number(tailPosition),
    tailPreviousChecksum: slot.readUInt32LE(72),
    releasedLsn,
    durableLsn,
    timestampMs: Number(slot.readBigUInt64LE(96)),
  };
}

export function superblockSlotPosition(sequence: bigint): number {
  return Number(sequence % 2n) * superblockSlotSize;
}

export interface SuperblockChoice {
  readonly superblock: Superblock;
  readonly slot: number;
  // Why the other slot was not taken: null when it was valid but older.
  readonly otherSlotError: OperatingError | null;
}

// Reads both slots and returns the valid one with the higher sequence; LOG_CORRUPT when
// neither is valid (the error of slot 0, the reasons of both in its detail).
export async function superblockRead(file: BlockFile): Promise<SuperblockChoice> {
  const slots = Buffer.alloc(2 * superblockSlotSize);
  await file.read(slots, 0);
  const decoded = [0, 1].map((index) => {
    try {
      return superblockDecode(slots.subarray(index * superblockSlotSize, (index + 1) * superblockSlotSize));
    } catch (error) {
      if (error instanceof OperatingError && error.code === "LOG_CORRUPT") return error;
      throw error;
    }
  });
  const [first, second] = decoded as [Superblock | OperatingError, Superblock | OperatingError];
  if (first instanceof OperatingError && second instanceof OperatingError) {
    throw new OperatingError("LOG_CORRUPT", {
      reason: "superblock",
      slot0: reasonOf(first),
      slot1: reasonOf(second),
    });
  }
  if (first instanceof OperatingError) return { superblock: second as Superblock, slot: 1, otherSlotError: first };
  if (second instanceof OperatingError) return { superblock: first, slot: 0, otherSlotError: second };
  return second.sequence > first.sequence
    ? { superblock: second, slot: 1, otherSlotError: null }
    : { superblock: first, slot: 0, otherSlotError: null };
}

function reasonOf(error: OperatingError): string {
  return typeof error.detail === "string" ? error.detail : String(error.detail.reason);
}

// Writes the superblock into slot sequence % 2. No datasync: the caller syncs, and must not
// depend on it (nor write the next sequence) before that sync succeeded.
export async function superblockWrite(file: BlockFile, superblock: Superblock): Promise<void> {
  await file.write([superblockEncode(superblock)], superblockSlotPosition(superblock.sequence));
}
