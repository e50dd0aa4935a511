// Every limit in one place, unit last in the name. Relationships between them are asserted
// at load: a build with inconsistent limits does not start.

import { assert } from "./assert.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

// ---- Blocks and volumes ----
export const sectorSize = 512; // the smallest unit of alignment anywhere
export const blockSizePreferred = 4 * KiB;
export const volumeSizeMax = 1024 * TiB; // < 2^53, so offsets fit in a JS number exactly
export const volumeNameLengthMax = 64;
export const volumesPerGroupMax = 256;
export const volumeIdMax = 2 ** 20 - 1; // ids are never reused (log records name volumes by id)
export const groupsPerNodeMax = 64;

// ---- NBD ----
export const nbdPayloadSizeMax = 32 * MiB; // the spec's interoperable maximum for READ/WRITE
export const nbdOptionDataSizeMax = 64 * KiB; // option haggling payloads (names, meta contexts)
export const nbdStringLengthMax = 4096; // the spec's hard limit on strings
export const nbdConnectionsMax = 128; // per node, all exports together
export const nbdRequestsInflightMax = 64; // per connection; beyond this the socket is paused
export const nbdInflightBytesMax = 96 * MiB; // per connection: request payloads held in memory
export const nbdHandshakeMsMax = 30_000; // a client that does not finish the handshake is dropped
export const nbdOptionsPerHandshakeMax = 1024; // option haggling rounds before a hard disconnect
export const nbdBlockStatusExtentsMax = 2048; // extents in one BLOCK_STATUS reply
export const nbdMetaContextsMax = 16; // queries in one SET/LIST_META_CONTEXT
export const nbdOptionDrainSizeMax = 1 * MiB; // an option above nbdOptionDataSizeMax is drained and refused up to this; beyond, hard disconnect
export const nbdWriteDrainSizeMax = 4 * nbdPayloadSizeMax; // a refused WRITE's payload is drained (not buffered) up to this
export const nbdCloseMsMax = 5_000; // close() waits this long for in-flight requests
export const nbdPollMicrosDefault = 50; // the event loop polls this long after a reply before it sleeps (nbd/poll-window.ts)
export const nbdPollMicrosMax = 1000; // config's limit: a longer window only burns CPU
export const nbdBlockSizeMinimum = sectorSize; // advertised; enforced when the client negotiated block sizes
export const nbdBlockSizePreferred = blockSizePreferred;

// ---- Log ----
export const logRecordPayloadSizeMax = 32 * MiB;
export const logBatchBytesMax = 8 * MiB; // one pwritev of a group commit (a larger record goes alone)
export const logBatchRecordsMax = 1024;
export const logSizeMin = 128 * MiB; // two largest records and their headers, with room to spare
export const logSizeMax = 1024 * GiB;
export const logSizeDefault = 256 * MiB;
export const logStallMsMax = 10_000; // a write waits this long for log room, then gets LOG_FULL
export const logCheckpointFillRatio = 0.5; // start a background checkpoint above this fill

// ---- Activity map (write-path durability, see docs/DESIGN-NOTES.md) ----
export const activityExtentSize = 4 * MiB;
export const activityExtentsMax = 1024; // hot extents at once; more forces a checkpoint
// Extents stay hot while the map holds at most this many (least recently written cool first,
// once log and image are durable past them): a working set that fits re-marks nothing, so its
// writes never wait for the map; a crash resyncs at most activityExtentsMax extents anyway.
export const activityExtentsKeep = 512;

// ---- Dirty-region bitmaps (resync, initial sync; src/replication/dirty-bitmap.ts) ----
// A volume's region size is the smallest power of two, at least dirtyRegionBytesMin, that
// covers it in at most dirtyBitmapBitsMax regions: at most 2 MiB of bitmap per volume, even
// for a volumeSizeMax (1 PiB) volume, whose regions are 64 MiB.
export const dirtyRegionBytesMin = 64 * KiB;
export const dirtyBitmapBitsMax = 2 ** 24;

// ---- Snapshots (src/snapshot/) ----
// The default chunk: the unit of copy-on-write. 64 KiB: a first write after a snapshot copies
// at most 64 KiB (16 4k blocks), and a TiB of volume is 16 Mi chunks, so the per-chunk
// metadata of a fully rewritten TiB stays well under a GiB on disk (docs/DESIGN-NOTES.md §7).
export const snapshotChunkSizeDefault = 64 * KiB;
export const snapshotChunkSizeMin = 4 * KiB;
export const snapshotChunkSizeMax = 1 * MiB;
export const snapshotsPerVolumeMax = 256; // images in a volume's tree, the volume not counted
export const snapshotNameLengthMax = 64;
export const snapshotChainLengthMax = 64; // links from a snapshot down to the volume (tree depth)
export const snapshotStoreSizeDefault = 64 * GiB; // per volume, unless the group config says
export const snapshotStoreSizeMax = 1024 * TiB;
// The in-memory cache of "this chunk was already preserved since the newest snapshot": pages of
// 32 Ki chunk bits (4 KiB each), at most this many (8 MiB), whatever the volume's size. A
// chunk outside the cache costs one metadata lookup.
export const snapshotFreshPageBits = 32 * 1024;
export const snapshotFreshPagesMax = 2048;
export const snapshotDiffRegionsMax = 100_000; // regions one diff returns (the total is always exact)
// An operation waits at most this long for the writes in flight when it pauses the group; past
// it the operation is refused (TIMEOUT, nothing logged) and writes resume.
export const operationQuiesceMsMax = 5_000;
// A change or operation whose record is logged but which failed on the images (a disk error)
// is re-applied this often, at most this many times; then it waits for a restart (redo).
export const unappliedRetryMs = 200;
export const unappliedRetriesMax = 50;
export const operationsPerSetMax = 256; // operations in one log record (a snapshot of every volume of a group fits)
export const operationPayloadBytesMax = 64 * KiB; // an operation record's JSON
export const snapshotChunksInflightMax = 16;
export const snapshotChunkBuffersMax = 64; // chunk buffers kept for reuse per volume (4 MiB at 64 KiB chunks) // chunks one snapshot write (or trim) changes at once
export const snapshotMetadataMapBytes = 64 * GiB; // LMDB map size (virtual; files grow as used)
// A restore in the background (docs/DESIGN-NOTES.md §7): the chunks still to copy are a bitmap in
// pages of this many bits (4 KiB each, one metadata entry per page; in memory only the pages
// with a chunk left: at most 1 bit per chunk of the volume, 2 MiB per TiB at 64 KiB chunks);
// the copier copies and commits at most restoreBatchChunksMax chunks at a time (one volume
// sync and one metadata commit per batch; an operation that completes the restore waits for at
// most one batch), at most restoreCopyBytesPerSecondMax, and after a disk error tries again
// after restoreRetryMs.
export const restorePendingPageBits = 32 * 1024;
export const restoreBatchChunksMax = 64;
export const restoreCopyBytesPerSecondMax = 256 * MiB;
export const restoreRetryMs = 1_000;

// ---- Allocation queries (SEEK_DATA/SEEK_HOLE; src/volume/allocated-regions.ts) ----
export const allocationQueryExtentsMax = 1024; // extents asked of BlockFile.dataExtents in one call

// ---- Verify (src/volume/region-hash.ts) ----
export const verifyRegionBytes = 1 * MiB; // one 16-byte digest per region of this size
export const verifyReadBytesMax = 1 * MiB; // the one read buffer of a regionHashes call
export const verifyRegionsPerCallMax = 65_536; // digests one regionHashes call returns (1 MiB of them)

// ---- Replication (wire limits: src/replication/limits.ts) ----
export const linkBytesInFlightMax = 64 * MiB; // record bytes sent and not yet acknowledged as received, per link
export const linkBatchBytesMax = 4 * MiB; // record bytes in one records frame (a larger record goes alone)
export const linkHeartbeatMs = 1_000; // send a heartbeat after this long without sending anything
export const linkSilenceMsMax = 10_000; // drop a link that has heard nothing for this long
export const linkReconnectMsMin = 100; // first retry after a link drops; doubles up to the max
export const linkReconnectMsMax = 5_000;
export const linkAckIntervalMs = 20; // a replica acknowledges progress at least this often while it changes
export const linkOverflowFillRatio = 0.75; // a lagging link that holds more of the log than this switches to its bitmap
export const linkPeriodicIntervalMsDefault = 5_000;
export const linkPeriodicIntervalMsMin = 100;
export const linksPerGroupMax = 8;
export const logShipCacheBytesMax = 32 * MiB; // newest appended records kept for links to ship from memory (per group with links)
export const linkCloseMsMax = 1_000; // a closing link gets this long to deliver its last frame (a reject)
export const replicationMessagesBytesMax = 48 * MiB; // decoded frames waiting for their handler, per connection; the socket is paused beyond
export const replicaPendingBytesMax = 64 * MiB; // region data and items received, not yet applied; the link is paused beyond
export const replicaMemoryBytesMax = 64 * MiB; // received records kept in memory for the applier (beyond: read back from the log copy)
// A replica applies a run of consecutive plain writes to one volume as one job on the thread
// pool (Volume.writeRun), at most this many records and payload bytes at a time (the native
// call takes at most 1024).
export const replicaApplyRunRecordsMax = 256;
export const replicaApplyRunBytesMax = 4 * MiB;
// Resync pieces a primary reads ahead of sending (each at most replicationRegionDataSizeMax, 4 MiB).
export const resyncReadsInflightMax = 8;
export const replicaApplyCheckpointFillRatio = 0.5; // the applier syncs volumes and frees its log above this fill
// Region pieces of a resync or initial sync (disjoint, queued one after another with no record
// between them) that a replica writes at once: each may wait for a copy-on-write into the
// protective snapshot (a store sync and a metadata commit), which then share one another's.
export const replicaRegionsInflightMax = 16;
export const replicaRoomWaitMsMax = 120_000; // a receiver waits this long for log room, then drops the link
export const verifyRegionsPerRequestMax = 16; // regions hashed per verify round trip
export const drainMsDefault = 600_000; // `drain` gives up (TIMEOUT) after this unless told otherwise
export const linkTwinsStaleMax = 4_096; // twin names a link remembers missing changes to; beyond, all are rebuilt
export const verifyDifferencesReportedMax = 1_000; // differing regions listed in a verify report (all are counted)
export const stateFileBytesMax = 64 * KiB; // a link's or a replica's small JSON state file

// ---- Replication links (mutually authenticated TLS, see src/io/link-tls.ts) ----
export const linkIdBytes = 8; // random bytes of a link id: 16 hex characters, the link's TLS servername
export const linkCertificateValidityDays = 3650; // a link's certificates are replaced by a new `link add`, not renewed
export const linkCertificateBackdateMs = 24 * 60 * 60 * 1000; // notBefore lies this far back: the secondary's clock may be behind
export const linkCredentialBytesMax = 64 * KiB; // a credential file (three PEMs and a few names)
export const linkConnectMsMax = 10_000; // a primary gives up connecting (TCP and TLS) after this
export const linkHandshakeMsMax = 10_000; // a listener drops a connection that is not authenticated by then
export const linkHandshakesPendingMax = 16; // unauthenticated connections a listener holds at once; more are closed at once

// ---- The primary's link I/O thread (src/io/link-worker.ts) ----
// The main thread copies frame bytes into staging buffers and hands them to the link thread,
// which seals and sends them and hands each back once its socket's write callback fired. A
// connection owns at most linkIoBuffersMax of them (8 MiB): when all are out, write() returns
// false until some come back, so a link that cannot send holds a fixed amount of memory, not
// its backlog. 1 MiB: large enough that one 4 MiB records frame is four hand-offs, small enough
// that the link thread starts sealing before the whole frame is copied.
export const linkIoBufferBytes = 1 * MiB;
export const linkIoBuffersMax = 8;
// 'drain' waits until this many buffers are back (or were never made), not one: a whole records
// batch then fits in them, where with one buffer back most of the next batch would be copied
// aside first and copied again into the buffers as they came back.
export const linkIoDrainBuffersMin = 4;
// Bytes written while the thread is still writing an earlier buffer are posted once it comes
// back, or at once when they reach this many (worker-link-socket.ts, queueFlush).
export const linkIoPostBytesMin = 256 * KiB;

// ---- Admin API ----
export const apiBodyBytesMax = 64 * KiB;
export const apiRequestMsMax = 30_000;
export const cliRequestMsMax = 60_000; // the CLI waits this long for an answer, plus what the request itself may take (drain)
export const cliLongRequestMsMax = 6 * 60 * 60 * 1000; // what a request whose work grows with the data may take: verify, restore, sync, delete
export const apiTokenBytes = 32;

// ---- Process ----
// Node's slab for Buffer.allocUnsafe: requests and replies under half of it are cut from one
// slab instead of each getting a new ArrayBuffer (measured: ~1.5 µs less CPU per 4k write).
export const bufferPoolBytes = 1 * MiB;
export const shutdownMsMax = 10_000; // graceful stop, then exit anyway

assert(nbdPayloadSizeMax <= logRecordPayloadSizeMax, "an NBD write must fit one log record");
assert(logRecordPayloadSizeMax * 2 <= logSizeMin, "the smallest log holds two largest records");
assert(logBatchBytesMax <= logSizeMin / 4, "a batch is a small part of the log");
assert(nbdInflightBytesMax >= nbdPayloadSizeMax * 2, "a connection can hold two largest requests");
assert(activityExtentSize % blockSizePreferred === 0, "activity extents are whole blocks");
assert(activityExtentsKeep > 0 && activityExtentsKeep < activityExtentsMax, "the map cools down to fewer extents than it holds");
assert(volumeSizeMax <= Number.MAX_SAFE_INTEGER, "byte offsets fit a JS number");
assert(nbdStringLengthMax < nbdOptionDataSizeMax, "an option can carry a full string");
assert(nbdOptionDrainSizeMax > nbdOptionDataSizeMax, "draining starts above the option limit");
assert(nbdWriteDrainSizeMax >= nbdPayloadSizeMax, "draining starts above the payload limit");
assert(nbdCloseMsMax < shutdownMsMax, "the NBD layer stops within the process's shutdown time");
assert(nbdPayloadSizeMax % nbdBlockSizeMinimum === 0, "the maximum block size is whole minimum blocks");

assert(Number.isInteger(Math.log2(dirtyRegionBytesMin)) && dirtyRegionBytesMin % sectorSize === 0, "dirty regions are a power of two of whole sectors");
assert(Number.isInteger(Math.log2(dirtyBitmapBitsMax)), "the bitmap's bit limit is a power of two");
assert(volumeSizeMax / dirtyBitmapBitsMax <= 2 ** 31, "the largest dirty region fits a u32 field");
assert(dirtyBitmapBitsMax / 8 <= 2 * MiB, "a volume's dirty bitmap is at most 2 MiB");
assert(verifyRegionBytes % sectorSize === 0 && verifyReadBytesMax % sectorSize === 0, "verify regions and reads are whole sectors");
assert(verifyRegionsPerCallMax * 16 <= 1 * MiB, "one call's digests are at most 1 MiB");
assert(linkCertificateBackdateMs < linkCertificateValidityDays * 24 * 60 * 60 * 1000, "a link certificate is valid after its backdating");
assert(linkHandshakesPendingMax >= 1 && linkHandshakeMsMax > 0 && linkConnectMsMax > 0, "links can be established");
assert(linkIoDrainBuffersMin >= 1 && linkIoDrainBuffersMin < linkIoBuffersMax, "a link's staging drains before all of it is back, with some still being sent");
assert(linkIoBufferBytes * linkIoDrainBuffersMin >= linkBatchBytesMax, "the record bytes of a whole batch fit the staging buffers a drain promises");
assert(linkHeartbeatMs * 3 <= linkSilenceMsMax, "a few heartbeats fit in the silence limit");
assert(linkBatchBytesMax <= linkBytesInFlightMax / 4, "several batches fit in flight");
assert(linkReconnectMsMin <= linkReconnectMsMax, "reconnect back-off range");
assert(linkOverflowFillRatio > logCheckpointFillRatio && linkOverflowFillRatio < 1, "a link overflows only when checkpoints cannot help");

assert(Number.isInteger(Math.log2(snapshotChunkSizeDefault)) && snapshotChunkSizeDefault >= snapshotChunkSizeMin && snapshotChunkSizeDefault <= snapshotChunkSizeMax, "the default chunk is a power of two in range");
assert(volumesPerGroupMax <= operationsPerSetMax, "a snapshot of every volume of a group is one operation set");
assert(snapshotChunkSizeMin % sectorSize === 0, "chunks are whole sectors");
assert(Number.isInteger(Math.log2(snapshotFreshPageBits)), "fresh-cache pages are a power of two of bits");
assert(restorePendingPageBits % 8 === 0 && restoreBatchChunksMax >= 1 && restoreBatchChunksMax <= snapshotChunkBuffersMax, "a restore batch fits the chunk buffers");
assert(restoreCopyBytesPerSecondMax >= snapshotChunkSizeMax && restoreRetryMs > 0, "the background copier makes progress");

export const units = { KiB, MiB, GiB, TiB } as const;
