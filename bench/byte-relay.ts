// A TCP relay that counts the bytes crossing it: the "bytes on the wire" of the operations
// row (operations-in-band.ts), measured the same way for Lockstep's link and for the
// baseline's copy.
//
//   client ──TCP──► relay (127.0.0.1:port, in the bench) ──TCP or unix──► target
//          ◄──────                                       ◄──────────────
//
// What it counts is what the client's side sent and received on its TCP connections: every
// byte of TLS (the link) or of NBD (the baseline), headers, handshakes, heartbeats and
// acknowledgements included; not the TCP/IP headers. Bytes are forwarded as they come, with
// node's stream backpressure (pipe) and no faults (test/tools/fault-proxy.ts is the relay
// that injects them). Counts only grow; a measurement takes counts() before and after and
// subtracts (countsSince).

import { once } from "node:events";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";

const connectionsOpenMax = 64; // beyond this an accepted connection is closed at once
const closedPollMs = 5;

export type RelayTarget = { readonly host: string; readonly port: number } | { readonly path: string };

export interface RelayCounts {
  readonly connections: number; // accepted
  readonly bytesToTarget: number; // client → target
  readonly bytesFromTarget: number; // target → client
}

export function countsSince(before: RelayCounts, after: RelayCounts): RelayCounts & { readonly bytes: number } {
  const bytesToTarget = after.bytesToTarget - before.bytesToTarget;
  const bytesFromTarget = after.bytesFromTarget - before.bytesFromTarget;
  return { connections: after.connections - before.connections, bytesToTarget, bytesFromTarget, bytes: bytesToTarget + bytesFromTarget };
}

/** "HOST:PORT" as `link add` and the secondary's status write it. */
export function relayTargetParse(address: string): RelayTarget {
  const split = address.lastIndexOf(":");
  const port = Number(address.slice(split + 1));
  if (split <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`not a HOST:PORT address: ${address}`);
  return { host: address.slice(0, split).replace(/^\[|\]$/g, ""), port };
}

export class ByteRelay {
  private connections = 0;
  private bytesToTarget = 0;
  private bytesFromTarget = 0;
  private readonly open = new Set<Socket>();

  private constructor(private readonly server: Server, private readonly target: RelayTarget) {
    server.on("connection", (client) => this.accept(client));
  }

  /** Listens on 127.0.0.1, on a port of the kernel's choosing. */
  static async start(target: RelayTarget): Promise<ByteRelay> {
    const server = createServer({ noDelay: true });
    const relay = new ByteRelay(server, target);
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return relay;
  }

  get address(): string {
    return `127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  counts(): RelayCounts {
    return { connections: this.connections, bytesToTarget: this.bytesToTarget, bytesFromTarget: this.bytesFromTarget };
  }

  private accept(client: Socket): void {
    if (this.open.size >= connectionsOpenMax * 2) { // two sockets a connection
      client.destroy();
      return;
    }
    this.connections += 1;
    const upstream = "path" in this.target ? connect({ path: this.target.path }) : connect({ host: this.target.host, port: this.target.port, noDelay: true });
    for (const socket of [client, upstream]) {
      this.open.add(socket);
      socket.on("error", () => undefined); // the close that follows ends the pair
      socket.once("close", () => {
        this.open.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.on("data", (chunk: Buffer) => { this.bytesToTarget += chunk.length; });
    upstream.on("data", (chunk: Buffer) => { this.bytesFromTarget += chunk.length; });
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Resolves once no connection is open through the relay (their last bytes counted), or after timeoutMs. */
  async closedWait(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (this.open.size > 0 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, closedPollMs));
  }

  /** Stops listening and ends every connection through it. */
  async close(): Promise<void> {
    for (const socket of this.open) socket.destroy();
    this.server.close();
    await once(this.server, "close").catch(() => undefined);
  }
}
