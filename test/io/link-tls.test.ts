// Replication links over real TLS on 127.0.0.1: a generated pair connects and carries bytes
// both ways; every kind of wrong peer is refused (by the primary with LINK_REJECTED, by the
// listener with a counted, logged reason) while the listener keeps serving good links; the
// listener bounds handshakes in time and number; network failures are PEER_UNREACHABLE.

import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import * as net from "node:net";
import { after, before, describe, it } from "node:test";
import * as tls from "node:tls";
import { pino } from "pino";
import { linkCertificateValidityDays } from "../../src/constants.js";
import { OperatingError } from "../../src/errors.js";
import { LinkListener, type LinkListenerOptions, linkConnect, linkCredentialsGenerate } from "../../src/io/link-tls.js";
import type { LinkCredential } from "../../src/replication/link-credential.js";

type Pair = { primary: LinkCredential; secondary: LinkCredential };
type LogLine = { level: number; reason?: string; msg: string };

const host = "127.0.0.1";
const waitMsMax = 5_000;

// A listener whose handler answers "pong:<what it got>" on each link, with its log captured.
class ListenerUnderTest {
  readonly lines: LogLine[] = [];
  readonly links: LinkCredential[] = [];
  readonly listener: LinkListener;
  port = 0;

  constructor(options: LinkListenerOptions = {}) {
    const logger = pino({ level: "debug" }, { write: (line: string) => this.lines.push(JSON.parse(line) as LogLine) });
    this.listener = new LinkListener(logger, options);
    this.listener.onLink((socket, credential) => {
      this.links.push(credential);
      socket.on("error", () => {});
      socket.on("data", (data) => socket.write(Buffer.concat([Buffer.from("pong:"), data])));
    });
  }

  async start(credentials: readonly LinkCredential[]): Promise<this> {
    this.listener.setCredentials(credentials);
    this.port = (await this.listener.listen(host, 0)).port;
    return this;
  }

  reasons(): string[] {
    return this.lines.filter((line) => line.level === 40).map((line) => line.reason ?? "?");
  }

  // Waits until `count` connections were refused, and returns the logged reasons.
  async refusals(count: number): Promise<string[]> {
    await waitUntil(() => this.listener.rejected >= count, `${count} refusals (have ${this.listener.rejected})`);
    assert.equal(this.listener.rejected, count);
    return this.reasons();
  }
}

async function waitUntil(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + waitMsMax;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// Resolves when the socket has closed; fails the test if it stays open.
function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve();
    const timer = setTimeout(() => reject(new Error("the socket is still open")), waitMsMax);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function readOnce(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    socket.once("data", (data) => resolve(data.toString()));
    socket.once("error", reject);
  });
}

// A round trip on a good link: what the client sent comes back prefixed by the listener.
async function exchange(credential: LinkCredential, port: number, text: string): Promise<string> {
  const socket = await linkConnect(credential, host, port);
  try {
    socket.write(text);
    return await readOnce(socket);
  } finally {
    socket.destroy();
  }
}

async function expectRejected(promise: Promise<unknown>, code: string, reason: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof OperatingError, String(error));
    assert.equal(error.code, code, error.message);
    assert.equal((error.detail as Record<string, unknown>).reason, reason, error.message);
    return true;
  });
}

// A connection attempt that the listener refuses after the TLS 1.3 handshake (the client's
// side of it is already done): whatever the client saw, the socket must end.
async function refusedAfterHandshake(connecting: Promise<net.Socket>): Promise<void> {
  const outcome = await connecting.then(
    (socket) => socket,
    (error: unknown) => error,
  );
  if (outcome instanceof net.Socket) {
    outcome.on("error", () => {});
    await closed(outcome);
  }
}

function rawTlsConnect(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, minVersion: "TLSv1.3", checkServerIdentity: () => undefined, ...options });
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
  });
}

describe("link TLS", () => {
  let linkA: Pair;
  let linkB: Pair; // another link between the same two nodes
  let listeners: ListenerUnderTest[] = [];
  const listen = async (credentials: readonly LinkCredential[], options?: LinkListenerOptions) => {
    const under = new ListenerUnderTest(options);
    listeners.push(under);
    return under.start(credentials);
  };

  before(async () => {
    linkA = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
    linkB = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
  });
  after(async () => {
    await Promise.all(listeners.map((under) => under.listener.close()));
    listeners = [];
  });

  it("generates a pair for one link: shared CA, the right names, ten years", () => {
    assert.equal(linkA.primary.linkId, linkA.secondary.linkId);
    assert.notEqual(linkA.primary.linkId, linkB.primary.linkId);
    assert.equal(linkA.primary.caCert, linkA.secondary.caCert);
    assert.deepEqual([linkA.primary.self, linkA.primary.peer, linkA.secondary.self, linkA.secondary.peer], ["alpha", "beta", "beta", "alpha"]);
    const validToMs = Date.parse(new X509Certificate(linkA.secondary.cert).validTo);
    const expectedMs = Date.now() + linkCertificateValidityDays * 24 * 60 * 60 * 1000;
    assert.ok(Math.abs(validToMs - expectedMs) < 60 * 60 * 1000, new X509Certificate(linkA.secondary.cert).validTo);
  });

  it("refuses to generate for bad or equal names", async () => {
    const requestInvalid = (message: RegExp) => (error: unknown) =>
      error instanceof OperatingError && error.code === "REQUEST_INVALID" && message.test(error.message);
    await assert.rejects(linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "alpha" }), requestInvalid(/must be different/));
    await assert.rejects(linkCredentialsGenerate({ group: "bad name", primary: "alpha", secondary: "beta" }), requestInvalid(/group: "bad name"/));
  });

  it("connects a generated pair and carries bytes both ways", async () => {
    const under = await listen([linkA.secondary]);
    const socket = await linkConnect(linkA.primary, host, under.port);
    socket.on("error", () => {});
    assert.equal(socket.getProtocol(), "TLSv1.3");
    assert.equal(socket.getPeerCertificate().subject?.CN, "beta", "the client sees the secondary's name");
    socket.write("ping");
    assert.equal(await readOnce(socket), "pong:ping");
    assert.deepEqual(under.links.map((credential) => credential.linkId), [linkA.secondary.linkId]);
    assert.equal(under.listener.rejected, 0);
    await under.listener.close();
    await closed(socket); // close() ends authenticated links too
  });

  it("fails with LINK_REJECTED when the server does not chain to the client's link CA", async () => {
    const under = await listen([linkA.secondary]);
    const wrongAuthority = { ...linkA.primary, caCert: linkB.primary.caCert };
    await expectRejected(linkConnect(wrongAuthority, host, under.port), "LINK_REJECTED", "untrustedServerCert");
    assert.equal(under.links.length, 0);
  });

  it("fails with LINK_REJECTED when the server names another node", async () => {
    const under = await listen([linkA.secondary]);
    await expectRejected(linkConnect({ ...linkA.primary, peer: "gamma" }, host, under.port), "LINK_REJECTED", "wrongPeerName");
  });

  it("refuses another link's valid client certificate, then serves a good client", async () => {
    const under = await listen([linkA.secondary, linkB.secondary]);
    const crossed = { ...linkA.primary, cert: linkB.primary.cert, key: linkB.primary.key };
    await refusedAfterHandshake(linkConnect(crossed, host, under.port));
    assert.deepEqual(await under.refusals(1), ["untrustedClientCert"]);
    assert.equal(under.links.length, 0);
    assert.equal(await exchange(linkA.primary, under.port, "a"), "pong:a");
    assert.equal(await exchange(linkB.primary, under.port, "b"), "pong:b");
    assert.deepEqual(under.links.map((credential) => credential.linkId), [linkA.primary.linkId, linkB.primary.linkId]);
    assert.equal(under.listener.rejected, 1);
  });

  it("refuses a client certificate that does not name the link's primary", async () => {
    const under = await listen([{ ...linkA.secondary, peer: "gamma" }]);
    await refusedAfterHandshake(linkConnect(linkA.primary, host, under.port));
    assert.deepEqual(await under.refusals(1), ["wrongPeerName"]);
    assert.equal(under.links.length, 0);
  });

  it("refuses a client without a certificate", async () => {
    const under = await listen([linkA.secondary]);
    const { linkId, caCert } = linkA.primary;
    await refusedAfterHandshake(rawTlsConnect({ port: under.port, servername: linkId, ca: [caCert] }));
    assert.deepEqual(await under.refusals(1), ["noClientCert"]);
  });

  it("refuses an unknown or missing servername, and a link removed by setCredentials", async () => {
    const under = await listen([linkA.secondary]);
    const { cert, key, caCert } = linkA.primary;
    await assert.rejects(rawTlsConnect({ port: under.port, servername: "0123456789abcdef", ca: [caCert], cert, key }));
    await assert.rejects(rawTlsConnect({ port: under.port, ca: [caCert], cert, key }), "an IP address sends no servername");
    await expectRejected(linkConnect(linkB.primary, host, under.port), "LINK_REJECTED", "tlsError");
    assert.deepEqual(await under.refusals(3), ["unknownLink", "unknownLink", "unknownLink"]);
    under.listener.setCredentials([]);
    await expectRejected(linkConnect(linkA.primary, host, under.port), "LINK_REJECTED", "tlsError");
    assert.deepEqual(await under.refusals(4), ["unknownLink", "unknownLink", "unknownLink", "unknownLink"]);
    assert.equal(under.links.length, 0);
  });

  it("drops a client that sends garbage, and one that says nothing, within the handshake bound", async () => {
    const handshakeMsMax = 300;
    const under = await listen([linkA.secondary], { handshakeMsMax });
    const garbage = net.connect(under.port, host, () => garbage.write("GET / HTTP/1.1\r\nHost: beta\r\n\r\n"));
    garbage.on("error", () => {});
    await closed(garbage);
    const startedMs = Date.now();
    const silent = net.connect(under.port, host);
    silent.on("error", () => {});
    await closed(silent);
    const elapsedMs = Date.now() - startedMs;
    assert.ok(elapsedMs >= handshakeMsMax - 50 && elapsedMs < handshakeMsMax + 2_000, `dropped after ${elapsedMs} ms`);
    assert.deepEqual(await under.refusals(2), ["tlsError", "handshakeTimeout"]);
    assert.equal(await exchange(linkA.primary, under.port, "still here"), "pong:still here");
  });

  it("closes connections beyond the limit of pending handshakes at once", async () => {
    const under = await listen([linkA.secondary], { handshakesPendingMax: 2, handshakeMsMax: 10_000 });
    const connect = () =>
      new Promise<net.Socket>((resolve) => {
        const socket = net.connect(under.port, host, () => resolve(socket));
        socket.on("error", () => {});
      });
    const pending = [await connect(), await connect()];
    const extra = await connect();
    await closed(extra);
    assert.deepEqual(await under.refusals(1), ["tooManyHandshakes"]);
    assert.ok(pending.every((socket) => !socket.destroyed), "the first two still wait for their handshake");
    for (const socket of pending) socket.destroy();
  });

  it("fails with PEER_UNREACHABLE on a closed port and on a silent server", async () => {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, host, resolve));
    const closedPort = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    await expectRejected(linkConnect(linkA.primary, host, closedPort), "PEER_UNREACHABLE", "ECONNREFUSED");

    const held: net.Socket[] = [];
    const silent = net.createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, host, resolve));
    try {
      const silentPort = (silent.address() as net.AddressInfo).port;
      await expectRejected(linkConnect(linkA.primary, host, silentPort, { timeoutMs: 200 }), "PEER_UNREACHABLE", "timeout");
    } finally {
      for (const socket of held) socket.destroy();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});
