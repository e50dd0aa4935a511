// The fault proxy against real sockets on 127.0.0.1: bytes pass unchanged both ways, each
// fault does what it says and is undone cleanly, a stalled link with a fast sender stays
// within its memory bound, and a chaos seed replays the same schedule.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { after, afterEach, before, describe, it } from "node:test";
import { Random } from "../../src/sim/random.js";
import { chaosPlan, chaosRun } from "./chaos-schedule.js";
import { FaultProxy } from "./fault-proxy.js";

const settleMs = 200; // long enough that held bytes would have arrived if they were not held

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function listen(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return (server.address() as AddressInfo).port;
}

// A client socket that collects what it receives and how it ended.
class Client {
  readonly socket: Socket;
  received = Buffer.alloc(0);
  errorCode: string | undefined;
  readonly closed: Promise<void>;

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => (this.received = Buffer.concat([this.received, chunk])));
    socket.on("error", (error: NodeJS.ErrnoException) => (this.errorCode = error.code));
    this.closed = new Promise((resolve) => socket.once("close", () => resolve())); // events.once would reject on "error"
  }

  static async open(port: number): Promise<Client> {
    const socket = connect({ port, host: "127.0.0.1" });
    await once(socket, "connect");
    return new Client(socket);
  }

  async receive(bytes: number, timeoutMs = 5_000): Promise<Buffer> {
    const deadline = performance.now() + timeoutMs;
    while (this.received.length < bytes) {
      assert.ok(performance.now() < deadline, `received ${this.received.length} of ${bytes} bytes in time`);
      await sleep(5);
    }
    return this.received;
  }
}

describe("fault proxy", () => {
  let echo: Server;
  let echoPort: number;
  let echoConnections = 0;
  let proxy: FaultProxy;
  let clients: Client[] = [];

  before(async () => {
    echo = createServer((socket) => {
      echoConnections += 1;
      socket.on("error", () => undefined);
      socket.pipe(socket);
    });
    echoPort = await listen(echo);
  });

  after(async () => {
    echo.close();
    await once(echo, "close");
  });

  async function start(seed = 1, bufferBytesMax?: number): Promise<FaultProxy> {
    proxy = await FaultProxy.start({ targetHost: "127.0.0.1", targetPort: echoPort, seed, bufferBytesMax });
    return proxy;
  }

  async function open(): Promise<Client> {
    const client = await Client.open(proxy.port);
    clients.push(client);
    return client;
  }

  afterEach(async () => {
    for (const client of clients) client.socket.destroy();
    clients = [];
    await proxy.close();
  });

  it("forwards bytes both ways unchanged", async () => {
    await start();
    const client = await open();
    const payload = new Random(7).fill(Buffer.alloc(1024 * 1024 + 13));
    client.socket.write(payload);
    const received = await client.receive(payload.length);
    assert.ok(received.equals(payload));
    assert.equal(proxy.stats.bytesToTarget, payload.length);
    assert.equal(proxy.stats.bytesToClient, payload.length);
    assert.equal(proxy.stats.connections, 1);
  });

  it("passes a half-close on after the last byte", async () => {
    await start();
    const client = await open();
    client.socket.end(Buffer.from("last words"));
    await client.closed;
    assert.equal(client.received.toString(), "last words");
    assert.equal(client.errorCode, undefined);
  });

  it("delay adds latency in each direction and keeps order", async () => {
    await start();
    const client = await open();
    const startMs = performance.now();
    client.socket.write("ping");
    await client.receive(4);
    const baselineMs = performance.now() - startMs;
    proxy.delay(100, 120);
    const delayedStartMs = performance.now();
    for (let index = 0; index < 20; index++) client.socket.write(`${String(index).padStart(2, "0")}`);
    const received = await client.receive(4 + 40);
    const delayedMs = performance.now() - delayedStartMs;
    assert.ok(delayedMs >= 195, `two delayed hops take at least 200 ms (took ${delayedMs.toFixed(0)}, baseline ${baselineMs.toFixed(0)})`);
    const expected = Array.from({ length: 20 }, (_, index) => String(index).padStart(2, "0")).join("");
    assert.equal(received.subarray(4).toString(), expected);
  });

  it("stall holds bytes, unstall releases them intact", async () => {
    await start();
    const client = await open();
    proxy.stall();
    const payload = new Random(3).fill(Buffer.alloc(200_000));
    client.socket.write(payload);
    await sleep(settleMs);
    assert.equal(client.received.length, 0, "nothing arrives while stalled");
    assert.equal(proxy.stats.bytesToTarget, 0);
    proxy.unstall();
    assert.ok((await client.receive(payload.length)).equals(payload));
  });

  it("reset kills current connections and new ones work", async () => {
    await start();
    const first = await open();
    const second = await open();
    first.socket.write("a");
    await first.receive(1);
    proxy.reset();
    await Promise.all([first.closed, second.closed]);
    assert.equal(first.errorCode, "ECONNRESET");
    assert.equal(second.errorCode, "ECONNRESET");
    assert.equal(proxy.stats.resets, 2);
    const third = await open();
    third.socket.write("again");
    assert.equal((await third.receive(5)).toString(), "again");
  });

  it("partition holds existing pairs and holds new connections silent until heal", async () => {
    await start();
    const existing = await open();
    existing.socket.write("x");
    await existing.receive(1);
    const echoConnectionsBefore = echoConnections;
    proxy.partition();
    existing.socket.write("held");
    const late = await open(); // the accept still succeeds: silence, not refusal
    late.socket.write("late");
    await sleep(settleMs);
    assert.equal(existing.received.length, 1);
    assert.equal(late.received.length, 0);
    assert.equal(echoConnections, echoConnectionsBefore, "the target never heard of the new connection");
    proxy.heal();
    assert.equal((await existing.receive(5)).toString(), "xheld");
    assert.equal((await late.receive(4)).toString(), "late");
  });

  it("dropProbability 1 resets the pair on its first chunk", async () => {
    await start();
    const client = await open();
    proxy.dropProbability(1);
    client.socket.write("doomed");
    await client.closed;
    assert.equal(client.errorCode, "ECONNRESET");
    assert.equal(proxy.stats.drops, 1);
    proxy.dropProbability(0);
    const next = await open();
    next.socket.write("fine");
    assert.equal((await next.receive(4)).toString(), "fine");
  });

  it("a target that refuses the dial resets the client", async () => {
    const closedServer = createServer();
    const closedPort = await listen(closedServer);
    closedServer.close();
    await once(closedServer, "close");
    proxy = await FaultProxy.start({ targetHost: "127.0.0.1", targetPort: closedPort, seed: 1 });
    const client = await open();
    await client.closed;
    assert.equal(client.errorCode, "ECONNRESET");
    assert.equal(proxy.stats.connectionsOpen, 0);
  });

  it("a stalled link with a fast sender stays within bufferBytesMax, then delivers everything", async () => {
    const bufferBytesMax = 256 * 1024;
    let sunk = 0;
    const hash = createHash("sha256");
    const sink = createServer((socket) => {
      socket.on("data", (chunk: Buffer) => {
        sunk += chunk.length;
        hash.update(chunk);
      });
      socket.on("error", () => undefined);
    });
    const sinkPort = await listen(sink);
    try {
      proxy = await FaultProxy.start({ targetHost: "127.0.0.1", targetPort: sinkPort, seed: 5, bufferBytesMax });
      const client = await open();
      proxy.stall();
      const total = 16 * 1024 * 1024;
      const random = new Random(11);
      const sent = createHash("sha256");
      let written = 0;
      const senderDone = (async () => {
        while (written < total) {
          const chunk = random.fill(Buffer.alloc(64 * 1024));
          sent.update(chunk);
          written += chunk.length;
          if (!client.socket.write(chunk)) await once(client.socket, "drain");
        }
      })();
      await sleep(300);
      assert.ok(written < total, `the sender is held back by backpressure (${written} of ${total} bytes written)`);
      assert.ok(proxy.stats.bufferedBytesPeak <= bufferBytesMax, `peak ${proxy.stats.bufferedBytesPeak} ≤ ${bufferBytesMax}`);
      assert.ok(proxy.stats.bufferedBytesPeak > bufferBytesMax / 2, "the queue did fill");
      assert.equal(sunk, 0);
      proxy.unstall();
      await senderDone;
      const deadline = performance.now() + 10_000;
      while (sunk < total && performance.now() < deadline) await sleep(10);
      assert.equal(sunk, total);
      assert.equal(hash.digest("hex"), sent.digest("hex"));
      assert.ok(proxy.stats.bufferedBytesPeak <= bufferBytesMax);
    } finally {
      sink.close();
      for (const client of clients) client.socket.destroy();
      clients = [];
      await proxy.close();
      await once(sink, "close");
    }
  });

  it("the same chaos seed gives the same fault sequence", async () => {
    await start();
    const options = { seed: 42, durationMs: 60_000, stepsMax: 30 };
    assert.deepEqual(chaosPlan(options), chaosPlan(options));
    assert.notDeepEqual(chaosPlan(options), chaosPlan({ ...options, seed: 43 }));
    for (const action of chaosPlan(options)) assert.ok(action.atMs <= options.durationMs);

    const quick = { seed: 9, durationMs: 400, stepsMax: 6, gapMsMax: 20, faultMsMax: 30, delayMsMax: 10 };
    const client = await open();
    const first = await chaosRun(proxy, quick).done;
    const second = await chaosRun(proxy, quick).done;
    assert.deepEqual(first, second);
    assert.deepEqual(first, chaosPlan(quick));
    assert.ok(first.length >= 6, `at least one action per fault (${first.length})`);
    if (proxy.stats.resets === 0) {
      client.socket.write("still healthy");
      assert.equal((await client.receive(13)).toString(), "still healthy");
    }
  });

  it("stopping a chaos run undoes the fault in force", async () => {
    await start();
    const run = chaosRun(proxy, { seed: 3, durationMs: 10_000, stepsMax: 100, gapMsMax: 0, faultMsMax: 10_000, kinds: ["stall"] });
    await sleep(50);
    assert.deepEqual(run.applied.map((action) => action.action), ["stall"]);
    const applied = await run.stop();
    assert.deepEqual(applied.map((action) => action.action), ["stall", "unstall"]);
    const client = await open();
    client.socket.write("flows");
    assert.equal((await client.receive(5)).toString(), "flows");
  });
});
