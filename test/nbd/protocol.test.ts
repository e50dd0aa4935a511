// The NBD codecs and pure decision functions: property tests over the decoders (roundtrips,
// arbitrary bytes, truncations, bit flips), and unit tests of the encoders, the handshake
// state machine, request checks and block status descriptors.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { nbdMetaContextsMax, nbdOptionDataSizeMax, nbdPayloadSizeMax } from "../../src/constants.js";
import { blockStatusDescriptors } from "../../src/nbd/block-status.js";
import { Handshake, metaContextIdBaseAllocation, type Session } from "../../src/nbd/handshake.js";
import {
  NbdFrameError,
  blockStatusChunkEncode,
  command,
  commandFlag,
  errorChunkEncode,
  exportNameReplyEncode,
  goOptionDecode,
  goOptionEncode,
  info,
  metaContextOptionDecode,
  metaContextOptionEncode,
  offsetBeyond,
  option,
  optionDecode,
  optionEncode,
  optionHeaderDecode,
  optionReply,
  requestHeaderDecode,
  requestHeaderEmpty,
  requestHeaderEncode,
  requestHeaderSize,
  transmissionFlag,
  type RequestHeader,
} from "../../src/nbd/protocol.js";
import { errnoOf, requestCheck } from "../../src/nbd/request-check.js";
import { MemoryExport, MemoryRegistry } from "./memory-export.js";

const runs = { numRuns: 2000 };

// Runs a decoder; anything thrown other than NbdFrameError fails the property.
function typedOnly<T>(decode: () => T): T | NbdFrameError {
  try {
    return decode();
  } catch (error) {
    if (error instanceof NbdFrameError) return error;
    throw error;
  }
}

const arbitraryHeader = fc.record({
  flags: fc.integer({ min: 0, max: 0xffff }),
  type: fc.integer({ min: 0, max: 0xffff }),
  handleHigh: fc.nat({ max: 0xffffffff }),
  handleLow: fc.nat({ max: 0xffffffff }),
  offset: fc.maxSafeNat(),
  length: fc.nat({ max: 0xffffffff }),
});

const protocolString = fc.string({ maxLength: 40 }).filter((text) => !text.includes("\0"));

describe("request header codec", () => {
  it("roundtrips every valid header", () => {
    fc.assert(
      fc.property(arbitraryHeader, (header) => {
        const decoded = requestHeaderDecode(requestHeaderEncode(header), 0, requestHeaderEmpty());
        assert.deepEqual(decoded, { ...header });
      }),
      runs,
    );
  });

  it("decodes any 64-bit offset exactly below 2^53 and as offsetBeyond above", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (offset) => {
        const frame = requestHeaderEncode({ flags: 0, type: 0, handleHigh: 0, handleLow: 0, offset: 0, length: 0 });
        frame.writeBigUInt64BE(offset, 16);
        const decoded = requestHeaderDecode(frame, 0, requestHeaderEmpty());
        assert.equal(decoded.offset, offset < 2n ** 53n ? Number(offset) : offsetBeyond);
      }),
      runs,
    );
  });

  it("throws only NbdFrameError on arbitrary bytes at any position", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.integer({ min: -4, max: 90 }), (bytes, position) => {
        const source = Buffer.from(bytes);
        const result = typedOnly(() => requestHeaderDecode(source, position, requestHeaderEmpty()));
        if (!(result instanceof NbdFrameError)) {
          assert.ok(position >= 0 && source.length - position >= requestHeaderSize);
          assert.equal(source.readUInt32BE(position), 0x25609513);
        }
      }),
      runs,
    );
  });

  it("reports every truncation as truncated", () => {
    fc.assert(
      fc.property(arbitraryHeader, fc.nat({ max: requestHeaderSize - 1 }), (header, keep) => {
        const result = typedOnly(() => requestHeaderDecode(requestHeaderEncode(header).subarray(0, keep), 0, requestHeaderEmpty()));
        assert.ok(result instanceof NbdFrameError && result.reason === "truncated");
      }),
      runs,
    );
  });

  it("rejects a flipped magic bit and decodes any other flip to the flipped field", () => {
    fc.assert(
      fc.property(arbitraryHeader, fc.nat({ max: requestHeaderSize * 8 - 1 }), (header, bit) => {
        const frame = requestHeaderEncode(header);
        frame[bit >> 3] = (frame[bit >> 3] as number) ^ (0x80 >> (bit & 7));
        const result = typedOnly(() => requestHeaderDecode(frame, 0, requestHeaderEmpty()));
        if (bit < 32) {
          assert.ok(result instanceof NbdFrameError && result.reason === "magic");
        } else {
          assert.ok(!(result instanceof NbdFrameError));
          assert.notDeepEqual({ ...result }, { ...header });
        }
      }),
      runs,
    );
  });
});

describe("option codec", () => {
  it("roundtrips every valid option frame, returning a view (no copy)", () => {
    fc.assert(
      fc.property(fc.nat({ max: 0xffffffff }), fc.uint8Array({ maxLength: 600 }), (type, data) => {
        const frame = optionEncode(type, data);
        const decoded = optionDecode(frame);
        assert.equal(decoded.option, type);
        assert.deepEqual(new Uint8Array(decoded.data), data);
        assert.equal(decoded.data.buffer, frame.buffer);
      }),
      runs,
    );
  });

  it("throws only NbdFrameError on arbitrary bytes, and returns only views within the input", () => {
    const magicPrefix = fc.uint8Array({ maxLength: 64 }).map((tail) => Buffer.concat([Buffer.from("IHAVEOPT"), tail]));
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)), magicPrefix), (source) => {
        const result = typedOnly(() => optionDecode(source));
        if (!(result instanceof NbdFrameError)) {
          assert.equal(result.data.buffer, source.buffer);
          assert.ok(result.data.length <= nbdOptionDataSizeMax);
        }
      }),
      runs,
    );
  });

  it("rejects a length over the limit before looking for the data", () => {
    fc.assert(
      fc.property(fc.integer({ min: nbdOptionDataSizeMax + 1, max: 0xffffffff }), (length) => {
        const frame = optionEncode(option.go);
        frame.writeUInt32BE(length, 12);
        const result = typedOnly(() => optionDecode(frame));
        assert.ok(result instanceof NbdFrameError && result.reason === "size" && result.code === "REQUEST_TOO_LARGE");
      }),
      runs,
    );
  });

  it("reports truncations and flipped magic bits", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 100 }), fc.nat(), fc.nat({ max: 63 }), (data, cut, bit) => {
        const frame = optionEncode(option.info, data);
        const truncated = typedOnly(() => optionDecode(frame.subarray(0, cut % frame.length)));
        assert.ok(truncated instanceof NbdFrameError && truncated.reason === "truncated");
        frame[bit >> 3] = (frame[bit >> 3] as number) ^ (0x80 >> (bit & 7));
        const flipped = typedOnly(() => optionHeaderDecode(frame, 0));
        assert.ok(flipped instanceof NbdFrameError && flipped.reason === "magic");
      }),
      runs,
    );
  });

  it("roundtrips GO data and rejects anything else with NbdFrameError only", () => {
    fc.assert(
      fc.property(protocolString, fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }), (name, requests) => {
        assert.deepEqual(goOptionDecode(goOptionEncode(name, requests)), { name, infoRequests: requests });
      }),
      runs,
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        typedOnly(() => goOptionDecode(Buffer.from(bytes)));
      }),
      runs,
    );
  });

  it("roundtrips meta context data and rejects anything else with NbdFrameError only", () => {
    fc.assert(
      fc.property(protocolString, fc.array(protocolString, { maxLength: nbdMetaContextsMax }), (name, queries) => {
        assert.deepEqual(metaContextOptionDecode(metaContextOptionEncode(name, queries), nbdMetaContextsMax), { exportName: name, queries });
      }),
      runs,
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat({ max: 0xffffffff }), (bytes, count) => {
        const source = Buffer.from(bytes);
        typedOnly(() => metaContextOptionDecode(source, nbdMetaContextsMax));
        // A forged query count: answered at once (no loop over 2^32), typed.
        const forged = metaContextOptionEncode("disk", []);
        forged.writeUInt32BE(count, 8);
        const result = typedOnly(() => metaContextOptionDecode(Buffer.concat([forged, source]), nbdMetaContextsMax));
        if (count > nbdMetaContextsMax) assert.ok(result instanceof NbdFrameError);
      }),
      runs,
    );
  });
});

describe("reply encoders", () => {
  it("lays out an error chunk with DONE, errno and message", () => {
    const chunk = errorChunkEncode(1, 2, 22, "bad");
    assert.equal(chunk.readUInt32BE(0), 0x668e33ef);
    assert.equal(chunk.readUInt16BE(4), 1); // DONE
    assert.equal(chunk.readUInt16BE(6), 0x8001);
    assert.equal(chunk.readUInt32BE(8), 1);
    assert.equal(chunk.readUInt32BE(12), 2);
    assert.equal(chunk.readUInt32BE(16), 6 + 3);
    assert.equal(chunk.readUInt32BE(20), 22);
    assert.equal(chunk.readUInt16BE(24), 3);
    assert.equal(chunk.subarray(26).toString(), "bad");
  });

  it("lays out a block status chunk", () => {
    const chunk = blockStatusChunkEncode(0, 9, 1, [{ length: 4096, flags: 0 }, { length: 512, flags: 3 }]);
    assert.equal(chunk.readUInt16BE(6), 5);
    assert.equal(chunk.readUInt32BE(16), 4 + 16);
    assert.deepEqual([chunk.readUInt32BE(20), chunk.readUInt32BE(24), chunk.readUInt32BE(28), chunk.readUInt32BE(32), chunk.readUInt32BE(36)], [1, 4096, 0, 512, 3]);
  });

  it("pads the EXPORT_NAME reply with 124 zeroes unless NO_ZEROES", () => {
    assert.equal(exportNameReplyEncode(1 << 20, 1, false).length, 134);
    assert.equal(exportNameReplyEncode(1 << 20, 1, true).length, 10);
    assert.equal(exportNameReplyEncode(2 ** 40, 1, true).readBigUInt64BE(0), 2n ** 40n);
  });
});

function handshakeWith(...exports: MemoryExport[]): Handshake {
  return new Handshake(new MemoryRegistry(exports), true);
}

describe("handshake state machine", () => {
  it("answers GO for a known export with EXPORT, BLOCK_SIZE and ACK, then enters transmission", () => {
    const step = handshakeWith(new MemoryExport("disk", 1 << 20)).option(option.go, goOptionEncode("disk", [info.blockSize]));
    assert.equal(step.kind, "transmission");
    assert.ok(step.kind === "transmission" && step.session.blockSizeNegotiated);
    const types = step.replies.map((reply) => reply.readUInt32BE(12));
    assert.deepEqual(types, [optionReply.info, optionReply.info, optionReply.ack]);
    const blockSize = step.replies[1] as Buffer;
    assert.deepEqual([blockSize.readUInt16BE(20), blockSize.readUInt32BE(22), blockSize.readUInt32BE(26), blockSize.readUInt32BE(30)], [3, 512, 4096, nbdPayloadSizeMax]);
  });

  it("answers an unknown export with ERR_UNKNOWN, and closes on EXPORT_NAME", () => {
    const handshake = handshakeWith(new MemoryExport("disk", 1 << 20));
    const step = handshake.option(option.info, goOptionEncode("nope", []));
    assert.equal(step.kind, "continue");
    assert.equal(step.replies[0]?.readUInt32BE(12), optionReply.errUnknown);
    const close = handshake.option(option.exportName, Buffer.from("nope"));
    assert.ok(close.kind === "close" && close.hard);
  });

  it("refuses STARTTLS by policy and unknown options as unsupported", () => {
    const handshake = handshakeWith(new MemoryExport("disk", 1 << 20));
    assert.equal(handshake.option(option.startTls, Buffer.alloc(0)).replies[0]?.readUInt32BE(12), optionReply.errPolicy);
    assert.equal(handshake.option(4242, Buffer.from("x")).replies[0]?.readUInt32BE(12), optionReply.errUnsupported);
    assert.equal(handshake.option(option.list, Buffer.from("x")).replies[0]?.readUInt32BE(12), optionReply.errInvalid);
  });

  it("selects base:allocation only after structured replies and only for the same export", () => {
    const handshake = handshakeWith(new MemoryExport("a", 1 << 20), new MemoryExport("b", 1 << 20));
    const early = handshake.option(option.setMetaContext, metaContextOptionEncode("a", ["base:allocation"]));
    assert.equal(early.replies[0]?.readUInt32BE(12), optionReply.errInvalid);
    handshake.option(option.structuredReply, Buffer.alloc(0));
    const set = handshake.option(option.setMetaContext, metaContextOptionEncode("a", ["base:allocation", "x-other:thing"]));
    assert.deepEqual(set.replies.map((reply) => reply.readUInt32BE(12)), [optionReply.metaContext, optionReply.ack]);
    assert.equal(set.replies[0]?.readUInt32BE(20), metaContextIdBaseAllocation);
    const goOther = handshake.option(option.go, goOptionEncode("b", []));
    assert.ok(goOther.kind === "transmission" && goOther.session.metaContextId === 0);
    const again = handshakeWith(new MemoryExport("a", 1 << 20));
    again.option(option.structuredReply, Buffer.alloc(0));
    again.option(option.setMetaContext, metaContextOptionEncode("a", ["base:allocation"]));
    const go = again.option(option.go, goOptionEncode("a", []));
    assert.ok(go.kind === "transmission" && go.session.metaContextId === metaContextIdBaseAllocation && go.session.structuredReplies);
    assert.ok(go.kind === "transmission" && (go.session.transmissionFlags & transmissionFlag.sendDf) !== 0);
  });

  it("closes after too many options", () => {
    const handshake = handshakeWith(new MemoryExport("disk", 1 << 20));
    let last;
    for (let index = 0; index < 1025; index += 1) last = handshake.option(4242, Buffer.alloc(0));
    assert.ok(last?.kind === "close" && last.hard);
  });
});

function sessionFor(flags: Partial<MemoryExport["flags"]> = {}, extra: Partial<Session> = {}): Session {
  const target = new MemoryExport("disk", 1 << 20, flags);
  return {
    export: target,
    exportName: "disk",
    size: 1 << 20,
    transmissionFlags: 1,
    structuredReplies: true,
    blockSizeNegotiated: false,
    metaContextId: 1,
    ...extra,
  };
}

function check(session: Session, type: number, offset: number, length: number, flags = 0): number {
  const header: RequestHeader = { flags, type, handleHigh: 0, handleLow: 0, offset, length };
  const code = requestCheck(header, session);
  return code === undefined ? 0 : errnoOf(code);
}

describe("request checks", () => {
  const size = 1 << 20;
  it("follows the spec's errors", () => {
    const session = sessionFor();
    assert.equal(check(session, command.read, size - 512, 512), 0);
    assert.equal(check(session, command.read, size - 512, 1024), 22);
    assert.equal(check(session, command.write, size - 512, 1024), 28);
    assert.equal(check(session, command.writeZeroes, size, 1), 28);
    assert.equal(check(session, command.trim, size, 1), 22);
    assert.equal(check(session, command.blockStatus, size, 512), 22);
    assert.equal(check(session, command.read, offsetBeyond, 512), 22);
    assert.equal(check(session, command.read, 0, nbdPayloadSizeMax + 1), 22);
    assert.equal(check(session, 99, 0, 0), 22);
    assert.equal(check(session, command.read, 0, 512, commandFlag.noHole), 22);
    assert.equal(check(session, command.read, 0, 512, commandFlag.fua | commandFlag.df), 0);
    assert.equal(check(session, command.flush, 0, 512), 22);
    assert.equal(check(session, command.read, 1, 3), 0); // byte granularity unless negotiated
    const large = sessionFor({}, { size: 2 ** 30 });
    assert.equal(check(large, command.cache, 0, nbdPayloadSizeMax + 512), 22);
    assert.equal(check(large, command.trim, 0, nbdPayloadSizeMax + 512), 0, "TRIM has no maximum");
    assert.equal(check(large, command.writeZeroes, 0, nbdPayloadSizeMax + 512), 0, "nor WRITE_ZEROES unless negotiated");
  });

  it("refuses misaligned requests only after block size negotiation", () => {
    const session = sessionFor({}, { blockSizeNegotiated: true });
    assert.equal(check(session, command.read, 1, 512), 22);
    assert.equal(check(session, command.write, 512, 100), 22);
    assert.equal(check(session, command.read, 512, 512), 0);
  });

  it("refuses writes on a read-only export and fast zero without support", () => {
    const readOnly = sessionFor({ readOnly: true });
    assert.equal(check(readOnly, command.write, 0, 512), 1);
    assert.equal(check(readOnly, command.trim, 0, 512), 1);
    assert.equal(check(readOnly, command.writeZeroes, 0, 512), 1);
    const slowZero = sessionFor({ canFastZero: false });
    assert.equal(check(slowZero, command.writeZeroes, 0, 512, commandFlag.fastZero), 95);
    assert.equal(check(slowZero, command.writeZeroes, 0, 512, commandFlag.noHole), 0);
    assert.equal(check(sessionFor({}, { metaContextId: 0 }), command.blockStatus, 0, 512), 22);
  });
});

describe("block status descriptors", () => {
  it("reports holes as HOLE|ZERO and data as 0, covering the request exactly", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ offset: fc.nat({ max: 1 << 20 }), length: fc.integer({ min: 1, max: 1 << 16 }) }), { maxLength: 12 }),
        fc.nat({ max: 1 << 20 }),
        fc.integer({ min: 1, max: 1 << 20 }),
        (extents, offset, length) => {
          const descriptors = blockStatusDescriptors(offset, length, extents, 4096, 512);
          const total = descriptors.reduce((sum, descriptor) => sum + descriptor.length, 0);
          assert.equal(total, length);
          let cursor = offset;
          for (const descriptor of descriptors) {
            assert.ok(descriptor.length > 0);
            if (descriptor.flags === 3) {
              // A reported hole overlaps no data extent.
              for (const extent of extents) {
                assert.ok(extent.offset + extent.length <= cursor || extent.offset >= cursor + descriptor.length);
              }
            } else {
              assert.equal(descriptor.flags, 0);
            }
            cursor += descriptor.length;
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it("honours REQ_ONE and null (all data)", () => {
    assert.deepEqual(blockStatusDescriptors(0, 8192, [{ offset: 4096, length: 4096 }], 1, 512), [{ length: 4096, flags: 3 }]);
    assert.deepEqual(blockStatusDescriptors(0, 8192, null, 16, 512), [{ length: 8192, flags: 0 }]);
  });
});
