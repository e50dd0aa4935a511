// Verify over a link (docs/PROTOCOL.md §6): the primary asks a peer for the hashes of a run of
// regions at an exact point of the stream, and compares them with its own, taken at the same
// point (Group.readOrdered). Only hashes cross the link, never data.
//
//   hashRequest (25 + n bytes)                      hashReply (8 + 16 × count bytes)
//   0 requestId u32 │ 4 volumeId u32                0 requestId u32 │ 4 count u32
//   8 regionBytes u32 │ 12 count u32                8 + 16i: digest of region i (16 bytes)
//   16 offset u64 │ 24 n u8 │ 25 snapshot name (n bytes; n = 0: the volume itself)
//
// The peer queues the request in its applier's stream where it arrived, so it hashes its
// volume after exactly the records the primary had sent before it. count is 1 …
// verifyRegionsPerRequestMax; a reply may hold fewer digests when the peer's volume ends
// sooner (a size difference, which the primary reports as differing bytes).

import { sectorSize, verifyRegionsPerRequestMax, volumeIdMax, volumeSizeMax } from "../constants.js";
import type { Replica } from "../group/replica.js";
import { regionDigest, regionDigestBytes, regionHashes } from "../volume/region-hash.js";
import { FrameError } from "./frame-error.js";
import { PayloadReader, PayloadWriter } from "./payload-codec.js";

export const hashRequestSizeMin = 25;
const snapshotNameBytesMax = 64;
// operators' names, and the node's own (the protective snapshot's '~')
const snapshotNamePattern = /^[A-Za-z0-9~][A-Za-z0-9_.-]*$/;
export const hashRequestSizeMax = hashRequestSizeMin + snapshotNameBytesMax;
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
  readonly snapshot: string | null; // a snapshot's twin of the volume, or null: the volume
}

export interface HashReply {
  readonly kind: "hashReply";
  readonly requestId: number;
  readonly digests: Buffer; // count × 16 bytes
}

export function hashRequestEncode(request: HashRequest): Buffer {
  const name = Buffer.from(request.snapshot ?? "", "latin1");
  return new PayloadWriter(hashRequestSizeMin + name.length).u32(request.requestId).u32(request.volumeId).u32(request.regionBytes).u32(request.count).u64(request.offset).u8(name.length).bytes(name).done();
}

export function hashRequestDecode(payload: Buffer): HashRequest {
  const reader = new PayloadReader(payload);
  const fixed = { requestId: reader.u32(), volumeId: reader.u32(), regionBytes: reader.u32(), count: reader.u32(), offset: reader.u64Number("offset") };
  const nameLength = reader.u8();
  if (nameLength > snapshotNameBytesMax || reader.remaining !== nameLength) throw new FrameError("length", { nameLength, bytes: payload.length });
  const snapshot = nameLength === 0 ? null : reader.bytes(nameLength).toString("latin1");
  if (snapshot !== null && !snapshotNamePattern.test(snapshot)) throw new FrameError("field", { field: "snapshot" });
  reader.end();
  const request = { kind: "hashRequest" as const, ...fixed, snapshot };
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

// The replica's side: hashes its volume (or the snapshot's twin) now: the applier runs this at
// the request's place. A missing volume or twin answers no digests: everything differs.
export async function hashRequestPerform(replica: Replica, request: HashRequest, send: (reply: HashReply) => void): Promise<void> {
  const volume = replica.volumeList().find((candidate) => candidate.id === request.volumeId);
  const fromRegion = request.offset / request.regionBytes;
  let digests: Buffer = Buffer.alloc(0);
  if (volume !== undefined && request.snapshot === null && request.offset < volume.size) {
    // a volume whose content is partly elsewhere (a restore in the background) is hashed as
    // its readers see it, not as its image holds it
    if (volume.readOverlay !== null) digests = await imageHashes({ size: volume.size, read: (offset, target) => volume.read(target, offset) }, request.offset, request.regionBytes, request.count);
    else digests = await regionHashes(volume.file, volume.size, { regionBytes: request.regionBytes, fromRegion, regionsMax: request.count });
  } else if (volume !== undefined && request.snapshot !== null) {
    const image = replica.snapshotImage(volume, request.snapshot);
    if (image !== null && request.offset < image.size) digests = await imageHashes(image, request.offset, request.regionBytes, request.count);
  }
  send({ kind: "hashReply", requestId: request.requestId, digests });
}

export interface ReadableImage {
  readonly size: number;
  read(offset: number, target: Buffer): Promise<void>;
}

// Digests of up to count regions of an image read through its own reader (a snapshot).
export async function imageHashes(image: ReadableImage, offset: number, regionBytes: number, count: number): Promise<Buffer> {
  const digests: Buffer[] = [];
  const buffer = Buffer.allocUnsafe(regionBytes);
  for (let index = 0, at = offset; index < count && at < image.size; index += 1, at += regionBytes) {
    const piece = buffer.subarray(0, Math.min(regionBytes, image.size - at));
    await image.read(at, piece);
    digests.push(regionDigest(piece));
  }
  return Buffer.concat(digests);
}
