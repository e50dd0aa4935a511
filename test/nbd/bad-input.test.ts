// Bad input over a raw socket: garbage, bad magics, truncated and oversized frames, unknown
// options and commands, requests after DISC. Each must get the spec's error or a clean
// disconnect; afterwards a well-behaved client (qemu-io) still works and the image is
// byte-for-byte unchanged.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { nbdPayloadSizeMax } from "../../src/constants.js";
import { OperatingError } from "../../src/errors.js";
import {
  clientFlag,
  command,
  goOptionEncode,
  metaContextOptionEncode,
  option,
  optionEncode,
  optionReply,
  requestHeaderEncode,
} from "../../src/nbd/protocol.js";
import { run, startHarness, waitFor, type Harness } from "./harness.js";
import { MemoryExport } from "./memory-export.js";
import { RawClient } from "./raw-client.js";

const imageSize = 4 * 1024 * 1024;

describe("bad input over a raw socket", () => {
  let harness: Harness;
  let disk: MemoryExport;
  let hash: string;

  before(async () => {
    disk = new MemoryExport("disk", imageSize);
    disk.data.fill(0x42);
    hash = disk.hash();
    harness = await startHarness([disk]);
  });

  after(async () => {
    await harness.close();
  });

  // The server keeps serving a well-behaved client, and nothing reached the image.
  async function assertStillServing(): Promise<void> {
    const result = await run("qemu-io", ["-f", "raw", "-r", harness.uri("disk"), "-c", "read -P 0x42 0 64k"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /read 65536\/65536 bytes/);
    assert.doesNotMatch(result.stdout + result.stderr, /fail/i);
    assert.equal(disk.hash(), hash, "the image is unchanged");
  }

  async function connected(structured = false): Promise<RawClient> {
    const client = await RawClient.connect(harness.socketPath);
    await client.handshake("disk", { structured });
    return client;
  }

  async function expectHardClose(client: RawClient): Promise<void> {
    try {
      assert.ok(await client.ended(), "the server closed the connection");
    } finally {
      client.destroy();
    }
  }

  it("closes on garbage instead of client flags", async () => {
    const client = await RawClient.connect(harness.socketPath);
    await client.read(18);
    client.write(Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await expectHardClose(client);
    assert.ok(harness.observer.protocolErrors.some((error) => /client flags/.test(error.message)));
    await assertStillServing();
  });

  it("closes on unknown client flags and on a bad option magic", async () => {
    const flagged = await RawClient.connect(harness.socketPath);
    await flagged.start(clientFlag.fixedNewstyle | (1 << 5));
    await expectHardClose(flagged);
    const badMagic = await RawClient.connect(harness.socketPath);
    await badMagic.start();
    const frame = optionEncode(option.list);
    frame.write("IHAVEOPU", 0, "latin1");
    badMagic.write(frame);
    await expectHardClose(badMagic);
    await assertStillServing();
  });

  it("forgets a client that stops mid-handshake", async () => {
    const before = harness.observer.closed.length;
    const client = await RawClient.connect(harness.socketPath);
    await client.start();
    client.write(optionEncode(option.go, goOptionEncode("disk", [])).subarray(0, 10));
    client.destroy();
    await waitFor(() => harness.observer.closed.length > before && harness.server.connectionCount === 0);
    await assertStillServing();
  });

  it("answers unknown options with ERR_UNSUP and keeps the connection usable", async () => {
    const client = await RawClient.connect(harness.socketPath);
    try {
      await client.start();
      const replies = await client.option(0x7fff, Buffer.from("whatever"));
      assert.equal(replies[0]?.type, optionReply.errUnsupported);
      assert.equal(replies[0]?.option, 0x7fff);
      assert.equal((await client.option(option.startTls))[0]?.type, optionReply.errPolicy);
      assert.equal((await client.option(option.list, Buffer.from("x")))[0]?.type, optionReply.errInvalid);
      assert.equal((await client.option(option.info, goOptionEncode("nope", [])))[0]?.type, optionReply.errUnknown);
      assert.equal((await client.option(option.go, Buffer.from([0, 0, 0, 9])))[0]?.type, optionReply.errInvalid);
      const meta = await client.option(option.setMetaContext, metaContextOptionEncode("disk", ["base:allocation"]));
      assert.equal(meta[0]?.type, optionReply.errInvalid, "meta contexts need structured replies first");
      const go = await client.option(option.go, goOptionEncode("disk", []));
      assert.equal(go[go.length - 1]?.type, optionReply.ack);
      client.request(command.read, 1, 0, 512);
      const reply = await client.reply(512);
      assert.equal(reply.errno, 0);
      assert.ok(reply.payload.every((byte) => byte === 0x42));
    } finally {
      client.destroy();
    }
    await assertStillServing();
  });

  it("drains a too-large option and answers ERR_TOO_BIG; drops an absurd one", async () => {
    const client = await RawClient.connect(harness.socketPath);
    try {
      await client.start();
      const replies = await client.option(0x99, Buffer.alloc(128 * 1024, 7));
      assert.equal(replies[0]?.type, optionReply.errTooBig);
      const go = await client.option(option.go, goOptionEncode("disk", []));
      assert.equal(go[go.length - 1]?.type, optionReply.ack);
    } finally {
      client.destroy();
    }
    const absurd = await RawClient.connect(harness.socketPath);
    await absurd.start();
    const header = optionEncode(option.go);
    header.writeUInt32BE(0xffffffff, 12);
    absurd.write(header);
    await expectHardClose(absurd);
    await assertStillServing();
  });

  it("closes on EXPORT_NAME of an unknown export; pads EXPORT_NAME replies unless NO_ZEROES", async () => {
    const unknown = await RawClient.connect(harness.socketPath);
    await unknown.start();
    unknown.write(optionEncode(option.exportName, Buffer.from("nope")));
    await expectHardClose(unknown);
    for (const [flags, length] of [
      [clientFlag.fixedNewstyle, 134],
      [clientFlag.fixedNewstyle | clientFlag.noZeroes, 10],
    ] as const) {
      const client = await RawClient.connect(harness.socketPath);
      try {
        await client.start(flags);
        client.write(optionEncode(option.exportName, Buffer.from("disk")));
        const reply = await client.read(length);
        assert.equal(Number(reply.readBigUInt64BE(0)), imageSize);
        assert.ok(reply.subarray(10).every((byte) => byte === 0));
        client.request(command.read, 5, 4096, 16);
        const read = await client.reply(16);
        assert.ok(read.errno === 0 && read.handleLow === 5 && read.payload.every((byte) => byte === 0x42));
        assert.equal(client.bytesBuffered, 0, "no stray padding");
      } finally {
        client.destroy();
      }
    }
    await assertStillServing();
  });

  it("acknowledges ABORT and ends the session", async () => {
    const client = await RawClient.connect(harness.socketPath);
    await client.start();
    const replies = await client.option(option.abort);
    assert.equal(replies[0]?.type, optionReply.ack);
    await expectHardClose(client);
    await assertStillServing();
  });

  it("closes on a bad request magic, and ignores writes sent after the close", async () => {
    const client = await connected();
    const frame = requestHeaderEncode({ flags: 0, type: command.write, handleHigh: 0, handleLow: 1, offset: 0, length: 512 });
    frame.writeUInt32BE(0x12560953, 0); // the historic request magic
    client.write(Buffer.concat([frame, Buffer.alloc(512, 0xee)]));
    assert.ok(await client.ended());
    client.request(command.write, 2, 0, 512, 0, Buffer.alloc(512, 0xee)); // onto a closed socket
    client.destroy();
    await assertStillServing();
  });

  it("disconnects on a write of absurd length without buffering it", async () => {
    const client = await connected();
    client.request(command.write, 1, 0, 0xffffffff, 0, Buffer.alloc(4096, 0xee));
    await expectHardClose(client);
    assert.ok(harness.observer.protocolErrors.some((error) => /absurd/.test(error.message)));
    await assertStillServing();
  });

  it("drains an oversized write and refuses it with EINVAL, then carries on", async () => {
    const client = await connected();
    try {
      client.request(command.write, 1, 0, nbdPayloadSizeMax + 512, 0, Buffer.alloc(nbdPayloadSizeMax + 512, 0xee));
      client.request(command.read, 2, 0, 512);
      const refused = await client.reply();
      assert.deepEqual([refused.handleLow, refused.errno], [1, 22]);
      const read = await client.reply(512);
      assert.deepEqual([read.handleLow, read.errno], [2, 0]);
      assert.ok(read.payload.every((byte) => byte === 0x42));
    } finally {
      client.destroy();
    }
    await assertStillServing();
  });

  it("refuses out-of-range, unknown and unnegotiated requests, consuming write payloads", async () => {
    const client = await connected();
    try {
      client.request(command.write, 1, imageSize - 512, 1024, 0, Buffer.alloc(1024, 0xee));
      client.request(command.read, 2, imageSize, 512);
      client.request(99, 3, 0, 0);
      client.request(command.blockStatus, 4, 0, 4096); // no meta context negotiated
      client.request(command.read, 5, 0, 512, 1 << 9); // unknown flag
      client.request(command.write, 6, 0, 0); // empty write: accepted, nothing changes
      client.request(command.read, 7, 8, 8);
      const replies = new Map<number, number>();
      for (let index = 0; index < 6; index += 1) {
        const reply = await client.reply();
        replies.set(reply.handleLow, reply.errno);
      }
      assert.deepEqual(Object.fromEntries(replies), { 1: 28, 2: 22, 3: 22, 4: 22, 5: 22, 6: 0 });
      const read = await client.read(16 + 8);
      assert.equal(read.readUInt32BE(12), 7);
      assert.ok(read.subarray(16).every((byte) => byte === 0x42));
    } finally {
      client.destroy();
    }
    await assertStillServing();
  });

  it("ignores everything after DISC and closes", async () => {
    const client = await connected();
    const disconnect = requestHeaderEncode({ flags: 0, type: command.disconnect, handleHigh: 0, handleLow: 1, offset: 0, length: 0 });
    const write = requestHeaderEncode({ flags: 0, type: command.write, handleHigh: 0, handleLow: 2, offset: 0, length: 4096 });
    client.write(Buffer.concat([disconnect, write, Buffer.alloc(4096, 0xee)]));
    await expectHardClose(client);
    assert.equal(client.bytesBuffered, 0, "no reply to DISC or to what followed it");
    await assertStillServing();
  });

  it("maps export failures to errnos: OperatingError by its code, anything else to EIO", async () => {
    const structured = await connected(true);
    const simple = await connected(false);
    try {
      disk.failAt = { offset: 8192, error: new OperatingError("DISK_FULL", { what: "test" }) };
      simple.request(command.read, 1, 8192, 512);
      const full = await simple.reply(512);
      assert.deepEqual([full.structured, full.errno, simple.bytesBuffered], [false, 28, 0]);
      disk.failAt = { offset: 8192, error: new TypeError("a bug in the export") };
      structured.request(command.read, 2, 8192, 512);
      const broken = await structured.reply();
      assert.deepEqual([broken.structured, broken.type, broken.flags, broken.errno], [true, 0x8001, 1, 5]);
      assert.match(broken.payload.subarray(6).toString(), /^INTERNAL: /, "a summary, not the export's message");
      simple.request(command.flush, 3, 0, 0);
      assert.equal((await simple.reply()).errno, 0, "the connection still works");
    } finally {
      disk.failAt = undefined;
      structured.destroy();
      simple.destroy();
    }
    await assertStillServing();
  });
});

describe("handshake deadline", () => {
  it("drops a client that does not finish the handshake in time", async () => {
    const harness = await startHarness([new MemoryExport("disk", 1 << 20)], { handshakeMsMax: 200 });
    const client = await RawClient.connect(harness.socketPath);
    try {
      await client.start();
      assert.ok(await client.ended(2000));
      assert.ok(harness.observer.protocolErrors.some((error) => /handshake not finished/.test(error.message)));
    } finally {
      client.destroy();
      await harness.close();
    }
  });
});
