// Limits of the replication wire protocol that are not (yet) in src/constants.ts. Unit last in
// every name. They are meant to move into constants.ts; until then replication/ imports them
// from here, and their relationships with the global limits are asserted at load.

import { assert } from "../assert.js";
import { logBatchRecordsMax, logRecordPayloadSizeMax, sectorSize } from "../constants.js";
import { recordHeaderSize } from "../log/record.js";

const KiB = 1024;
const MiB = 1024 * KiB;

// Node and group names on the wire: the config's name rule (1-64 letters, digits, '_', '.',
// '-', starting with a letter or digit), ASCII so a byte is a character.
export const replicationNameBytesMax = 64;

// The human-readable text of a reject: printable ASCII, for the other side's log.
export const replicationRejectTextBytesMax = 256;

// Records in one `records` frame: bounds the decoder's work and the LogRecord objects it
// makes per frame, whatever the records' sizes (a zero record is 80 bytes on the wire).
export const replicationBatchRecordsMax = 4096;

// Dirty regions announced in one `bitmapRegions` frame (24 bytes each: 384 KiB).
export const replicationRegionsPerFrameMax = 16_384;

// Volume bytes in one `regionData` frame (resync and initial sync ship regions in pieces of
// at most this size).
export const replicationRegionDataSizeMax = 4 * MiB;

// The largest frame payload of any type: a `records` frame must carry one largest log record
// alone (its 16-byte batch header, the 80-byte record header, a 32 MiB payload). This bounds
// the memory one connection's decoder ever holds.
export const replicationFramePayloadSizeMax = logRecordPayloadSizeMax + 1 * MiB;

assert(replicationFramePayloadSizeMax >= 16 + recordHeaderSize + logRecordPayloadSizeMax, "a records frame holds a largest record");
assert(replicationFramePayloadSizeMax >= 16 + replicationRegionDataSizeMax, "a regionData frame holds a largest region piece");
assert(replicationFramePayloadSizeMax >= 8 + replicationRegionsPerFrameMax * 24, "a bitmapRegions frame holds its largest list");
assert(replicationFramePayloadSizeMax <= 0xffff_ffff, "payload sizes fit the u32 field");
assert(replicationBatchRecordsMax >= logBatchRecordsMax, "a frame can carry a whole group commit");
assert(replicationRegionDataSizeMax % sectorSize === 0, "region pieces are whole sectors");
assert(replicationNameBytesMax <= 255 && replicationRejectTextBytesMax <= 0xffff, "lengths fit their fields");
