// The incremental frame decoder: the same frames however the stream is cut into chunks (random
// split points, single bytes), a FrameError for any damage at any point of a stream, never a
// frame that was not sent (splices of two streams), and never more memory than one frame.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { type Frame, frameHeaderSize } from "../../src/replication/frame.js";
import { FrameDecoder } from "../../src/replication/frame-decoder.js";
import { replicationFramePayloadSizeMax } from "../../src/replication/limits.js";
import { messageDecode } from "../../src/replication/message.js";
import { allocationSizes, encodeStream, expectFrameError, frameBytes, frameErrorOrNothing, messageArbitrary } from "./generators.js";

const streamArbitrary = fc.array(messageArbitrary, { minLength: 1, maxLength: 8 }).map((messages) => encodeStream(messages));

// Cuts `stream` at the given points (any numbers; taken modulo the length, sorted).
function chunks(stream: Buffer, points: readonly number[]): Buffer[] {
  const cuts = [...new Set(points.map((point) => point % (stream.length + 1)))].sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of [...cuts, stream.length]) {
    pieces.push(stream.subarray(from, cut)); // empty pieces included: the decoder takes them
    from = cut;
  }
  return pieces;
}

function decodeAll(pieces: readonly Buffer[], decoder = new FrameDecoder()): Frame[] {
  const frames: Frame[] = [];
  for (const piece of pieces) frames.push(...decoder.push(piece));
  decoder.end();
  return frames;
}

function assertSameFrames(frames: readonly Frame[], sent: readonly Buffer[]): void {
  assert.equal(frames.length, sent.length);
  frames.forEach((frame, index) => {
    assert.equal(frame.sequence, BigInt(index));
    assert.deepEqual(frameBytes(frame), sent[index]);
  });
}

describe("replication frame decoder", () => {
  it("yields the same frames however the stream is split", () => {
    fc.assert(
      fc.property(streamArbitrary, fc.array(fc.nat(), { maxLength: 40 }), (sent, points) => {
        const stream = Buffer.concat(sent);
        assertSameFrames(decodeAll(chunks(stream, points)), sent);
      }),
      { numRuns: 1000 },
    );
  });

  it("yields the same frames fed one byte at a time, holding at most one frame", () => {
    fc.assert(
      fc.property(streamArbitrary, (sent) => {
        const stream = Buffer.concat(sent);
        const decoder = new FrameDecoder();
        const frames: Frame[] = [];
        const largest = Math.max(...sent.map((frame) => frame.length));
        for (let at = 0; at < stream.length; at++) {
          frames.push(...decoder.push(stream.subarray(at, at + 1)));
          assert.ok(decoder.bufferedBytes < largest);
        }
        decoder.end();
        assertSameFrames(frames, sent);
      }),
      { numRuns: 150 },
    );
  });

  it("returns a frame that lies inside one chunk as a view of it, without allocating", () => {
    fc.assert(
      fc.property(streamArbitrary, (sent) => {
        const stream = Buffer.concat(sent);
        const decoder = new FrameDecoder();
        let frames: Frame[] = [];
        assert.deepEqual(
          allocationSizes(() => (frames = decoder.push(stream))),
          [],
        );
        assertSameFrames(frames, sent);
        for (const frame of frames) assert.equal(frame.payload.buffer, stream.buffer);
      }),
      { numRuns: 100 },
    );
  });

  // The frame decoder refuses it, or (inside a record of a records frame that leaves its
  // records to their own checksums) the message decoder does.
  it("rejects any single bit flip anywhere in a stream, however it is split", () => {
    fc.assert(
      fc.property(streamArbitrary, fc.nat(), fc.integer({ min: 0, max: 7 }), fc.array(fc.nat(), { maxLength: 10 }), (sent, at, bit, points) => {
        const stream = Buffer.concat(sent);
        stream[at % stream.length]! ^= 1 << bit;
        expectFrameError(() => decodeAll(chunks(stream, points)).map((frame) => messageDecode(frame)));
      }),
      { numRuns: 2000 },
    );
  });

  it("reports a stream that ends inside a frame as truncated, after yielding the whole frames before it", () => {
    fc.assert(
      fc.property(streamArbitrary, fc.nat(), (sent, cut) => {
        const stream = Buffer.concat(sent);
        const length = cut % stream.length;
        const boundaries = sent.reduce<number[]>((ends, frame) => [...ends, (ends.at(-1) ?? 0) + frame.length], [0]);
        const decoder = new FrameDecoder();
        const frames = decoder.push(stream.subarray(0, length));
        const whole = boundaries.filter((end) => end <= length).length - 1;
        assert.equal(frames.length, whole);
        if (boundaries.includes(length)) decoder.end();
        else assert.equal(expectFrameError(() => decoder.end()), "truncated");
      }),
      { numRuns: 500 },
    );
  });

  it("never yields a frame (or, records, a message) that was not sent from a splice of two streams", () => {
    fc.assert(
      fc.property(streamArbitrary, streamArbitrary, fc.nat(), fc.nat(), fc.boolean(), (first, second, cutFirst, cutSecond, checkSequence) => {
        const a = Buffer.concat(first);
        const b = Buffer.concat(second);
        const spliced = Buffer.concat([a.subarray(0, cutFirst % (a.length + 1)), b.subarray(cutSecond % (b.length + 1))]);
        const sent = new Set([...first, ...second].map((frame) => frame.toString("hex")));
        const decoder = new FrameDecoder({ checkSequence });
        const frames: Frame[] = [];
        frameErrorOrNothing(() => {
          // A records frame with recordChecksums is whole once its records decode too.
          for (const frame of decoder.push(spliced)) {
            messageDecode(frame);
            frames.push(frame);
          }
          decoder.end();
        });
        for (const frame of frames) assert.ok(sent.has(frameBytes(frame).toString("hex")), "a frame that was never sent");
      }),
      { numRuns: 1500 },
    );
  });

  it("never allocates beyond one frame's checked size, whatever bytes arrive", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 200 }), { maxLength: 8 }), fc.option(streamArbitrary), (pieces, prefix) => {
        const decoder = new FrameDecoder();
        const input = [...(prefix ?? []).map((frame) => frame.subarray(0, frame.length)), ...pieces.map((piece) => Buffer.from(piece))];
        const sizes = allocationSizes(() =>
          frameErrorOrNothing(() => {
            for (const piece of input) decoder.push(piece);
            decoder.end();
          }),
        );
        for (const size of sizes) assert.ok(size <= replicationFramePayloadSizeMax);
        assert.ok(decoder.bufferedBytes <= frameHeaderSize + replicationFramePayloadSizeMax);
      }),
      { numRuns: 1000 },
    );
  });

  it("refuses a frame out of sequence, and stays failed", () => {
    const sent = encodeStream([
      { kind: "heartbeat", timestampMs: 1, echoTimestampMs: 0 },
      { kind: "heartbeat", timestampMs: 2, echoTimestampMs: 1 },
      { kind: "heartbeat", timestampMs: 3, echoTimestampMs: 2 },
    ]);
    const skipping = new FrameDecoder();
    assert.equal(skipping.push(sent[0]!).length, 1);
    assert.equal(expectFrameError(() => skipping.push(sent[2]!)), "sequence");
    assert.equal(expectFrameError(() => skipping.push(sent[1]!)), "sequence"); // failed for good
    assert.equal(expectFrameError(() => skipping.end()), "sequence");
    const repeating = new FrameDecoder();
    assert.equal(expectFrameError(() => repeating.push(Buffer.concat([sent[0]!, sent[0]!]))), "sequence");
    const late = new FrameDecoder({ sequenceFirst: 1n });
    assert.equal(late.push(Buffer.concat([sent[1]!, sent[2]!])).length, 2);
    assert.equal(late.nextSequence, 3n);
    assert.equal(new FrameDecoder({ checkSequence: false }).push(Buffer.concat([sent[2]!, sent[0]!])).length, 2);
  });

  it("refuses a foreign protocol from its first bytes", () => {
    assert.equal(expectFrameError(() => new FrameDecoder().push(Buffer.from("GET "))), "magic");
    assert.equal(expectFrameError(() => new FrameDecoder().push(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00]))), "magic"); // a TLS ClientHello
    const versionTwo = Buffer.from(encodeStream([{ kind: "resyncEnd", consistentLsn: 1n }])[0]!.subarray(0, 6));
    versionTwo.writeUInt16LE(2, 4);
    assert.equal(expectFrameError(() => new FrameDecoder().push(versionTwo)), "version");
    assert.deepEqual(new FrameDecoder().push(Buffer.from("LSRP")), []); // so far so good
  });
});
