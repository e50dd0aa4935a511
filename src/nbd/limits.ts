// Limits the NBD server needs beyond those in src/constants.ts. They belong in constants.ts and
// will move there; until then they live here, with their relationships asserted at load.

import { assert } from "../assert.js";
import { nbdOptionDataSizeMax, nbdPayloadSizeMax, shutdownMsMax, units } from "../constants.js";

// An option whose data is larger than nbdOptionDataSizeMax but at most this is read and
// discarded, then answered with NBD_REP_ERR_TOO_BIG; anything larger is a hard disconnect
// (a client sending it is not haggling, it is flooding).
export const nbdOptionDrainSizeMax = 1 * units.MiB;

// A WRITE longer than nbdPayloadSizeMax but at most this has its payload read and discarded
// (never buffered), then gets EINVAL; anything longer is a hard disconnect. The spec asks
// servers not to treat lengths under 2^25 as an attack, which nbdPayloadSizeMax already covers.
export const nbdWriteDrainSizeMax = 4 * nbdPayloadSizeMax;

// NbdServer.close(): how long in-flight requests get to finish before sockets are destroyed.
export const nbdCloseMsMax = 5_000;

// The block sizes advertised with NBD_INFO_BLOCK_SIZE.
export const nbdBlockSizeMinimum = 512;
export const nbdBlockSizePreferred = 4 * units.KiB;

assert(nbdOptionDrainSizeMax > nbdOptionDataSizeMax, "draining starts above the option limit");
assert(nbdWriteDrainSizeMax >= nbdPayloadSizeMax, "draining starts above the payload limit");
assert(nbdCloseMsMax < shutdownMsMax, "the NBD layer stops within the process's shutdown time");
assert(nbdPayloadSizeMax % nbdBlockSizeMinimum === 0, "the maximum block size is whole minimum blocks");
assert(nbdBlockSizeMinimum <= nbdBlockSizePreferred, "the preferred block size is at least the minimum");
