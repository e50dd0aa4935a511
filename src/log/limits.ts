// Limits of the group log that are not (yet) in src/constants.ts. Unit last in every name.
// They are meant to move into constants.ts; until then the log imports them from here, and
// their relationships with the global limits are asserted at load like the rest.

import { assert } from "../assert.js";
import { logBatchBytesMax, logSizeMin, sectorSize } from "../constants.js";
import { recordDiskSize, recordDiskSizeMax } from "./record.js";

const KiB = 1024;
const MiB = 1024 * KiB;

// Records appended but not yet handed to the OS, counted in on-disk bytes. Beyond this an
// append is refused (OVERLOADED) and waitForRoom() waits: memory stays bounded however fast
// callers append.
export const logQueueBytesMax = 64 * MiB;

// A batch copies records with payloads up to this size into one buffer (a few large iovecs
// instead of three per record); larger payloads are written from the caller's buffer.
export const logBatchCopyBytesMax = 64 * KiB;

// The writer copies a batch's small records into one staging buffer of this size, kept and
// reused by every batch (the next batch is taken only once the last write returned): a new
// buffer per batch made V8 collect garbage far more often (each counts as external memory).
// A batch needing more is copied into a buffer of its own.
export const logStagingBytes = 1 * MiB;

// A primary's log under activity-map durability (the acknowledgement waits for the image, not
// the log) may wait up to logWriteDelayMs after an append before writing, so that records
// arriving meanwhile share one batch: one thread-pool write per millisecond instead of one per
// event-loop turn, and the write never lands between a request and its reply. It writes at
// once when anyone waits on durability, a checkpoint or room, when hurried (a sync link), or
// once logWriteDelayBytesMax bytes are queued.
export const logWriteDelayMs = 1;
export const logWriteDelayBytesMax = 256 * KiB;

// Read-ahead of the recovery scan and of cursors: one read of this size yields many records.
export const logReadChunkBytes = 1 * MiB;

// Space is accounted in segments (runs of whole records): a segment is freed when every
// record in it is released. At most about logSegmentsMax segments exist at once, never
// smaller than logSegmentBytesMin, so memory does not grow with the log's size or traffic.
export const logSegmentsMax = 16_384;
export const logSegmentBytesMin = 16 * KiB;

// The tail moved by release() is persisted (superblock write + datasync) at the next group
// commit once the released-but-unpersisted bytes reach this share of the data area, at once
// when an append waits for room, and at every checkpoint()/close().
export const logTailPersistFraction = 1 / 8;

assert(logWriteDelayBytesMax <= logStagingBytes && logWriteDelayBytesMax < logQueueBytesMax, "a delayed batch fits the staging buffer and the queue");

// Writeback of the log file is started (sync_file_range, not waited for) after this many
// bytes were written: the RocksDB bytes_per_sync idea, so datasyncs stay short.
export const logWritebackBytes = 4 * MiB;

// The group id stored in the superblock (UTF-8 bytes).
export const logGroupIdBytesMax = 128;

assert(logQueueBytesMax >= recordDiskSizeMax, "the queue holds a largest record");
assert(logQueueBytesMax >= logBatchBytesMax, "the queue holds a full batch");
assert(logReadChunkBytes % sectorSize === 0, "read chunks are whole sectors");
assert(logStagingBytes % sectorSize === 0 && logStagingBytes >= recordDiskSize(logBatchCopyBytesMax), "the staging buffer holds a copied record");
assert(logSegmentBytesMin % sectorSize === 0, "segments are whole sectors");
assert(logSegmentBytesMin * 4 <= logSizeMin, "the smallest log holds several segments");
assert(logTailPersistFraction > 0 && logTailPersistFraction < 1, "a fraction of the log");
