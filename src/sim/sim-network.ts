// The simulated network between a primary and its peers: in-memory Duplex pairs in place of
// TLS sockets (the link's framing runs over them unchanged), each byte chunk delivered after a
// latency drawn from the seed, in order within one direction of one connection (as TCP does)
// but freely interleaved across connections (an old connection's late bytes may arrive after
// a new one's). Faults:
//
//   reset        both ends of a connection see ECONNRESET (each after its own delay)
//   partition    a direction (or both) stops delivering; what is sent meanwhile waits and is
//                delivered once the partition heals, unless the connection died; a connect
//                across a partition times out
//   corruption   while on, a delivered chunk has one byte flipped with some probability: the
//                frame checksums must catch it
//   a crash      the dead side's socket hears nothing more; the other side gets a reset (the
//                kernel of a killed process) or silence (a power cut)
//
// Endpoints are named ("primary", "secondary", later "bunker"); a connection joins the
// connecting endpoint's side 0 to the listening endpoint's side 1.

import { Duplex } from "node:stream";
import { OperatingError } from "../errors.js";
import type { Random } from "./random.js";
import type { SimOwner, SimWorld } from "./sim-world.js";

export interface NetworkSettings {
  readonly latencyMsMax: number; // one way
  readonly corruptionProbability: number; // per chunk, while corruption is on
}

type Listener = (socket: Duplex) => void;

interface Held {
  readonly chunk: Buffer | null; // null: the end of the stream
}

class SimSocket extends Duplex {
  quiet = false; // destroyed by the network: tell nobody

  constructor(
    private readonly connection: SimConnection,
    private readonly side: 0 | 1,
  ) {
    super({ allowHalfOpen: false });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.connection.transmit(this.side, Buffer.from(chunk)); // copied, as a send() copies into the kernel: the writer may reuse its buffer
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.connection.transmit(this.side, null);
    callback();
  }

  override _read(): void {}

  override _destroy(error: Error | null, callback: (error: Error | null) => void): void {
    if (!this.quiet) this.connection.closedBy(this.side);
    callback(error);
  }
}

export class SimConnection {
  readonly sockets: [SimSocket, SimSocket];
  private readonly lastDeliveryUs: [number, number] = [0, 0]; // per direction: bytes arrive in order
  private readonly held: [Held[], Held[]] = [[], []];
  private dead = false;

  constructor(
    readonly id: number,
    private readonly network: SimNetwork,
    readonly ends: [string, string],
    readonly owners: [SimOwner, SimOwner],
  ) {
    this.sockets = [new SimSocket(this, 0), new SimSocket(this, 1)];
  }

  get alive(): boolean {
    return !this.dead;
  }

  // Bytes (or the end, null) from side `from`, toward the other side.
  transmit(from: 0 | 1, chunk: Buffer | null): void {
    if (this.dead || !this.owners[from].alive) return;
    if (this.network.blocked(this.ends[from], this.ends[1 - from]!)) this.held[from].push({ chunk });
    else this.send(from, chunk);
  }

  // When bytes sent now by `from` arrive: after a latency, and never before earlier ones.
  private arrivalUs(from: 0 | 1): number {
    const atUs = Math.max(this.network.world.nowMicros + Math.round(this.network.latencyMs() * 1000), this.lastDeliveryUs[from]);
    this.lastDeliveryUs[from] = atUs;
    return atUs;
  }

  private send(from: 0 | 1, chunk: Buffer | null): void {
    const world = this.network.world;
    world.scheduleAt(world.harness, this.arrivalUs(from), () => this.deliver(from, chunk));
  }

  private deliver(from: 0 | 1, chunk: Buffer | null): void {
    const to = (1 - from) as 0 | 1;
    if (this.dead || !this.owners[to].alive) return;
    const socket = this.sockets[to];
    if (socket.destroyed) return;
    socket.push(chunk === null ? null : this.network.maybeCorrupt(chunk));
  }

  // A partition healed: what waited goes out, in order.
  release(): void {
    for (const from of [0, 1] as const) {
      if (this.network.blocked(this.ends[from], this.ends[1 - from]!)) continue;
      for (const { chunk } of this.held[from].splice(0)) this.send(from, chunk);
    }
  }

  // Side `side` closed its socket: the other side learns it after the bytes in flight.
  closedBy(side: 0 | 1): void {
    if (this.dead) return;
    const other = (1 - side) as 0 | 1;
    const world = this.network.world;
    const atUs = this.arrivalUs(side);
    this.dead = true;
    world.scheduleAt(world.harness, atUs, () => this.destroyQuietly(other, null));
    this.network.forget(this);
  }

  // The network breaks the connection: each live side sees a reset, after its own delay.
  reset(reason: string): void {
    if (this.dead) return;
    this.dead = true;
    const world = this.network.world;
    for (const side of [0, 1] as const) {
      const error = new OperatingError("PEER_UNREACHABLE", { what: `simulated connection ${this.id}`, reason });
      Object.assign(error, { code: "ECONNRESET" });
      world.schedule(world.harness, this.network.latencyMs(), () => this.destroyQuietly(side, error));
    }
    this.network.forget(this);
  }

  // One side died: it hears nothing more; the other side gets a reset or silence.
  sideDied(resetPeer: boolean): void {
    if (this.dead) return;
    if (resetPeer) {
      this.reset("peer process died");
      return;
    }
    this.dead = true; // silence: the survivor finds out from its silence limit
    this.network.forget(this);
  }

  private destroyQuietly(side: 0 | 1, error: Error | null): void {
    const socket = this.sockets[side];
    if (socket.destroyed || !this.owners[side].alive) return;
    socket.quiet = true;
    socket.destroy(error ?? undefined);
  }
}

export class SimNetwork {
  private readonly listeners = new Map<string, { owner: SimOwner; accept: Listener }>();
  private readonly connections = new Set<SimConnection>();
  private readonly blockedPairs = new Set<string>(); // "from>to"
  private nextId = 1;
  corrupting = false;
  readonly stats = { connects: 0, refused: 0, resets: 0, corruptedChunks: 0, chunks: 0 };

  constructor(
    readonly world: SimWorld,
    private readonly random: Random,
    private readonly settings: NetworkSettings,
    private readonly trace: (event: string) => void,
  ) {}

  latencyMs(): number {
    return this.random.below(Math.max(1, Math.round(this.settings.latencyMsMax * 1000))) / 1000;
  }

  blocked(from: string, to: string): boolean {
    return this.blockedPairs.has(`${from}>${to}`);
  }

  maybeCorrupt(chunk: Buffer): Buffer {
    this.stats.chunks += 1;
    if (!this.corrupting || chunk.length === 0 || !this.random.chance(this.settings.corruptionProbability)) return chunk;
    const copy = Buffer.from(chunk);
    const at = this.random.below(copy.length);
    copy[at] = copy[at]! ^ (1 + this.random.below(255));
    this.stats.corruptedChunks += 1;
    this.trace(`net corrupt byte ${at} of ${copy.length}`);
    return copy;
  }

  listen(endpoint: string, owner: SimOwner, accept: Listener): void {
    this.listeners.set(endpoint, { owner, accept });
  }

  // Dials `to` from `from`: the client's socket once the handshake's round trip is done.
  async connect(from: string, owner: SimOwner, to: string): Promise<Duplex> {
    const world = this.world;
    if (this.blocked(from, to) || this.blocked(to, from)) {
      await world.delay(owner, 1_000 + this.random.below(2_000)); // SYNs unanswered
      this.stats.refused += 1;
      throw new OperatingError("PEER_UNREACHABLE", { what: `${from} → ${to}`, reason: "timeout" });
    }
    await world.delay(owner, this.latencyMs());
    const listener = this.listeners.get(to);
    if (listener === undefined || !listener.owner.alive) {
      await world.delay(owner, this.latencyMs());
      this.stats.refused += 1;
      throw new OperatingError("PEER_UNREACHABLE", { what: `${from} → ${to}`, reason: "ECONNREFUSED" });
    }
    const connection = new SimConnection(this.nextId++, this, [from, to], [owner, listener.owner]);
    this.connections.add(connection);
    this.stats.connects += 1;
    this.trace(`net connect ${connection.id} ${from}>${to}`);
    // As io/link-tls.ts: the listener keeps an error listener on what it accepts; the dialer
    // has one until the connection is handed over.
    connection.sockets[1].on("error", () => {});
    const client = connection.sockets[0];
    let failure: Error | null = null;
    const onError = (error: Error) => (failure = error);
    client.on("error", onError);
    listener.accept(connection.sockets[1]);
    await world.delay(owner, this.latencyMs());
    client.off("error", onError);
    if (failure !== null || client.destroyed) throw new OperatingError("PEER_UNREACHABLE", { what: `${from} → ${to}`, reason: "reset while connecting" });
    return client;
  }

  forget(connection: SimConnection): void {
    this.connections.delete(connection);
  }

  // ---- Faults ----

  resetAll(reason: string): number {
    const live = [...this.connections];
    for (const connection of live) connection.reset(reason);
    this.stats.resets += live.length;
    if (live.length > 0) this.trace(`net reset ${live.map((connection) => connection.id).join(",")} (${reason})`);
    return live.length;
  }

  partition(from: string, to: string): void {
    this.blockedPairs.add(`${from}>${to}`);
    this.trace(`net partition ${from}>${to}`);
  }

  heal(): void {
    if (this.blockedPairs.size === 0) return;
    this.blockedPairs.clear();
    this.trace("net heal");
    for (const connection of [...this.connections]) connection.release();
  }

  get partitioned(): boolean {
    return this.blockedPairs.size > 0;
  }

  // An endpoint's process died: its connections go (the peer gets a reset or silence).
  died(endpoint: string, resetPeers: boolean): void {
    const listener = this.listeners.get(endpoint);
    if (listener !== undefined && !listener.owner.alive) this.listeners.delete(endpoint);
    for (const connection of [...this.connections]) {
      if (connection.ends.includes(endpoint)) connection.sideDied(resetPeers);
    }
  }
}
