// The link I/O thread (src/io/link-worker.ts) over real TLS on 127.0.0.1, against a real
// LinkListener: bytes cross intact and in order both ways (large random data, many small
// writes, frames written as parts); a peer that does not read makes write() return false with
// the staging buffers within their limit, and 'drain' follows once it reads; a consumer that
// does not read pauses the thread's socket; connect failures carry linkConnect's very code and
// detail; a close on either side reaches the other; one thread serves several connections, and
// a thread that dies fails them and is replaced at the next connect.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import { after, afterEach, before, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type * as tls from "node:tls";
import type { Worker } from "node:worker_threads";
import { linkIoBufferBytes, linkIoBuffersMax, linkIoDrainBuffersMin } from "../../src/constants.js";
import { OperatingError } from "../../src/errors.js";
import { LinkListener, linkConnect, linkCredentialsGenerate } from "../../src/io/link-tls.js";
import { LinkIoThread } from "../../src/io/link-worker.js";
import type { WorkerLinkSocket } from "../../src/io/worker-link-socket.js";
import { silentLogger } from "../../src/logger.js";
import { FrameStream } from "../../src/replication/frame-stream.js";
import type { LinkCredential } from "../../src/replication/link-credential.js";
import { RecordKind } from "../../src/log/record.js";
import type { Message } from "../../src/replication/message.js";
import { chainedRecords } from "../replication/generators.js";

type Pair = { primary: LinkCredential; secondary: LinkCredential };

const host = "127.0.0.1";
const waitMsMax = 10_000;
const MiB = 1024 * 1024;

async function waitUntil(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + waitMsMax;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// Resolves once `stream` emitted `event`; fails the test if it does not in time.
function eventually(stream: Duplex, event: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${event}' within ${waitMsMax} ms`)), waitMsMax);
    stream.once(event, (value: unknown) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

// Everything `stream` reads until it has `bytes` of them.
function collect(stream: Duplex, bytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const timer = setTimeout(() => reject(new Error(`read ${total} of ${bytes} bytes in ${waitMsMax} ms`)), waitMsMax);
    stream.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      total += chunk.length;
      if (total < bytes) return;
      clearTimeout(timer);
      resolve(Buffer.concat(chunks));
    });
  });
}

// Writes `data` in pieces of random sizes up to `pieceMax`, waiting for 'drain' when told to.
async function writeAll(socket: Duplex, data: Buffer, pieceMax: number): Promise<void> {
  let at = 0;
  while (at < data.length) {
    const size = Math.min(data.length - at, 1 + Math.floor(Math.random() * pieceMax));
    const ok = socket.write(data.subarray(at, at + size));
    at += size;
    if (!ok) await eventually(socket, "drain");
  }
}

// A listener whose authenticated sockets the test drives as the secondary's side.
class Peer {
  readonly listener = new LinkListener(silentLogger);
  readonly sockets: tls.TLSSocket[] = [];
  port = 0;

  constructor() {
    this.listener.onLink((socket) => {
      socket.on("error", () => {});
      this.sockets.push(socket);
    });
  }

  async start(credentials: readonly LinkCredential[]): Promise<this> {
    this.listener.setCredentials(credentials);
    this.port = (await this.listener.listen(host, 0)).port;
    return this;
  }

  async socket(index: number): Promise<tls.TLSSocket> {
    await waitUntil(() => this.sockets.length > index, `the listener's link ${index}`);
    return this.sockets[index]!;
  }
}

describe("link I/O thread", { timeout: 60_000 }, () => {
  let linkA: Pair;
  let linkB: Pair;
  let thread: LinkIoThread;
  let peers: Peer[] = [];
  let sockets: Duplex[] = [];
  const listen = async (credentials: readonly LinkCredential[]) => {
    const peer = new Peer();
    peers.push(peer);
    return peer.start(credentials);
  };
  const connect = async (credential: LinkCredential, port: number): Promise<WorkerLinkSocket> => {
    const socket = await thread.connect(credential, host, port);
    sockets.push(socket);
    return socket;
  };

  before(async () => {
    linkA = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
    linkB = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
    thread = new LinkIoThread(silentLogger);
  });
  afterEach(async () => {
    for (const socket of sockets) socket.destroy();
    sockets = [];
    await Promise.all(peers.map((peer) => peer.listener.close()));
    peers = [];
    await waitUntil(() => thread.connections === 0, "every connection released");
  });
  after(async () => {
    await thread.close();
    assert.equal(thread.threadId, null);
    await assert.rejects(thread.connect(linkA.primary, host, 1), (error: unknown) => error instanceof OperatingError && error.code === "SHUTTING_DOWN");
  });

  it("carries several MiB of random bytes both ways, intact and in order", async () => {
    const peer = await listen([linkA.secondary]);
    const socket = await connect(linkA.primary, peer.port);
    socket.on("error", () => {});
    assert.equal(socket.remotePort, peer.port);
    const remote = await peer.socket(0);
    const up = randomBytes(12 * MiB + 12_345);
    const down = randomBytes(9 * MiB + 7);
    const received = collect(remote, up.length);
    const sent = collect(socket, down.length);
    await Promise.all([writeAll(socket, up, 300_000), writeAll(remote, down, 300_000)]);
    assert.ok((await received).equals(up), "the peer got what the thread sent");
    assert.ok((await sent).equals(down), "we got what the peer sent");
    assert.ok(socket.stagingBuffers <= linkIoBuffersMax, `${socket.stagingBuffers} staging buffers`);
  });

  it("keeps many small writes in order, and writes of one tick share a buffer", async () => {
    const peer = await listen([linkA.secondary]);
    const socket = await connect(linkA.primary, peer.port);
    const remote = await peer.socket(0);
    const pieces: Buffer[] = [];
    for (let index = 0; index < 50_000; index += 1) pieces.push(Buffer.from(`${index},`));
    const tail = Buffer.from("tail");
    const expected = Buffer.concat([...pieces, tail]);
    const received = collect(remote, expected.length);
    for (let start = 0; start < pieces.length; start += 1_000) {
      for (const piece of pieces.slice(start, start + 1_000)) assert.ok(socket.write(piece), "a few KiB never fill the staging buffers");
      if (start === 0) assert.equal(socket.stagingBuffers, 1, "a thousand writes of one tick, one buffer");
      await sleep(1);
    }
    // A write's callback runs once the thread's socket wrote its last byte; an empty write's
    // at once when nothing is outstanding.
    const callbacks: string[] = [];
    socket.write(tail, (error) => callbacks.push(`tail ${String(error ?? "")}`));
    assert.ok((await received).equals(expected));
    await waitUntil(() => socket.writableLength === 0, "every staging buffer back");
    assert.deepEqual(callbacks, ["tail "]);
    socket.write(Buffer.alloc(0), (error) => callbacks.push(`empty ${String(error ?? "")}`));
    await waitUntil(() => callbacks.length === 2, "the empty write's callback");
    assert.deepEqual(callbacks, ["tail ", "empty "]);
    assert.ok(socket.stagingBuffers <= linkIoBuffersMax);
  });

  it("carries frames written as parts (FrameStream's writeParts) byte for byte", async () => {
    const peer = await listen([linkA.secondary]);
    const socket = await connect(linkA.primary, peer.port);
    const remote = await peer.socket(0);
    const received: Message[] = [];
    const closedHere: (Error | null)[] = [];
    const options = { messagesBytesMax: 64 * MiB, nowMs: () => Date.now() };
    const sender = new FrameStream(socket, { message: () => {}, closed: (error) => closedHere.push(error) }, options);
    const receiver = new FrameStream(remote, { message: (message) => void received.push(message), closed: () => {} }, options);
    receiver.expect({ firstLsn: 1n, previousChecksum: 0, logId: 5n });
    // Payloads of odd sizes, up to 64 KiB: a frame's parts cross staging buffers anywhere.
    const shapes = Array.from({ length: 300 }, (_, index) => ({
      fields: { kind: RecordKind.write, flags: 0, volumeId: 1, offset: index * 65_536, length: 0, generation: 1n, timestampMs: 1 },
      payload: randomBytes(1 + Math.floor(Math.random() * 65_536)),
    }));
    const records = chainedRecords(1n, 5n, 0, shapes.map((shape) => ({ ...shape, fields: { ...shape.fields, length: shape.payload.length } })));
    for (let at = 0; at < records.length; at += 30) {
      if (!sender.send({ kind: "records", records: records.slice(at, at + 30), ackNow: false, intervalEnd: false })) await sender.drained();
    }
    await waitUntil(() => received.length === 10, "ten records frames");
    const got = received.flatMap((message) => (message.kind === "records" ? message.records : []));
    assert.equal(got.length, records.length);
    for (const [index, record] of records.entries()) {
      assert.equal(got[index]!.lsn, record.lsn);
      assert.ok(Buffer.from(got[index]!.payload).equals(record.payload), `record ${index}'s payload`);
    }
    assert.deepEqual(closedHere, []);
    sender.close();
  });

  it("returns false when every staging buffer is out, stays within them, and drains once the peer reads", async () => {
    const peer = await listen([linkA.secondary]);
    const socket = await connect(linkA.primary, peer.port);
    const remote = await peer.socket(0);
    remote.pause();
    const chunk = Buffer.alloc(256 * 1024);
    let written = 0;
    let stalled = false;
    let drains = 0;
    socket.on("drain", () => (drains += 1));
    // Writes until a refusal's 'drain' does not come: the kernel's buffers on both ends and the
    // thread's socket take some first. Bounded, so that the test fails if write() never says no.
    while (!stalled && written < 512 * MiB) {
      chunk.writeUInt32LE(written / chunk.length, 0);
      const ok = socket.write(chunk);
      written += chunk.length;
      if (ok) continue;
      assert.ok(socket.writableNeedDrain);
      const drainsBefore = drains;
      await sleep(500);
      stalled = drains === drainsBefore;
    }
    assert.ok(stalled, `write() never stayed refused in ${written} bytes`);
    assert.ok(socket.writableNeedDrain);
    assert.equal(socket.stagingBuffers, linkIoBuffersMax);
    assert.ok(socket.writableLength <= linkIoBuffersMax * linkIoBufferBytes + chunk.length, `${socket.writableLength} bytes held`);
    const received = collect(remote, written);
    remote.resume();
    await eventually(socket, "drain");
    assert.ok(!socket.writableNeedDrain);
    const heldMax = (linkIoBuffersMax - linkIoDrainBuffersMin) * linkIoBufferBytes;
    assert.ok(socket.writableLength <= heldMax, `'drain' with ${socket.writableLength} bytes still out`);
    const bytes = await received;
    assert.equal(bytes.length, written);
    for (let at = 0; at < written; at += chunk.length) assert.equal(bytes.readUInt32LE(at), at / chunk.length, `chunk at ${at}`);
  });

  it("pauses the thread's socket while the consumer reads nothing, and resumes it", async () => {
    const peer = await listen([linkA.secondary]);
    const socket = await connect(linkA.primary, peer.port);
    const remote = await peer.socket(0);
    socket.pause();
    const data = randomBytes(64 * MiB);
    // The peer writes until a write's 'drain' does not come: kernel buffers full on both ends.
    let at = 0;
    let stalled = false;
    while (at < data.length && !stalled) {
      const ok = remote.write(data.subarray(at, at + MiB));
      at += MiB;
      if (!ok) stalled = !(await Promise.race([eventually(remote, "drain").then(() => true), sleep(500).then(() => false)]));
    }
    assert.ok(stalled, `the peer wrote all ${at} bytes: the thread kept reading`);
    // What the thread read before our pause reached it (a message's way there); without the
    // pause it would be everything the peer wrote.
    assert.ok(socket.readableLength < 16 * MiB, `${socket.readableLength} bytes buffered here`);
    const received = collect(socket, data.length);
    socket.resume();
    await writeAll(remote, data.subarray(at), MiB);
    assert.ok((await received).equals(data));
  });

  it("fails as linkConnect does: same code and detail on refused, silent and wrong peers", async () => {
    const peer = await listen([linkA.secondary]);
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, host, resolve));
    const closedPort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const held: net.Socket[] = [];
    const silent = net.createServer((raw) => held.push(raw));
    await new Promise<void>((resolve) => silent.listen(0, host, resolve));
    const silentPort = (silent.address() as net.AddressInfo).port;
    const cases: [string, LinkCredential, number, string, string, { timeoutMs?: number }][] = [
      ["refused", linkA.primary, closedPort, "PEER_UNREACHABLE", "ECONNREFUSED", {}],
      ["silent", linkA.primary, silentPort, "PEER_UNREACHABLE", "timeout", { timeoutMs: 200 }],
      ["another CA", { ...linkA.primary, caCert: linkB.primary.caCert }, peer.port, "LINK_REJECTED", "untrustedServerCert", {}],
      ["another name", { ...linkA.primary, peer: "gamma" }, peer.port, "LINK_REJECTED", "wrongPeerName", {}],
      ["unknown link", linkB.primary, peer.port, "LINK_REJECTED", "tlsError", {}],
    ];
    try {
      for (const [what, credential, port, code, reason, options] of cases) {
        const outcome = (promise: Promise<unknown>) =>
          promise.then(
            () => assert.fail(`${what}: connected`),
            (error: unknown) => {
              assert.ok(error instanceof OperatingError, `${what}: ${String(error)}`);
              return { code: error.code, detail: error.detail, message: error.message };
            },
          );
        const inThread = await outcome(thread.connect(credential, host, port, options));
        const inMain = await outcome(linkConnect(credential, host, port, options));
        assert.equal(inThread.code, code, `${what}: ${inThread.message}`);
        assert.equal((inThread.detail as Record<string, unknown>).reason, reason, `${what}: ${inThread.message}`);
        assert.deepEqual(inThread, inMain, what);
      }
    } finally {
      for (const raw of held) raw.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
    assert.equal(peer.sockets.length, 0);
  });

  it("ends and closes when the peer ends, after what it sent", async () => {
    const peer = await listen([linkA.secondary]);
    const socket = await connect(linkA.primary, peer.port);
    const remote = await peer.socket(0);
    const received = collect(socket, 5);
    const ended = eventually(socket, "end");
    const closed = eventually(socket, "close");
    remote.end("last!");
    assert.equal((await received).toString(), "last!");
    await ended;
    await closed;
    assert.ok(socket.destroyed);
  });

  it("closes the peer's socket when destroyed here, and delivers what came before end()", async () => {
    const peer = await listen([linkA.secondary]);
    const destroyed = await connect(linkA.primary, peer.port);
    const remoteOfDestroyed = await peer.socket(0);
    const peerClosed = eventually(remoteOfDestroyed, "close");
    destroyed.destroy();
    await peerClosed;

    const ending = await connect(linkA.primary, peer.port);
    const remote = await peer.socket(1);
    const data = randomBytes(3 * MiB);
    const received = collect(remote, data.length);
    const remoteEnded = eventually(remote, "end");
    const finished = eventually(ending, "finish");
    ending.write(data);
    ending.end();
    assert.ok((await received).equals(data));
    await remoteEnded;
    await finished;
  });

  it("destroys the socket with the thread socket's errno code when the peer resets it", async () => {
    const peer = await listen([linkA.secondary]);
    const socket = await connect(linkA.primary, peer.port);
    const remote = await peer.socket(0);
    remote.pause();
    const failed = eventually(socket, "error");
    socket.write(Buffer.alloc(4 * MiB));
    await waitUntil(() => socket.writableLength < 4 * MiB, "some bytes sent");
    remote.destroy(); // with unread bytes: the kernel resets the connection
    const error = (await failed) as NodeJS.ErrnoException;
    assert.ok(["ECONNRESET", "EPIPE"].includes(error.code ?? ""), `${error.code}: ${error.message}`);
    await waitUntil(() => socket.destroyed, "destroyed");
  });

  it("serves two connections at once on one thread", async () => {
    const peer = await listen([linkA.secondary, linkB.secondary]);
    const first = await connect(linkA.primary, peer.port);
    const threadId = thread.threadId;
    const second = await connect(linkB.primary, peer.port);
    assert.equal(thread.threadId, threadId);
    assert.equal(thread.connections, 2);
    assert.notEqual(first.id, second.id);
    const remotes = [await peer.socket(0), await peer.socket(1)];
    const data = [randomBytes(4 * MiB), randomBytes(4 * MiB)];
    const received = remotes.map((remote, index) => collect(remote, data[index]!.length));
    const echoed = [first, second].map((socket, index) => collect(socket, data[index]!.length));
    for (const remote of remotes) remote.on("data", (chunk: Buffer) => remote.write(chunk));
    await Promise.all([writeAll(first, data[0]!, 64 * 1024), writeAll(second, data[1]!, 64 * 1024)]);
    for (const index of [0, 1]) {
      assert.ok((await received[index]!).equals(data[index]!), `connection ${index} to its peer`);
      assert.ok((await echoed[index]!).equals(data[index]!), `connection ${index} back`);
    }
  });

  it("fails every connection of a thread that dies with PEER_UNREACHABLE, and starts another", async () => {
    const peer = await listen([linkA.secondary]);
    const sockets = [await connect(linkA.primary, peer.port), await connect(linkA.primary, peer.port)];
    const errors = sockets.map((socket) => eventually(socket, "error"));
    const threadId = thread.threadId;
    // The thread dies as a crash would end it; the test reaches it through the private field.
    await (thread as unknown as { thread: { worker: Worker } }).thread.worker.terminate();
    for (const failed of errors) {
      const error = await failed;
      assert.ok(error instanceof OperatingError && error.code === "PEER_UNREACHABLE", String(error));
    }
    assert.equal(thread.threadId, null);
    assert.equal(thread.connections, 0);
    const again = await connect(linkA.primary, peer.port);
    assert.notEqual(thread.threadId, threadId);
    const remote = await peer.socket(2);
    const received = collect(remote, 4);
    again.write("back");
    assert.equal((await received).toString(), "back");
  });
});
