// The messages of the replication protocol, versions 1 and 2: one union, and the two functions that
// turn a message into a frame's type, flags and payload parts and a decoded frame back into a
// message. The per-type codecs live with their neighbours (handshake.ts, records-batch.ts,
// progress.ts, resync.ts). Decoding is strict and canonical: a payload that decodes re-encodes
// to the same bytes, and anything else is a FrameError.
//
//   const encoder = new FrameEncoder();            const decoder = new FrameDecoder();
//   socket.writev(encoder.encode(                  for (const frame of decoder.push(chunk)) {
//     messageEncode({ kind: "ack", … })));           const message = messageDecode(frame); … }

import { unreachable } from "../assert.js";
import { type Frame, FrameType, RecordsFlag, RegionDataFlag } from "./frame.js";
import { FrameError } from "./frame-error.js";
import { type Accept, acceptDecode, acceptEncode, type Hello, helloDecode, helloEncode, type Reject, rejectDecode, rejectEncode } from "./handshake.js";
import { type Ack, ackDecode, ackEncode, type Heartbeat, heartbeatDecode, heartbeatEncode } from "./progress.js";
import { type Records, type RecordsExpectation, type RecordToSend, recordsDecode, recordsEncode } from "./records-batch.js";
import {
  type BitmapRegions,
  bitmapRegionsDecode,
  bitmapRegionsEncode,
  type RegionData,
  regionDataDecode,
  regionDataEncode,
  type ResyncEnd,
  resyncEndDecode,
  resyncEndEncode,
} from "./resync.js";
import { type VolumeTable, volumeTableDecode, volumeTableEncode } from "./volume-table.js";
import { type TwinCatalog, twinCatalogDecode, twinCatalogEncode, type TwinList, twinListDecode, twinListEncode, type TwinListRequest, twinListRequestDecode, twinListRequestEncode, type TwinRegion, twinRegionDecode, twinRegionEncode } from "./twins.js";
import { type HashReply, hashReplyDecode, hashReplyEncode, type HashRequest, hashRequestDecode, hashRequestEncode } from "./verify-hashes.js";

// A records message to send: records as read from the log (see RecordToSend).
export type RecordsToSend = Omit<Records, "records"> & { readonly records: readonly RecordToSend[] };

export type Message = Hello | Accept | Reject | Records | Ack | Heartbeat | BitmapRegions | RegionData | ResyncEnd | VolumeTable | HashRequest | HashReply | TwinListRequest | TwinList | TwinCatalog | TwinRegion;
export type MessageToSend = Exclude<Message, Records> | RecordsToSend;
export type MessageKind = Message["kind"];

// What FrameEncoder.encode() takes: a type, its flags and the payload parts (referenced).
export interface FramePayload {
  readonly type: number;
  readonly flags: number;
  readonly payload: readonly Buffer[];
}

export function messageEncode(message: MessageToSend): FramePayload {
  switch (message.kind) {
    case "hello":
      return { type: FrameType.hello, flags: 0, payload: [helloEncode(message)] };
    case "accept":
      return { type: FrameType.accept, flags: 0, payload: [acceptEncode(message)] };
    case "reject":
      return { type: FrameType.reject, flags: 0, payload: [rejectEncode(message)] };
    case "records": {
      const flags = (message.ackNow ? RecordsFlag.ackNow : 0) | (message.intervalEnd ? RecordsFlag.intervalEnd : 0) | (message.recordChecksums === true ? RecordsFlag.recordChecksums : 0);
      return { type: FrameType.records, flags, payload: recordsEncode(message.records) };
    }
    case "ack":
      return { type: FrameType.ack, flags: 0, payload: [ackEncode(message)] };
    case "heartbeat":
      return { type: FrameType.heartbeat, flags: 0, payload: [heartbeatEncode(message)] };
    case "bitmapRegions":
      return { type: FrameType.bitmapRegions, flags: 0, payload: [bitmapRegionsEncode(message)] };
    case "regionData":
      return { type: FrameType.regionData, flags: message.data === null ? RegionDataFlag.zero : 0, payload: regionDataEncode(message) };
    case "resyncEnd":
      return { type: FrameType.resyncEnd, flags: 0, payload: [resyncEndEncode(message)] };
    case "volumeTable":
      return { type: FrameType.volumeTable, flags: 0, payload: [volumeTableEncode(message)] };
    case "hashRequest":
      return { type: FrameType.hashRequest, flags: 0, payload: [hashRequestEncode(message)] };
    case "hashReply":
      return { type: FrameType.hashReply, flags: 0, payload: [hashReplyEncode(message)] };
    case "twinListRequest":
      return { type: FrameType.twinListRequest, flags: 0, payload: [twinListRequestEncode(message)] };
    case "twinList":
      return { type: FrameType.twinList, flags: 0, payload: [twinListEncode(message)] };
    case "twinCatalog":
      return { type: FrameType.twinCatalog, flags: 0, payload: [twinCatalogEncode(message)] };
    case "twinRegion":
      return { type: FrameType.twinRegion, flags: message.data === null ? RegionDataFlag.zero : 0, payload: twinRegionEncode(message) };
    default:
      return unreachable(message, "message kind");
  }
}

// Decodes a frame's payload (the frame itself was checked by FrameDecoder or frameDecode).
// `expected` is passed to recordsDecode for a records frame: the receiver's next LSN, the
// checksum of its last record, the stream's logId.
export function messageDecode(frame: Frame, expected: RecordsExpectation = {}): Message {
  const { payload } = frame;
  switch (frame.type) {
    case FrameType.hello:
      return helloDecode(payload);
    case FrameType.accept:
      return acceptDecode(payload);
    case FrameType.reject:
      return rejectDecode(payload);
    case FrameType.records:
      return {
        kind: "records",
        records: recordsDecode(payload, expected),
        ackNow: (frame.flags & RecordsFlag.ackNow) !== 0,
        intervalEnd: (frame.flags & RecordsFlag.intervalEnd) !== 0,
        recordChecksums: (frame.flags & RecordsFlag.recordChecksums) !== 0,
      };
    case FrameType.ack:
      return ackDecode(payload);
    case FrameType.heartbeat:
      return heartbeatDecode(payload);
    case FrameType.bitmapRegions:
      return bitmapRegionsDecode(payload);
    case FrameType.regionData:
      return regionDataDecode(payload, (frame.flags & RegionDataFlag.zero) !== 0);
    case FrameType.resyncEnd:
      return resyncEndDecode(payload);
    case FrameType.volumeTable:
      return volumeTableDecode(payload);
    case FrameType.hashRequest:
      return hashRequestDecode(payload);
    case FrameType.hashReply:
      return hashReplyDecode(payload);
    case FrameType.twinListRequest:
      return twinListRequestDecode(payload);
    case FrameType.twinList:
      return twinListDecode(payload);
    case FrameType.twinCatalog:
      return twinCatalogDecode(payload);
    case FrameType.twinRegion:
      return twinRegionDecode(payload, (frame.flags & RegionDataFlag.zero) !== 0);
    default:
      throw new FrameError("type", { type: frame.type });
  }
}
