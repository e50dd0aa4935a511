// A link credential: one half of the credential pair of one replication link.
//
// `link add` on the primary makes a small CA for the link, has it sign one certificate naming
// the primary and one naming the secondary, and throws the CA's private key away: nobody can
// mint another certificate for that link. Each half holds the CA certificate (the link's only
// trust anchor), its own certificate and private key, and the names of both ends. The
// secondary half travels as a file (`link accept --file`), so it is parsed like any input from
// the world: one zod schema for the shape, then the PEMs are checked against each other (the
// certificate is signed by the CA, names `self`, fits the role, and matches the key). A bad file
// is CREDENTIAL_INVALID with one line naming the file and the problem.
//
// The file is JSON with a fixed key order, so the same credential always serializes to the
// same bytes:
//
//   { "version": 1, "linkId": "<16 hex>", "group", "role", "self", "peer",
//     "caCert": "<PEM>", "cert": "<PEM>", "key": "<PEM PKCS#8>" }
//
// Pure: parsing certificates with node:crypto reads no clock and no randomness; the one check
// that needs the time (linkPeerProblem) takes it as an argument.

import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { z } from "zod";
import { linkCredentialBytesMax, linkIdBytes } from "../constants.js";
import { OperatingError } from "../errors.js";
import { isNameString } from "./payload-codec.js";
import { replicationNameBytesMax } from "./limits.js";
import { nameRuleText } from "../names.js";

export type LinkRole = "primary" | "secondary";

export interface LinkCredential {
  readonly version: 1;
  readonly linkId: string; // 16 lowercase hex characters; also the link's TLS servername
  readonly group: string; // the replicated group
  readonly role: LinkRole; // the half this is
  readonly self: string; // this side's node name; its certificate's CN
  readonly peer: string; // the other side's node name; the peer certificate must name it
  readonly caCert: string; // PEM of the link CA, the trust anchor of this link only
  readonly cert: string; // PEM, CN = self, signed by the link CA
  readonly key: string; // PEM PKCS#8 private key of cert
}

// The extended key usage each half's certificate carries: the primary dials, the secondary
// listens.
const extendedKeyUsageByRole = {
  primary: "1.3.6.1.5.5.7.3.2", // clientAuth
  secondary: "1.3.6.1.5.5.7.3.1", // serverAuth
} as const satisfies Record<LinkRole, string>;

const linkIdPattern = new RegExp(`^[0-9a-f]{${linkIdBytes * 2}}$`);
const certificatePemPattern = /^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\r?\n?$/;
const privateKeyPemPattern = /^-----BEGIN PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]+-----END PRIVATE KEY-----\r?\n?$/;

const name = z.string().refine(isNameString, `must be 1-${replicationNameBytesMax} ${nameRuleText}`);
const certificatePem = z.string().regex(certificatePemPattern, "must be one PEM certificate");

const credentialSchema = z
  .object({
    version: z.literal(1),
    linkId: z.string().regex(linkIdPattern, `must be ${linkIdBytes * 2} lowercase hex digits`),
    group: name,
    role: z.enum(["primary", "secondary"]),
    self: name,
    peer: name,
    caCert: certificatePem,
    cert: certificatePem,
    key: z.string().regex(privateKeyPemPattern, "must be one PEM PKCS#8 private key"),
  })
  .strict()
  .refine((credential) => credential.self !== credential.peer, { message: "must differ from self", path: ["peer"] });

export function linkCredentialParse(text: string, source: string): LinkCredential {
  const invalid = (problem: string) => new OperatingError("CREDENTIAL_INVALID", `${source}: ${problem}`);
  if (Buffer.byteLength(text, "utf8") > linkCredentialBytesMax) throw invalid(`larger than ${linkCredentialBytesMax} bytes`);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw invalid(`not valid JSON: ${(error as Error).message}`);
  }
  const result = credentialSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw invalid(`${issue.path.map(String).join(".") || "(top level)"}: ${issue.message}`);
  }
  const credential: LinkCredential = result.data;
  const problem = credentialKeysProblem(credential);
  if (problem !== undefined) throw invalid(problem);
  return credential;
}

export function linkCredentialSerialize(credential: LinkCredential): string {
  const ordered: LinkCredential = {
    version: credential.version,
    linkId: credential.linkId,
    group: credential.group,
    role: credential.role,
    self: credential.self,
    peer: credential.peer,
    caCert: credential.caCert,
    cert: credential.cert,
    key: credential.key,
  };
  return `${JSON.stringify(ordered, null, 2)}\n`;
}

// Why the PEMs of a well-shaped credential do not belong together, or undefined if they do.
function credentialKeysProblem(credential: LinkCredential): string | undefined {
  const authority = certificateParse(credential.caCert);
  if (authority === undefined) return "caCert: not a readable X.509 certificate";
  if (!authority.ca) return "caCert: not a CA certificate";
  const certificate = certificateParse(credential.cert);
  if (certificate === undefined) return "cert: not a readable X.509 certificate";
  if (!issuedBy(certificate, authority)) return "cert: not signed by caCert";
  const commonName = linkCertificateCommonName(certificate);
  if (commonName !== credential.self) return `cert: names ${JSON.stringify(commonName ?? "")}, not self ${JSON.stringify(credential.self)}`;
  if (!certificate.keyUsage?.includes(extendedKeyUsageByRole[credential.role])) {
    return `cert: not usable by the ${credential.role} (extended key usage)`;
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(credential.key);
  } catch {
    return "key: not a readable private key";
  }
  if (!certificate.checkPrivateKey(key)) return "key: does not belong to cert";
  return undefined;
}

function certificateParse(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

function issuedBy(certificate: X509Certificate, authority: X509Certificate): boolean {
  return certificate.checkIssued(authority) && certificate.verify(authority.publicKey);
}

// The certificate's one CN, or undefined if it has none or several.
export function linkCertificateCommonName(certificate: X509Certificate): string | undefined {
  const names = certificate.subject
    .split("\n")
    .filter((line) => line.startsWith("CN="))
    .map((line) => line.slice("CN=".length));
  return names.length === 1 ? names[0] : undefined;
}

// What is wrong with the certificate the other end of a link presented, or undefined if it is
// the link's peer: signed by this link's CA (and no other), made for the peer's role, valid at
// nowMs, naming the peer.
// TLS libraries check most of this too; this is the check the link relies on.
export type LinkPeerProblem = "noCertificate" | "untrusted" | "expired" | "wrongName";

export function linkPeerProblem(
  peerCertificate: X509Certificate | undefined,
  credential: LinkCredential,
  nowMs: number,
): LinkPeerProblem | undefined {
  if (peerCertificate === undefined) return "noCertificate";
  const authority = new X509Certificate(credential.caCert);
  if (peerCertificate.fingerprint256 === authority.fingerprint256) return "untrusted"; // the CA itself is no peer
  if (!issuedBy(peerCertificate, authority)) return "untrusted";
  const peerRole: LinkRole = credential.role === "primary" ? "secondary" : "primary";
  if (!peerCertificate.keyUsage?.includes(extendedKeyUsageByRole[peerRole])) return "untrusted";
  if (nowMs < Date.parse(peerCertificate.validFrom) || nowMs > Date.parse(peerCertificate.validTo)) return "expired";
  if (linkCertificateCommonName(peerCertificate) !== credential.peer) return "wrongName";
  return undefined;
}
