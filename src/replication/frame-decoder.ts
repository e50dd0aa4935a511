// The incremental frame decoder of one direction of one connection: fed the byte stream in
// chunks of any size (as a socket delivers them), it returns every frame that became complete.
//
//   header ──32 bytes, all checks pass──▶ payload ──payloadSize bytes, checksum ok──▶ header
//      │                                     │
//      └──────── any check fails ────────────┴──▶ failed (every later call throws the same error)
//
// Memory: the decoder holds at most one partial frame — up to 32 header bytes and one payload
// buffer of the size the (checksummed, range-checked) header announced, never more than the
// limit. A frame that lies wholly inside one chunk is returned as a view of that chunk (no
// copy); a frame split across chunks is assembled in a buffer of exactly its payload size. The
// caller must therefore not reuse a chunk's memory after pushing it (socket chunks are fresh).
//
// Checks, in order: magic (from 4 bytes), version (from 6), header checksum, reserved, type,
// flags, payload size (before any allocation), sequence; then the payload checksum. The first
// failure is a FrameError; the decoder is then failed for good: the connection must be
// dropped, since nothing after a bad frame can be framed reliably.

import { assert } from "../assert.js";
import { type Frame, type FrameHeader, type FrameLimits, frameHeaderDecode, frameHeaderPrefixCheck, frameHeaderSize, framePayloadCheck } from "./frame.js";
import { FrameError } from "./frame-error.js";
import { replicationFramePayloadSizeMax } from "./limits.js";

const emptyPayload = Buffer.alloc(0);

export interface FrameDecoderOptions extends FrameLimits {
  readonly sequenceFirst?: bigint; // the sequence the first frame must carry (default 0)
  readonly checkSequence?: boolean; // default true
}

export class FrameDecoder {
  private readonly headerBytes = Buffer.alloc(frameHeaderSize);
  private headerFilled = 0;
  private header: FrameHeader | null = null; // set while the payload is being read
  private payload: Buffer | null = null; // the payload being assembled across chunks
  private payloadFilled = 0;
  private sequenceNext: bigint;
  private failure: FrameError | null = null;
  private readonly limits: FrameLimits;
  private readonly checkSequence: boolean;

  constructor(options: FrameDecoderOptions = {}) {
    const payloadSizeMax = options.payloadSizeMax ?? replicationFramePayloadSizeMax;
    assert(Number.isInteger(payloadSizeMax) && payloadSizeMax >= 0 && payloadSizeMax <= replicationFramePayloadSizeMax, "decoder payload limit");
    this.limits = { payloadSizeMax };
    this.sequenceNext = options.sequenceFirst ?? 0n;
    this.checkSequence = options.checkSequence ?? true;
  }

  // Bytes held of the frame in progress (≤ 32 + that frame's payloadSize).
  get bufferedBytes(): number {
    return this.headerFilled + this.payloadFilled;
  }

  // The sequence the next frame must carry.
  get nextSequence(): bigint {
    return this.sequenceNext;
  }

  get failed(): FrameError | null {
    return this.failure;
  }

  // Consumes `chunk` and returns the frames it completed, in order. Throws a FrameError at the
  // first bad byte (frames completed before it in this chunk are lost with the connection).
  push(chunk: Buffer): Frame[] {
    if (this.failure !== null) throw this.failure;
    const frames: Frame[] = [];
    try {
      let at = 0;
      while (at < chunk.length) {
        at = this.header === null ? this.takeHeader(chunk, at, frames) : this.takePayload(chunk, at, frames);
      }
    } catch (error) {
      assert(error instanceof FrameError, `frame decoder failed with ${String(error)}`);
      this.failure = error;
      throw error;
    }
    return frames;
  }

  // The stream ended: throws `truncated` when it ended inside a frame.
  end(): void {
    if (this.failure !== null) throw this.failure;
    if (this.bufferedBytes > 0 || this.header !== null) {
      this.failure = new FrameError("truncated", { buffered: this.bufferedBytes, payloadSize: this.header?.payloadSize });
      throw this.failure;
    }
  }

  private takeHeader(chunk: Buffer, at: number, frames: Frame[]): number {
    let source: Buffer;
    let next: number;
    if (this.headerFilled === 0 && chunk.length - at >= frameHeaderSize) {
      source = chunk.subarray(at, at + frameHeaderSize); // the whole header is here: no copy
      next = at + frameHeaderSize;
    } else {
      const copied = chunk.copy(this.headerBytes, this.headerFilled, at, at + frameHeaderSize - this.headerFilled);
      this.headerFilled += copied;
      next = at + copied;
      if (this.headerFilled < frameHeaderSize) {
        frameHeaderPrefixCheck(this.headerBytes.subarray(0, this.headerFilled));
        return next;
      }
      source = this.headerBytes;
    }
    const header = frameHeaderDecode(source, this.limits);
    if (this.checkSequence && header.sequence !== this.sequenceNext) {
      throw new FrameError("sequence", { sequence: header.sequence, expected: this.sequenceNext });
    }
    this.headerFilled = 0;
    this.header = header;
    if (header.payloadSize === 0) return this.complete(emptyPayload, frames, next);
    if (chunk.length - next >= header.payloadSize) {
      return this.complete(chunk.subarray(next, next + header.payloadSize), frames, next + header.payloadSize);
    }
    this.payload = Buffer.allocUnsafe(header.payloadSize); // checked against the limit above
    return next;
  }

  private takePayload(chunk: Buffer, at: number, frames: Frame[]): number {
    const payload = this.payload;
    assert(this.header !== null && payload !== null, "payload state");
    const copied = chunk.copy(payload, this.payloadFilled, at, at + payload.length - this.payloadFilled);
    this.payloadFilled += copied;
    if (this.payloadFilled < payload.length) return at + copied;
    return this.complete(payload, frames, at + copied);
  }

  private complete(payload: Buffer, frames: Frame[], next: number): number {
    const header = this.header;
    assert(header !== null, "complete without a header");
    framePayloadCheck(header, payload);
    frames.push({ type: header.type, flags: header.flags, sequence: header.sequence, payload });
    this.header = null;
    this.payload = null;
    this.payloadFilled = 0;
    this.sequenceNext += 1n;
    return next;
  }
}
