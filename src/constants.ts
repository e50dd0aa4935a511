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

// ---- Admin API ----
export const apiBodyBytesMax = 64 * KiB;
export const apiRequestMsMax = 30_000;
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
assert(volumeSizeMax <= Number.MAX_SAFE_INTEGER, "byte offsets fit a JS number");
assert(nbdStringLengthMax < nbdOptionDataSizeMax, "an option can carry a full string");
assert(nbdOptionDrainSizeMax > nbdOptionDataSizeMax, "draining starts above the option limit");
assert(nbdWriteDrainSizeMax >= nbdPayloadSizeMax, "draining starts above the payload limit");
assert(nbdCloseMsMax < shutdownMsMax, "the NBD layer stops within the process's shutdown time");
assert(nbdPayloadSizeMax % nbdBlockSizeMinimum === 0, "the maximum block size is whole minimum blocks");

export const units = { KiB, MiB, GiB, TiB } as const;
