// Verify over a link (docs/PROTOCOL.md §6): the primary asks a peer for the hashes of a run of
// regions at an exact point of the stream, and compares them with its own, taken at the same
// point (Group.readOrdered). Only hashes cross the link, never data.
//
//   hashRequest (24 bytes)                          hashReply (8 + 16 × count bytes)
//   0 requestId u32 │ 4 volumeId u32                0 requestId u32 │ 4 count u32
//   8 regionBytes u32 │ 12 count u32                8 + 16i: digest of region i (16 bytes)
//   16 offset u64
//
// The peer queues the request in its applier's stream where it arrived, so it hashes its
// volume after exactly the records the primary had sent before it. count is 1 …
// verifyRegionsPerRequestMax; a reply may hold fewer digests when the peer's volume ends
// sooner (a size difference, which the primary reports as differing bytes).

import { sectorSize, verifyRegionsPerRequestMax, volumeIdMax, volumeSizeMax } from "../constants.js";
import type { Replica } from "../group/replica.js";
import { regionDigestBytes, regionHashes } from "../volume/region-hash.js";
import { FrameError } from "./frame-error.js";
import { PayloadReader, PayloadWriter } from "./payload-codec.js";

export const hashRequestSize = 24;
export const hashReplySizeMin = 8;
export const hashReplySizeMax = 8 + regionDigestBytes * verifyRegionsPerRequestMax;
const regionBytesMax = 64 * 1024 * 1024;

export interface HashRequest {
  readonly kind: "hashRequest";
  readonly requestId: number;
  readonly volumeId: number;
  readonly regionBytes: number;
  readonly count: number;
  readonly offset: number; // a multiple of regionBytes
}

export interface HashReply {
  readonly kind: "hashReply";
  readonly requestId: number;
  readonly digests: Buffer; // count × 16 bytes
}

export function hashRequestEncode(request: HashRequest): Buffer {
  return new PayloadWriter(hashRequestSize).u32(request.requestId).u32(request.volumeId).u32(request.regionBytes).u32(request.count).u64(request.offset).done();
}

export function hashRequestDecode(payload: Buffer): HashRequest {
  const reader = new PayloadReader(payload);
  const request = { kind: "hashRequest" as const, requestId: reader.u32(), volumeId: reader.u32(), regionBytes: reader.u32(), count: reader.u32(), offset: reader.u64Number("offset") };
  reader.end();
  if (request.volumeId > volumeIdMax) throw new FrameError("field", { field: "volumeId", value: request.volumeId });
  if (request.regionBytes === 0 || request.regionBytes % sectorSize !== 0 || request.regionBytes > regionBytesMax) throw new FrameError("field", { field: "regionBytes", value: request.regionBytes });
  if (request.count < 1 || request.count > verifyRegionsPerRequestMax) throw new FrameError("field", { field: "count", value: request.count });
  if (request.offset % request.regionBytes !== 0 || request.offset > volumeSizeMax) throw new FrameError("field", { field: "offset", value: request.offset });
  return request;
}

export function hashReplyEncode(reply: HashReply): Buffer {
  return new PayloadWriter(8 + reply.digests.length).u32(reply.requestId).u32(reply.digests.length / regionDigestBytes).bytes(reply.digests).done();
}

export function hashReplyDecode(payload: Buffer): HashReply {
  const reader = new PayloadReader(payload);
  const requestId = reader.u32();
  const count = reader.u32();
  if (count > verifyRegionsPerRequestMax) throw new FrameError("field", { field: "count", value: count });
  if (reader.remaining !== count * regionDigestBytes) throw new FrameError("length", { count, bytes: payload.length });
  const digests = reader.bytes(count * regionDigestBytes);
  reader.end();
  return { kind: "hashReply", requestId, digests };
}

// The replica's side: hashes its volume now (the applier runs this at the request's place).
export async function hashRequestPerform(replica: Replica, request: HashRequest, send: (reply: HashReply) => void): Promise<void> {
  const volume = replica.volumeList().find((candidate) => candidate.id === request.volumeId);
  const fromRegion = request.offset / request.regionBytes;
  let digests: Buffer = Buffer.alloc(0);
  if (volume !== undefined && request.offset < volume.size) {
    digests = await regionHashes(volume.file, volume.size, { regionBytes: request.regionBytes, fromRegion, regionsMax: request.count });
  }
  send({ kind: "hashReply", requestId: request.requestId, digests });
}
