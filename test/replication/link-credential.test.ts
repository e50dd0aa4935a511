// Link credential files: serialize/parse round trip with a stable layout, one clear
// CREDENTIAL_INVALID line for each kind of damage (JSON, shape, names, PEMs that do not belong
// together), and the peer check both ends of a link rely on.

import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { before, describe, it } from "node:test";
import { linkCredentialBytesMax } from "../../src/constants.js";
import { OperatingError } from "../../src/errors.js";
import { linkCredentialsGenerate } from "../../src/io/link-tls.js";
import {
  type LinkCredential,
  linkCertificateCommonName,
  linkCredentialParse,
  linkCredentialSerialize,
  linkPeerProblem,
} from "../../src/replication/link-credential.js";

type Pair = { primary: LinkCredential; secondary: LinkCredential };

// Parses `credential` (serialized, with `changes` applied to the JSON object) and expects a
// CREDENTIAL_INVALID whose message matches `expected`.
function expectInvalid(credential: LinkCredential, changes: Record<string, unknown>, expected: RegExp): void {
  const text = JSON.stringify({ ...JSON.parse(linkCredentialSerialize(credential)), ...changes });
  expectInvalidText(text, expected);
}

function expectInvalidText(text: string, expected: RegExp): void {
  assert.throws(
    () => linkCredentialParse(text, "beta.link"),
    (error: unknown) => {
      assert.ok(error instanceof OperatingError);
      assert.equal(error.code, "CREDENTIAL_INVALID");
      assert.equal(error.exitCode, 2);
      assert.match(error.message, /^beta\.link: /);
      assert.match(error.message, expected);
      assert.ok(!error.message.includes("\n"), `one line: ${error.message}`);
      return true;
    },
  );
}

describe("link credential files", () => {
  let link: Pair;
  let other: Pair;
  before(async () => {
    link = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
    other = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
  });

  it("round-trips both halves through the file format", () => {
    for (const credential of [link.primary, link.secondary]) {
      const text = linkCredentialSerialize(credential);
      assert.deepEqual(linkCredentialParse(text, "file"), credential);
      assert.ok(text.endsWith("}\n"));
      assert.deepEqual(Object.keys(JSON.parse(text)), ["version", "linkId", "group", "role", "self", "peer", "caCert", "cert", "key"]);
    }
    const shuffled = Object.fromEntries(Object.entries(link.secondary).reverse()) as unknown as LinkCredential;
    assert.equal(linkCredentialSerialize(shuffled), linkCredentialSerialize(link.secondary), "key order does not depend on the object's");
  });

  it("rejects damaged or oversized JSON", () => {
    const text = linkCredentialSerialize(link.secondary);
    expectInvalidText(text.slice(0, text.length / 2), /not valid JSON/);
    expectInvalidText("", /not valid JSON/);
    expectInvalidText("[1, 2]", /\(top level\)/);
    expectInvalidText(" ".repeat(linkCredentialBytesMax + 1), /larger than 65536 bytes/);
  });

  it("rejects a wrong, missing or extra field", () => {
    expectInvalid(link.secondary, { version: 2 }, /version: /);
    expectInvalid(link.secondary, { role: "tertiary" }, /role: /);
    expectInvalid(link.secondary, { linkId: link.secondary.linkId.toUpperCase() }, /linkId: must be 16 lowercase hex digits/);
    expectInvalid(link.secondary, { linkId: "abc" }, /linkId: /);
    expectInvalid(link.secondary, { key: undefined }, /key: /);
    expectInvalid(link.secondary, { comment: "hello" }, /Unrecognized key: "comment"/);
  });

  it("rejects a bad name", () => {
    expectInvalid(link.secondary, { group: "two words" }, /group: must be 1-64 letters/);
    expectInvalid(link.secondary, { peer: "-alpha" }, /peer: must be 1-64 letters/);
    expectInvalid(link.secondary, { self: "b".repeat(65) }, /self: must be 1-64 letters/);
    expectInvalid(link.secondary, { peer: "beta" }, /peer: must differ from self/);
  });

  it("rejects PEMs that are not PEMs or do not belong together", () => {
    expectInvalid(link.secondary, { caCert: "not a certificate" }, /caCert: must be one PEM certificate/);
    expectInvalid(link.secondary, { cert: `${link.secondary.cert}${link.secondary.cert}` }, /cert: must be one PEM certificate/);
    expectInvalid(link.secondary, { key: link.secondary.cert }, /key: must be one PEM PKCS#8 private key/);
    const garbled = link.secondary.caCert.replace(/\n[A-Za-z0-9+/]{8}/, "\nAAAAAAAA");
    expectInvalid(link.secondary, { caCert: garbled }, /caCert: not a readable X\.509 certificate/);
    expectInvalid(link.secondary, { caCert: link.secondary.cert }, /caCert: not a CA certificate/);
    expectInvalid(link.secondary, { caCert: other.secondary.caCert }, /cert: not signed by caCert/);
    expectInvalid(link.secondary, { key: other.secondary.key }, /key: does not belong to cert/);
    expectInvalid(link.secondary, { self: "gamma" }, /cert: names "beta", not self "gamma"/);
    // The secondary's certificate relabelled as the primary's half: it is made for serving.
    expectInvalid(link.secondary, { role: "primary" }, /cert: not usable by the primary/);
  });
});

describe("linkPeerProblem", () => {
  let link: Pair;
  let other: Pair;
  before(async () => {
    link = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
    other = await linkCredentialsGenerate({ group: "volumes", primary: "alpha", secondary: "beta" });
  });
  const nowMs = Date.now();

  it("accepts the link's peer, and each end sees the other's name", () => {
    const secondaryCertificate = new X509Certificate(link.secondary.cert);
    assert.equal(linkPeerProblem(secondaryCertificate, link.primary, nowMs), undefined);
    assert.equal(linkPeerProblem(new X509Certificate(link.primary.cert), link.secondary, nowMs), undefined);
    assert.equal(linkCertificateCommonName(secondaryCertificate), "beta");
  });

  it("refuses another link's certificate, the CA itself, a wrong role, a wrong name and none", () => {
    assert.equal(linkPeerProblem(new X509Certificate(other.primary.cert), link.secondary, nowMs), "untrusted");
    assert.equal(linkPeerProblem(new X509Certificate(link.secondary.caCert), link.secondary, nowMs), "untrusted");
    assert.equal(linkPeerProblem(new X509Certificate(link.secondary.cert), link.secondary, nowMs), "untrusted");
    assert.equal(linkPeerProblem(new X509Certificate(link.primary.cert), { ...link.secondary, peer: "gamma" }, nowMs), "wrongName");
    assert.equal(linkPeerProblem(undefined, link.secondary, nowMs), "noCertificate");
  });

  it("refuses a certificate outside its validity", () => {
    const certificate = new X509Certificate(link.primary.cert);
    const yearMs = 365 * 24 * 60 * 60 * 1000;
    assert.equal(linkPeerProblem(certificate, link.secondary, nowMs + 11 * yearMs), "expired");
    assert.equal(linkPeerProblem(certificate, link.secondary, nowMs - 2 * 24 * 60 * 60 * 1000), "expired");
    assert.equal(linkPeerProblem(certificate, link.secondary, nowMs + 9 * yearMs), undefined);
  });
});
