// Replication links over mutually authenticated TLS 1.3, one credential pair per link.
//
//   primary                                    secondary (one LinkListener per node)
//   linkConnect(primary half) ── TLS 1.3, SNI = linkId ──► SNI picks the accepted secondary half
//     trusts only the link CA                                presents its cert (CN = secondary)
//     server CN must be credential.peer                      client cert required, from THIS
//     presents its cert (CN = primary)                       link's CA, CN = credential.peer
//
// Each link has its own CA (src/replication/link-credential.ts), so a node that accepted links
// from several primaries must never let one link's certificate open another link. OpenSSL's
// own client-certificate check cannot be trusted with that: after an SNI switch it verifies
// against the first context's store, not the chosen link's. So the listener asks for a client
// certificate without letting OpenSSL judge it, and checks it itself after the handshake
// (linkPeerProblem: issued and signed by that link's CA, made for the primary, in date, CN =
// peer). The client checks the server the same way, after OpenSSL checked it against the link
// CA alone (the `ca` option replaces the system roots).
//
// In TLS 1.3 the client finishes its handshake before the server has judged the client's
// certificate: a refused primary sees `linkConnect` succeed and then the socket close. The
// replication handshake that follows on the socket is what confirms the link.
//
// A connection that fails any check is destroyed, counted and logged once, with a reason;
// the listener bounds how long a handshake may take and how many may be pending at once.

import "reflect-metadata"; // before @peculiar/x509: its tsyringe registry needs the Reflect metadata API
import * as x509 from "@peculiar/x509";
import { KeyObject, randomBytes, X509Certificate } from "node:crypto";
import * as net from "node:net";
import * as tls from "node:tls";
import { assert } from "../assert.js";
import {
  linkCertificateBackdateMs,
  linkCertificateValidityDays,
  linkConnectMsMax,
  linkHandshakeMsMax,
  linkHandshakesPendingMax,
  linkIdBytes,
} from "../constants.js";
import { type ErrorDetail, OperatingError } from "../errors.js";
import type { Logger } from "../logger.js";
import { type LinkCredential, type LinkPeerProblem, linkPeerProblem } from "../replication/link-credential.js";
import { isNameString } from "../replication/payload-codec.js";

// TLS 1.3 only; AES-128-GCM first: as strong as a link needs, and cheaper per byte than
// AES-256 on the write path (replication data is sealed on the primary's event loop).
const tlsVersions = { minVersion: "TLSv1.3", maxVersion: "TLSv1.3", ciphersuites: "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256" } as const;
const keyAlgorithm = { name: "ECDSA", namedCurve: "P-256" } as const;
const signingAlgorithm = { name: "ECDSA", hash: "SHA-256" } as const;
const dayMs = 24 * 60 * 60 * 1000;
const webcrypto: Crypto = globalThis.crypto; // Node's WebCrypto, typed as @peculiar/x509 expects it

// ---- Credentials ----

interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

// Makes the two halves of a new link's credential. The CA's private key is not extractable
// and is dropped when this returns: no more certificates can be made for this link.
export async function linkCredentialsGenerate(request: {
  group: string;
  primary: string;
  secondary: string;
}): Promise<{ primary: LinkCredential; secondary: LinkCredential }> {
  for (const [field, value] of Object.entries(request)) {
    if (!isNameString(value)) throw new OperatingError("REQUEST_INVALID", `${field}: ${JSON.stringify(value)} is not a valid name`);
  }
  if (request.primary === request.secondary) throw new OperatingError("REQUEST_INVALID", "primary and secondary must be different nodes");
  const linkId = randomBytes(linkIdBytes).toString("hex");
  const nowMs = Date.now();
  const validity = { notBefore: new Date(nowMs - linkCertificateBackdateMs), notAfter: new Date(nowMs + linkCertificateValidityDays * dayMs) };
  const authorityKeys = await webcrypto.subtle.generateKey(keyAlgorithm, false, ["sign", "verify"]);
  const authority = await x509.X509CertificateGenerator.createSelfSigned(
    {
      name: `CN=lockstep-link-${linkId}`,
      keys: authorityKeys,
      serialNumber: serialNumberRandom(),
      signingAlgorithm,
      ...validity,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(authorityKeys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  const issue = (commonName: string, usage: x509.ExtendedKeyUsage) => certificateIssue(authority, authorityKeys, commonName, usage, validity);
  const primaryHalf = await issue(request.primary, x509.ExtendedKeyUsage.clientAuth);
  const secondaryHalf = await issue(request.secondary, x509.ExtendedKeyUsage.serverAuth);
  const shared = { version: 1, linkId, group: request.group, caCert: authority.toString("pem") } as const;
  return {
    primary: { ...shared, role: "primary", self: request.primary, peer: request.secondary, ...primaryHalf },
    secondary: { ...shared, role: "secondary", self: request.secondary, peer: request.primary, ...secondaryHalf },
  };
}

async function certificateIssue(
  authority: x509.X509Certificate,
  authorityKeys: CryptoKeyPair,
  commonName: string,
  usage: x509.ExtendedKeyUsage,
  validity: Validity,
): Promise<{ cert: string; key: string }> {
  assert(isNameString(commonName), "node names need no escaping in a distinguished name");
  const keys = await webcrypto.subtle.generateKey(keyAlgorithm, true, ["sign", "verify"]);
  const certificate = await x509.X509CertificateGenerator.create(
    {
      subject: `CN=${commonName}`,
      issuer: authority.subject,
      publicKey: keys.publicKey,
      signingKey: authorityKeys.privateKey,
      serialNumber: serialNumberRandom(),
      signingAlgorithm,
      ...validity,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([usage], false),
        await x509.AuthorityKeyIdentifierExtension.create(authorityKeys.publicKey, false, webcrypto),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  const key = KeyObject.from(keys.privateKey).export({ type: "pkcs8", format: "pem" });
  assert(typeof key === "string");
  return { cert: certificate.toString("pem"), key };
}

// 16 random bytes as a positive DER integer with no leading zero byte (first byte 0x40-0x7f).
function serialNumberRandom(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x3f) | 0x40;
  return bytes.toString("hex");
}

// ---- The primary's side ----

// Errors that mean the peer is not there (or went away mid-handshake), not that it is wrong.
const networkErrorCodes = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "EADDRNOTAVAIL",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

// Connects to a secondary's LinkListener as the primary of `credential`'s link. Resolves once
// the TLS handshake is done and the server proved to be the link's secondary.
export function linkConnect(
  credential: LinkCredential,
  host: string,
  port: number,
  options: { timeoutMs?: number } = {},
): Promise<tls.TLSSocket> {
  assert(credential.role === "primary", "only the primary half dials a link");
  const timeoutMs = options.timeoutMs ?? linkConnectMsMax;
  const where = { link: credential.linkId, peer: credential.peer, address: `${host}:${port}` };
  return new Promise((resolve, reject) => {
    let serverCommonName: string | undefined; // set when the server's certificate names someone else
    const socket = tls.connect({
      host,
      port,
      servername: credential.linkId,
      ca: [credential.caCert],
      cert: credential.cert,
      key: credential.key,
      rejectUnauthorized: true,
      ...tlsVersions,
      // Node names are not host names: the certificate's CN must be the peer's node name.
      checkServerIdentity: (_servername, certificate) => {
        if (certificate.subject?.CN === credential.peer) return undefined;
        serverCommonName = String(certificate.subject?.CN ?? "");
        return new Error(`the server's certificate names ${JSON.stringify(serverCommonName)}`);
      },
    });
    socket.setNoDelay(true); // sync acknowledgements and small batches: Nagle would hold them back
    let settled = false;
    const fail = (error: OperatingError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    const timer = setTimeout(() => fail(new OperatingError("PEER_UNREACHABLE", { ...where, reason: "timeout", timeoutMs })), timeoutMs);
    // Stays on after a failure, so that a late error of the destroyed socket goes nowhere.
    const onError = (error: NodeJS.ErrnoException) => fail(connectError(error, where, serverCommonName));
    socket.on("error", onError);
    socket.once("secureConnect", () => {
      const problem = linkPeerProblem(peerCertificate(socket), credential, Date.now());
      if (problem !== undefined) return fail(new OperatingError("LINK_REJECTED", { ...where, reason: serverReasonByProblem[problem] }));
      settled = true;
      clearTimeout(timer);
      socket.off("error", onError); // the caller's from now on
      resolve(socket);
    });
  });
}

// A socket error before the link was up: the network's fault, or the server's identity.
function connectError(error: NodeJS.ErrnoException, where: ErrorDetail, serverCommonName: string | undefined): OperatingError {
  const code = error.code ?? "";
  if (networkErrorCodes.has(code)) return new OperatingError("PEER_UNREACHABLE", { ...where, reason: code }, { cause: error });
  // OpenSSL's certificate verification errors have codes without the ERR_ prefix.
  const reason = serverCommonName !== undefined ? "wrongPeerName" : code === "" || code.startsWith("ERR_") ? "tlsError" : "untrustedServerCert";
  return new OperatingError("LINK_REJECTED", { ...where, reason, cause: code || error.message, serverName: serverCommonName }, { cause: error });
}

const serverReasonByProblem = {
  noCertificate: "noServerCert",
  untrusted: "untrustedServerCert",
  expired: "untrustedServerCert",
  wrongName: "wrongPeerName",
} as const satisfies Record<LinkPeerProblem, string>;

// The certificate the other end presented. Not getPeerX509Certificate(): on Node 20 a client
// socket forgets its peer's certificate after the first call to it.
function peerCertificate(socket: tls.TLSSocket): X509Certificate | undefined {
  const raw = socket.getPeerCertificate(false)?.raw;
  return raw === undefined ? undefined : new X509Certificate(raw);
}

// ---- The secondary's side ----

export type LinkRejectReason =
  | "unknownLink" // no servername, or one that names no accepted link
  | "noClientCert"
  | "untrustedClientCert" // not from this link's CA, not made for a primary, or out of date
  | "wrongPeerName" // from this link's CA, but not naming the link's primary
  | "tlsError" // the TLS handshake failed (protocol version, garbage, a closed socket)
  | "handshakeTimeout"
  | "tooManyHandshakes";

const clientReasonByProblem = {
  noCertificate: "noClientCert",
  untrusted: "untrustedClientCert",
  expired: "untrustedClientCert",
  wrongName: "wrongPeerName",
} as const satisfies Record<LinkPeerProblem, LinkRejectReason>;

// OpenSSL's errors for a ClientHello that chose no certificate: the context used when the
// servername names no link has none.
const noCertificateErrorCodes = new Set(["ERR_SSL_NO_SUITABLE_SIGNATURE_ALGORITHM", "ERR_SSL_NO_SHARED_CIPHER"]);

// Overrides for tests; production uses the limits as they are.
export interface LinkListenerOptions {
  readonly handshakeMsMax?: number;
  readonly handshakesPendingMax?: number;
}

interface AcceptedLink {
  readonly credential: LinkCredential;
  readonly context: tls.SecureContext;
}

// The state of one connection until it is authenticated.
interface Handshake {
  readonly remote: string;
  readonly timer: NodeJS.Timeout;
  servername: string | undefined; // as the client sent it, if it did
  link: AcceptedLink | undefined; // the accepted link it named
}

type LinkHandler = (socket: tls.TLSSocket, credential: LinkCredential) => void;

export class LinkListener {
  private readonly logger: Logger;
  private readonly handshakeMsMax: number;
  private readonly handshakesPendingMax: number;
  private links = new Map<string, AcceptedLink>(); // by linkId
  private readonly handshakes = new Map<tls.TLSSocket, Handshake>();
  private readonly authenticated = new Set<tls.TLSSocket>();
  // No certificate: a handshake whose servername names no accepted link fails with an alert.
  private readonly contextWithoutLink = tls.createSecureContext(tlsVersions);
  private server: net.Server | undefined;
  private handler: LinkHandler | undefined;
  private closing = false;
  private rejectedCount = 0;

  constructor(logger: Logger, options: LinkListenerOptions = {}) {
    this.logger = logger.child({ subsystem: "link-listener" });
    this.handshakeMsMax = options.handshakeMsMax ?? linkHandshakeMsMax;
    this.handshakesPendingMax = options.handshakesPendingMax ?? linkHandshakesPendingMax;
  }

  // Connections refused so far, for any reason.
  get rejected(): number {
    return this.rejectedCount;
  }

  // Replaces the accepted secondary halves. Handshakes that start later use the new set, and
  // one still in progress is refused at its end if its link is no longer in the set.
  setCredentials(credentials: readonly LinkCredential[]): void {
    const links = new Map<string, AcceptedLink>();
    for (const credential of credentials) {
      assert(credential.role === "secondary", "a listener serves the secondary halves of links");
      assert(!links.has(credential.linkId), `link ${credential.linkId} accepted twice`);
      const context = tls.createSecureContext({ ...tlsVersions, cert: credential.cert, key: credential.key, ca: credential.caCert });
      links.set(credential.linkId, { credential, context });
    }
    this.links = links;
  }

  // The one handler of authenticated links; it owns the socket from then on.
  onLink(handler: LinkHandler): void {
    assert(this.handler === undefined, "one link handler per listener");
    this.handler = handler;
  }

  async listen(host: string, port: number): Promise<{ host: string; port: number }> {
    assert(this.server === undefined && !this.closing, "a listener listens once");
    assert(this.handler !== undefined, "onLink() comes before listen()");
    const server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", (error) => this.logger.error({ err: error }, "link listener error"));
    this.server = server;
    const address = server.address() as net.AddressInfo;
    this.logger.info({ host: address.address, port: address.port }, "listening for replication links");
    return { host: address.address, port: address.port };
  }

  async close(): Promise<void> {
    this.closing = true;
    const server = this.server;
    this.server = undefined;
    for (const [socket, handshake] of this.handshakes) {
      clearTimeout(handshake.timer);
      socket.destroy();
    }
    this.handshakes.clear();
    for (const socket of this.authenticated) socket.destroy();
    this.authenticated.clear();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  // TCP accepted → TLS handshake (bounded in time and number) → authenticate().
  private accept(raw: net.Socket): void {
    const remote = `${raw.remoteAddress}:${raw.remotePort}`;
    if (this.closing || this.handshakes.size >= this.handshakesPendingMax) {
      raw.on("error", () => {});
      raw.destroy();
      if (!this.closing) this.refused("tooManyHandshakes", { remote, handshakesPendingMax: this.handshakesPendingMax });
      return;
    }
    const handshake: Handshake = {
      remote,
      timer: setTimeout(() => this.refuse(socket, "handshakeTimeout", { handshakeMsMax: this.handshakeMsMax }), this.handshakeMsMax),
      servername: undefined,
      link: undefined,
    };
    const socket = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: this.contextWithoutLink,
      requestCert: true,
      rejectUnauthorized: false, // judged in authenticate(): see the header
      SNICallback: (servername, callback) => {
        handshake.servername = servername;
        handshake.link = this.links.get(servername);
        callback(null, handshake.link?.context);
      },
    });
    this.handshakes.set(socket, handshake);
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (!this.handshakes.has(socket)) return this.logger.debug({ err: error }, "link socket error");
      // A ClientHello without a servername never reaches SNICallback; it fails for want of a
      // certificate in contextWithoutLink.
      const unknownLink = handshake.link === undefined && (handshake.servername !== undefined || noCertificateErrorCodes.has(error.code ?? ""));
      this.refuse(socket, unknownLink ? "unknownLink" : "tlsError", { cause: error.code ?? error.message });
    });
    socket.once("close", () => this.refuse(socket, "tlsError", { cause: "closed during the handshake" }));
    socket.once("secure", () => this.authenticate(socket, handshake));
  }

  private authenticate(socket: tls.TLSSocket, handshake: Handshake): void {
    if (!this.handshakes.has(socket)) return; // refused or closed meanwhile
    // The link the servername chose must still be accepted (setCredentials may have run since).
    const chosen = handshake.link?.credential;
    const link = chosen === undefined ? undefined : this.links.get(chosen.linkId);
    if (link === undefined || link.credential.caCert !== chosen?.caCert) return this.refuse(socket, "unknownLink", {});
    const problem = linkPeerProblem(peerCertificate(socket), link.credential, Date.now());
    if (problem !== undefined) return this.refuse(socket, clientReasonByProblem[problem], {});
    clearTimeout(handshake.timer);
    this.handshakes.delete(socket);
    this.authenticated.add(socket);
    socket.once("close", () => this.authenticated.delete(socket));
    this.logger.info({ link: link.credential.linkId, peer: link.credential.peer, remote: handshake.remote }, "replication link authenticated");
    assert(this.handler !== undefined);
    this.handler(socket, link.credential);
  }

  // Ends a connection still in its handshake; later calls for the same socket do nothing.
  private refuse(socket: tls.TLSSocket, reason: LinkRejectReason, detail: Record<string, unknown>): void {
    const handshake = this.handshakes.get(socket);
    if (handshake === undefined) return;
    clearTimeout(handshake.timer);
    this.handshakes.delete(socket);
    socket.destroy();
    this.refused(reason, { remote: handshake.remote, servername: handshake.servername, peer: handshake.link?.credential.peer, ...detail });
  }

  private refused(reason: LinkRejectReason, detail: Record<string, unknown>): void {
    this.rejectedCount += 1;
    this.logger.warn({ reason, ...detail }, `replication link refused: ${reason}`);
  }
}
