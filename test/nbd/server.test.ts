// NbdServer as a whole: TCP listening, the connection limit, flow control under a burst of
// pipelined requests, out-of-order replies, and a bounded close that lets in-flight requests
// finish.

import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { nbdConnectionsMax, nbdRequestsInflightMax } from "../../src/constants.js";
import { silentLogger } from "../../src/logger.js";
import { command, requestHeaderEncode } from "../../src/nbd/protocol.js";
import { NbdServer } from "../../src/nbd/server.js";
import { flushSlowThenFast, RecordingObserver, run, startHarness, waitFor } from "./harness.js";
import { MemoryExport, MemoryRegistry } from "./memory-export.js";
import { RawClient } from "./raw-client.js";

describe("NbdServer", () => {
  it("serves qemu-io over TCP", async () => {
    const disk = new MemoryExport("disk", 1 << 20);
    const server = new NbdServer(new MemoryRegistry([disk]), new RecordingObserver(), silentLogger);
    try {
      const address = await server.listenTcp("127.0.0.1", 0);
      assert.ok(address.port > 0);
      const result = await run("qemu-io", ["-f", "raw", `nbd://127.0.0.1:${address.port}/disk`, "-c", "write -P 0x5c 4k 4k"]);
      assert.equal(result.code, 0, result.stderr);
      assert.ok(disk.data.subarray(4096, 8192).every((byte) => byte === 0x5c));
    } finally {
      await server.close();
    }
  });

  it("replaces a stale unix socket file but never a live one", async () => {
    const dir = await mkdtemp(join(tmpdir(), "lockstep-nbd-stale-"));
    const path = join(dir, "nbd.sock");
    const first = new NbdServer(new MemoryRegistry([]), new RecordingObserver(), silentLogger);
    const second = new NbdServer(new MemoryRegistry([]), new RecordingObserver(), silentLogger);
    try {
      // Python binds without unlinking on exit: a stale socket file, as after kill -9.
      const bind = await run("/usr/bin/python3", ["-c", `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(path)})`]);
      assert.equal(bind.code, 0, bind.stderr);
      await first.listenUnix(path);
      await assert.rejects(second.listenUnix(path), /EADDRINUSE/);
    } finally {
      await first.close();
      await second.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses connections beyond nbdConnectionsMax and keeps serving the others", async () => {
    const harness = await startHarness([new MemoryExport("disk", 1 << 20)]);
    const clients: RawClient[] = [];
    try {
      for (let index = 0; index < nbdConnectionsMax; index += 1) {
        const client = await RawClient.connect(harness.socketPath);
        clients.push(client);
        await client.read(18);
      }
      assert.equal(harness.server.connectionCount, nbdConnectionsMax);
      const extra = await RawClient.connect(harness.socketPath);
      clients.push(extra);
      assert.ok(await extra.ended(2000), "the extra connection is closed at once");
      assert.equal(extra.bytesBuffered, 0, "without a greeting");
      assert.ok(harness.observer.protocolErrors.some((error) => error.code === "OVERLOADED"));
      const first = clients[0] as RawClient;
      first.write(Buffer.from([0, 0, 0, 3]));
      assert.equal((await first.option(3)).at(-1)?.type, 1, "an existing connection still works");
    } finally {
      for (const client of clients) client.destroy();
      await waitFor(() => harness.server.connectionCount === 0);
      await harness.close();
    }
  });

  it("bounds in-flight requests per connection and answers every pipelined request", async () => {
    const disk = new MemoryExport("disk", 4 << 20);
    disk.data.fill(7);
    disk.delayMs = 20;
    const harness = await startHarness([disk]);
    const client = await RawClient.connect(harness.socketPath);
    try {
      await client.handshake("disk");
      const count = 300;
      for (let handle = 0; handle < count; handle += 1) {
        const write = handle % 3 === 0;
        client.request(write ? command.write : command.read, handle, handle * 4096, 4096, 0, write ? Buffer.alloc(4096, 7) : undefined);
      }
      const seen = new Set<number>();
      for (let index = 0; index < count; index += 1) {
        const head = await client.read(16, 10_000);
        const handle = head.readUInt32BE(12);
        assert.equal(head.readUInt32BE(4), 0);
        if (handle % 3 !== 0) assert.ok((await client.read(4096)).every((byte) => byte === 7));
        seen.add(handle);
      }
      assert.equal(seen.size, count);
      assert.equal(disk.inflightPeak, nbdRequestsInflightMax, "requests ran concurrently, up to the limit");
    } finally {
      client.destroy();
      await harness.close();
    }
  });

  it("parses requests split at any byte boundary", async () => {
    const disk = new MemoryExport("disk", 1 << 20);
    const harness = await startHarness([disk]);
    const client = await RawClient.connect(harness.socketPath);
    try {
      await client.handshake("disk");
      const stream = Buffer.concat([
        requestHeaderEncode({ flags: 0, type: command.write, handleHigh: 0, handleLow: 1, offset: 1024, length: 700 }),
        Buffer.alloc(700, 0x3c),
        requestHeaderEncode({ flags: 0, type: command.read, handleHigh: 0, handleLow: 2, offset: 1024, length: 700 }),
        requestHeaderEncode({ flags: 0, type: command.flush, handleHigh: 0, handleLow: 3, offset: 0, length: 0 }),
      ]);
      let position = 0;
      for (let piece = 1; position < stream.length; piece = (piece % 29) + 1) {
        client.write(stream.subarray(position, position + piece));
        position += piece;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const write = await client.reply();
      assert.deepEqual([write.handleLow, write.errno], [1, 0]);
      const read = await client.reply(700);
      assert.deepEqual([read.handleLow, read.errno], [2, 0]);
      assert.ok(read.payload.every((byte) => byte === 0x3c));
      assert.equal((await client.reply()).handleLow, 3);
      assert.ok(disk.data.subarray(1024, 1724).every((byte) => byte === 0x3c) && disk.data[1724] === 0);
    } finally {
      client.destroy();
      await harness.close();
    }
  });

  it("replies out of order when a later request finishes first", async () => {
    const disk = new MemoryExport("disk", 1 << 20);
    const harness = await startHarness([disk]);
    const client = await RawClient.connect(harness.socketPath);
    try {
      await client.handshake("disk");
      await flushSlowThenFast(client, disk);
      assert.equal((await client.reply()).handleLow, 2);
      assert.equal((await client.reply()).handleLow, 1);
    } finally {
      client.destroy();
      await harness.close();
    }
  });

  it("closes in bounded time: in-flight requests finish, handshakes are dropped", async () => {
    const disk = new MemoryExport("disk", 1 << 20);
    disk.data.fill(9);
    const harness = await startHarness([disk], { closeMsMax: 2000 });
    const busy = await RawClient.connect(harness.socketPath);
    const idle = await RawClient.connect(harness.socketPath);
    try {
      await busy.handshake("disk");
      await idle.read(18);
      disk.delayMs = 300;
      busy.request(command.read, 1, 0, 512);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const started = Date.now();
      await harness.server.close();
      assert.ok(Date.now() - started < 2000);
      const reply = await busy.reply(512);
      assert.deepEqual([reply.handleLow, reply.errno], [1, 0]);
      assert.ok(reply.payload.every((byte) => byte === 9));
      assert.ok(await busy.ended());
      assert.ok(await idle.ended());
      assert.equal(harness.server.connectionCount, 0);
      assert.equal(disk.attached, 0);
      const refused = await new Promise<boolean>((resolve) => {
        const socket = connect({ path: harness.socketPath });
        socket.once("connect", () => {
          socket.destroy();
          resolve(false);
        });
        socket.once("error", () => resolve(true));
      });
      assert.ok(refused, "no longer listening");
    } finally {
      busy.destroy();
      idle.destroy();
      await harness.close();
    }
  });
});
