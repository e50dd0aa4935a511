// A seeded, bounded userspace TCP fault proxy for tests: it sits between two nodes (the
// replication link is TLS over TCP, and the proxy forwards its bytes blindly) and injects the
// network's faults on demand, so a test can say "stall the link now" instead of hoping.
//
//   client ──► [accepted socket]──upstream queue──►[target socket] ──► target
//          ◄──                  ◄─downstream queue─                ◄──
//
// Each connection pair has two directions; each direction is a FIFO queue of chunks with a
// release time. The faults only decide when the head of a queue may leave:
//
// - delay(msMin, msMax): each arriving chunk waits a seeded random time in the range. A chunk
//   never leaves before the one ahead of it, so the byte order of each direction is kept.
// - stall() / unstall(): nothing leaves in either direction until unstall.
// - partition() / heal(): existing pairs stall, and new connections are accepted then held
//   silent: the proxy does not dial the target until heal, and their bytes wait in the queue.
//   (Accept-and-hold rather than refuse: a partition drops packets, which a peer sees as
//   silence until its own timeout, while a refusal would be an RST, i.e. "node down".)
//   heal() ends the partition; it does not end a stall() that is in force.
// - reset(): every current pair is torn down abruptly, with an RST where the kernel allows.
// - dropProbability(p): TCP cannot lose bytes silently without corrupting the stream, so a
//   "drop" is what a lossy network does to a connection in the end: with probability p per
//   arriving chunk, the whole pair is reset.
//
// Memory is bounded: a direction's queue never holds more than bufferBytesMax. A chunk that
// would pass it is split, the rest is put back into the source socket and the source is
// paused, so the kernel's buffers and then TCP flow control push back on the sender (resumed
// below half of the bound). The destination socket is written only while it is not signalling
// backpressure, so its own buffer stays near its high-water mark.
//
// Randomness comes from src/sim/random.ts, one stream per purpose, so a seed replays the
// same delays and drops for the same sequence of arriving chunks (how the kernel splits a
// stream into chunks is timing, not seed). chaosPlan() below is a pure function of its seed.

import { once } from "node:events";
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { assert } from "../../src/assert.js";
import { Random } from "../../src/sim/random.js";

export const faultDelayMsMax = 60_000; // one chunk's delay
export const bufferBytesMaxDefault = 1024 * 1024; // one direction's queue
export const bufferBytesMaxLimit = 64 * 1024 * 1024;
export const connectionsOpenMax = 256; // pairs beyond this are reset on accept

export interface FaultProxyOptions {
  listenHost?: string; // 127.0.0.1
  listenPort?: number; // 0: any free port
  targetHost: string;
  targetPort: number;
  seed: number;
  bufferBytesMax?: number; // bufferBytesMaxDefault
}

export interface FaultProxyStats {
  connections: number; // accepted, ever
  connectionsOpen: number;
  bytesForwarded: number; // both directions, written to a destination socket
  bytesToTarget: number;
  bytesToClient: number;
  resets: number; // pairs torn down by the proxy: reset(), drops, too many connections
  drops: number; // of those, by dropProbability
  bufferedBytes: number; // queued now, all directions
  bufferedBytesPeak: number; // the most one direction's queue ever held
}

interface QueuedChunk {
  readonly chunk: Buffer;
  readonly releaseAtMs: number;
}

// One way through a pair: the source socket's bytes queue here until the faults let them go.
class Direction {
  private readonly queue: QueuedChunk[] = [];
  private queuedBytes = 0;
  private releaseAtMsLast = 0;
  private timer: NodeJS.Timeout | null = null;
  private waitingForDrain = false;
  private sourcePaused = false;
  private sourceEnded = false;
  private endSent = false;
  destination: Socket | null = null; // null until the target is dialled (upstream only)

  constructor(
    private readonly proxy: FaultProxy,
    private readonly pair: ConnectionPair,
    private readonly source: Socket,
    private readonly toTarget: boolean,
  ) {
    source.on("data", (chunk: Buffer) => this.arrived(chunk));
    source.on("end", () => {
      this.sourceEnded = true;
      this.pump();
    });
  }

  attach(destination: Socket): void {
    assert(this.destination === null, "a direction is attached once");
    this.destination = destination;
    destination.on("drain", () => {
      this.waitingForDrain = false;
      this.pump();
    });
  }

  private arrived(chunk: Buffer): void {
    if (this.pair.closed) return;
    if (this.proxy.shouldDrop()) {
      this.proxy.countDrop();
      this.pair.reset();
      return;
    }
    const room = this.proxy.bufferBytesMax - this.queuedBytes;
    let accepted = chunk;
    if (chunk.length > room) {
      // Take what fits, give the rest back to the socket and stop reading: backpressure.
      accepted = chunk.subarray(0, room);
      this.source.pause();
      this.sourcePaused = true;
      this.source.unshift(chunk.subarray(room));
    }
    if (accepted.length === 0) return;
    const releaseAtMs = Math.max(performance.now() + this.proxy.nextDelayMs(), this.releaseAtMsLast);
    this.releaseAtMsLast = releaseAtMs;
    this.queue.push({ chunk: accepted, releaseAtMs });
    this.queuedBytes += accepted.length;
    assert(this.queuedBytes <= this.proxy.bufferBytesMax, "a direction's queue stays within its bound");
    this.proxy.noteQueued(accepted.length, this.queuedBytes);
    this.pump();
  }

  // Sends what the faults allow, in order; reschedules itself for a delayed head.
  pump(): void {
    if (this.pair.closed || this.timer !== null) return;
    const destination = this.destination;
    if (destination === null || destination.connecting || this.proxy.holding) return;
    while (this.queue.length > 0 && !this.waitingForDrain) {
      const head = this.queue[0]!;
      const waitMs = head.releaseAtMs - performance.now();
      if (waitMs > 0) {
        this.timer = setTimeout(() => {
          this.timer = null;
          this.pump();
        }, Math.ceil(waitMs));
        return;
      }
      this.queue.shift();
      this.queuedBytes -= head.chunk.length;
      this.proxy.noteForwarded(head.chunk.length, this.toTarget);
      this.waitingForDrain = !destination.write(head.chunk);
    }
    if (this.sourcePaused && this.queuedBytes <= this.proxy.bufferBytesMax / 2) {
      this.sourcePaused = false;
      this.source.resume();
    }
    if (this.queue.length === 0 && this.sourceEnded && !this.endSent) {
      this.endSent = true; // the FIN travels in order, after the last byte
      destination.end();
    }
  }

  clear(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.proxy.noteQueued(-this.queuedBytes, 0);
    this.queue.length = 0;
    this.queuedBytes = 0;
  }
}

function resetSocket(socket: Socket | null): void {
  if (socket === null || socket.destroyed) return;
  try {
    socket.resetAndDestroy(); // RST, so the peer sees ECONNRESET rather than a clean FIN
  } catch {
    socket.destroy();
  }
}

// An accepted client socket and its socket to the target, with one Direction each way.
class ConnectionPair {
  closed = false;
  target: Socket | null = null;
  readonly upstream: Direction;
  private downstream: Direction | null = null; // exists once the target is dialled

  constructor(
    private readonly proxy: FaultProxy,
    readonly client: Socket,
  ) {
    this.upstream = new Direction(proxy, this, client, true);
    client.on("error", () => this.close(true));
    client.on("close", () => this.closedSide());
  }

  // held → dialling: called at accept, or at heal for pairs accepted during a partition.
  dial(host: string, port: number): void {
    assert(this.target === null, "a pair dials once");
    if (this.closed) return;
    const target = connect({ host, port, allowHalfOpen: true });
    this.target = target;
    this.downstream = new Direction(this.proxy, this, target, false);
    this.downstream.attach(this.client);
    this.upstream.attach(target);
    target.on("connect", () => this.pump());
    target.on("error", () => this.close(true)); // a refused dial resets the client too
    target.on("close", () => this.closedSide());
  }

  pump(): void {
    this.upstream.pump();
    this.downstream?.pump();
  }

  // Any state → closed, abruptly, by the proxy's choice (counted as a reset in the stats).
  reset(): void {
    if (this.closed) return;
    this.proxy.countReset();
    this.close(true);
  }

  // Any state → closed. Abrupt: with an RST to both sides, also used to pass a peer's
  // reset on; otherwise a plain close (the proxy shutting down).
  close(abrupt: boolean): void {
    if (this.closed) return;
    this.closed = true;
    this.upstream.clear();
    this.downstream?.clear();
    if (abrupt) {
      resetSocket(this.client);
      resetSocket(this.target);
    } else {
      this.client.destroy();
      this.target?.destroy();
    }
    this.proxy.forget(this);
  }

  // A socket closed: both gone → closed; one gone without its FIN → pass the abruptness on.
  private closedSide(): void {
    if (this.closed) return;
    if (this.client.destroyed && (this.target === null || this.target.destroyed)) {
      this.close(false);
    } else if (this.client.destroyed && (this.client.errored || !this.client.readableEnded)) {
      this.close(true);
    } else if (this.target?.destroyed && (this.target.errored || !this.target.readableEnded)) {
      this.close(true);
    }
  }
}

export class FaultProxy {
  readonly port: number;
  readonly bufferBytesMax: number;
  private readonly pairs = new Set<ConnectionPair>();
  private readonly delayRandom: Random;
  private readonly dropRandom: Random;
  private delayMsMin = 0;
  private delayMsMax = 0;
  private drop = 0;
  private stalled = false;
  private partitioned = false;
  private closing = false;
  private readonly counters = { connections: 0, bytesToTarget: 0, bytesToClient: 0, resets: 0, drops: 0, bufferedBytes: 0, bufferedBytesPeak: 0 };

  private constructor(
    private readonly server: Server,
    private readonly options: FaultProxyOptions,
  ) {
    this.port = (server.address() as AddressInfo).port;
    this.bufferBytesMax = options.bufferBytesMax ?? bufferBytesMaxDefault;
    this.delayRandom = new Random(options.seed);
    this.dropRandom = new Random(options.seed ^ 0x5bd1e995);
    server.on("connection", (client) => this.accepted(client));
  }

  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    assert(Number.isInteger(options.seed), "seed is an integer");
    const bufferBytesMax = options.bufferBytesMax ?? bufferBytesMaxDefault;
    assert(Number.isInteger(bufferBytesMax) && bufferBytesMax > 0 && bufferBytesMax <= bufferBytesMaxLimit, "bufferBytesMax is within bufferBytesMaxLimit");
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: false });
    server.listen(options.listenPort ?? 0, options.listenHost ?? "127.0.0.1");
    await once(server, "listening");
    return new FaultProxy(server, options);
  }

  get holding(): boolean {
    return this.stalled || this.partitioned;
  }

  get stats(): FaultProxyStats {
    const counters = this.counters;
    return {
      connections: counters.connections,
      connectionsOpen: this.pairs.size,
      bytesForwarded: counters.bytesToTarget + counters.bytesToClient,
      bytesToTarget: counters.bytesToTarget,
      bytesToClient: counters.bytesToClient,
      resets: counters.resets,
      drops: counters.drops,
      bufferedBytes: counters.bufferedBytes,
      bufferedBytesPeak: counters.bufferedBytesPeak,
    };
  }

  delay(msMin: number, msMax: number): void {
    assert(Number.isInteger(msMin) && Number.isInteger(msMax) && 0 <= msMin && msMin <= msMax && msMax <= faultDelayMsMax, "0 ≤ msMin ≤ msMax ≤ faultDelayMsMax");
    this.delayMsMin = msMin;
    this.delayMsMax = msMax;
  }

  stall(): void {
    this.stalled = true;
  }

  unstall(): void {
    this.stalled = false;
    this.pumpAll();
  }

  reset(): void {
    for (const pair of [...this.pairs]) pair.reset();
  }

  partition(): void {
    this.partitioned = true;
  }

  // partitioned → healed: held pairs dial the target now; queued bytes flow unless stalled.
  heal(): void {
    this.partitioned = false;
    for (const pair of this.pairs) if (pair.target === null) pair.dial(this.options.targetHost, this.options.targetPort);
    this.pumpAll();
  }

  dropProbability(probability: number): void {
    assert(probability >= 0 && probability <= 1, "a probability is in [0, 1]");
    this.drop = probability;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const pair of [...this.pairs]) pair.close(false);
    await closed;
  }

  // For Direction and ConnectionPair.

  nextDelayMs(): number {
    if (this.delayMsMax === 0) return 0;
    return this.delayMsMin + this.delayRandom.below(this.delayMsMax - this.delayMsMin + 1);
  }

  shouldDrop(): boolean {
    return this.drop > 0 && this.dropRandom.chance(this.drop); // p = 0 draws nothing
  }

  countDrop(): void {
    this.counters.drops += 1;
  }

  countReset(): void {
    this.counters.resets += 1;
  }

  noteQueued(bytesChange: number, directionBytes: number): void {
    this.counters.bufferedBytes += bytesChange;
    assert(this.counters.bufferedBytes >= 0, "queued bytes never go negative");
    this.counters.bufferedBytesPeak = Math.max(this.counters.bufferedBytesPeak, directionBytes);
  }

  noteForwarded(bytes: number, toTarget: boolean): void {
    this.counters.bufferedBytes -= bytes;
    if (toTarget) this.counters.bytesToTarget += bytes;
    else this.counters.bytesToClient += bytes;
  }

  forget(pair: ConnectionPair): void {
    this.pairs.delete(pair);
  }

  private accepted(client: Socket): void {
    this.counters.connections += 1;
    if (this.closing || this.pairs.size >= connectionsOpenMax) {
      this.counters.resets += 1;
      resetSocket(client);
      return;
    }
    const pair = new ConnectionPair(this, client);
    this.pairs.add(pair);
    if (!this.partitioned) pair.dial(this.options.targetHost, this.options.targetPort);
  }

  private pumpAll(): void {
    for (const pair of this.pairs) pair.pump();
  }
}
