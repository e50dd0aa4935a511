// The NBD server: listens on TCP and unix sockets, and gives each accepted socket its own
// NbdConnection. It enforces nbdConnectionsMax (an extra socket is closed at once), keeps one
// connection's failure away from the others, and shuts down in a bounded time: stop
// accepting, let in-flight requests finish for up to nbdCloseMsMax, then destroy what is left.

import { unlink } from "node:fs/promises";
import * as net from "node:net";
import { nbdConnectionsMax, nbdHandshakeMsMax } from "../constants.js";
import type { Logger } from "../logger.js";
import { NbdConnection } from "./connection.js";
import { PollWindow } from "./poll-window.js";
import type { NbdExportRegistry, NbdObserver } from "./export.js";
import { nbdCloseMsMax } from "../constants.js";

// Overrides for tests; production uses the limits as they are.
export interface NbdServerOptions {
  readonly handshakeMsMax?: number;
  readonly closeMsMax?: number;
  readonly pollMicros?: number; // PollWindow: 0 (the default here) never polls after a reply
}

export class NbdServer {
  private readonly listeners: net.Server[] = [];
  private readonly connections = new Set<NbdConnection>();
  private readonly logger: Logger;
  private closing = false;
  readonly pollWindow: PollWindow;

  constructor(
    private readonly registry: NbdExportRegistry,
    private readonly observer: NbdObserver,
    logger: Logger,
    private readonly options: NbdServerOptions = {},
  ) {
    this.logger = logger.child({ subsystem: "nbd" });
    this.pollWindow = new PollWindow(options.pollMicros ?? 0);
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  async listenTcp(host: string, port: number): Promise<{ host: string; port: number }> {
    const listener = await this.listen({ host, port });
    const address = listener.address() as net.AddressInfo;
    this.logger.info({ host: address.address, port: address.port }, "NBD listening on TCP");
    return { host: address.address, port: address.port };
  }

  // A stale socket file left by a process that died is replaced; a live one is an error.
  async listenUnix(path: string): Promise<void> {
    try {
      await this.listen({ path });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EADDRINUSE" || (await unixSocketAlive(path))) throw error;
      await unlink(path);
      await this.listen({ path });
    }
    this.logger.info({ path }, "NBD listening on a unix socket");
  }

  async close(): Promise<void> {
    this.closing = true;
    this.pollWindow.stop();
    const listenersClosed = Promise.all(
      this.listeners.splice(0).map((listener) => new Promise<void>((resolve) => listener.close(() => resolve()))),
    );
    const connections = [...this.connections];
    for (const connection of connections) connection.shutdown();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.options.closeMsMax ?? nbdCloseMsMax);
      timer.unref();
    });
    await Promise.race([Promise.all(connections.map((connection) => connection.closed)), deadline]);
    clearTimeout(timer);
    for (const connection of this.connections) {
      this.logger.warn({ remote: connection.remote }, "NBD connection did not finish in time: destroying it");
      connection.destroy();
    }
    await Promise.all(connections.map((connection) => connection.closed));
    await listenersClosed;
  }

  private listen(options: net.ListenOptions): Promise<net.Server> {
    if (this.closing) return Promise.reject(new Error("the NBD server is closed"));
    const listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    return new Promise((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(options, () => {
        listener.off("error", reject);
        listener.on("error", (error) => this.logger.error({ err: error }, "NBD listener error"));
        this.listeners.push(listener);
        resolve(listener);
      });
    });
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.connections.size >= nbdConnectionsMax) {
      const remote = socket.remoteAddress ?? "unix";
      this.logger.warn({ remote, connectionsMax: nbdConnectionsMax }, "NBD connection refused: too many connections");
      this.observer.protocolError(remote, "OVERLOADED", `more than ${nbdConnectionsMax} connections`);
      socket.on("error", () => {});
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    const connection = new NbdConnection(
      socket,
      this.registry,
      this.observer,
      this.logger,
      (closed) => this.connections.delete(closed),
      this.options.handshakeMsMax ?? nbdHandshakeMsMax,
      this.pollWindow,
    );
    this.connections.add(connection);
  }
}

function unixSocketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ path });
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}
