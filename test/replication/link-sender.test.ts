// The primary's side of a link as a pure state machine (src/replication/link-sender.ts): which
// hellos it refuses and why, where the stream starts (log resume or resync), the rules for acks
// (never backwards, never beyond what was sent), progress, heartbeats and silence.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { AssertionError } from "../../src/assert.js";
import type { Hello } from "../../src/replication/handshake.js";
import { protocolVersionMax } from "../../src/replication/handshake.js";
import {
  helloRefusal,
  type SenderEffect,
  type SenderExpectation,
  type SenderState,
  type SenderTiming,
  type StartContext,
  senderInitial,
  senderStep,
  startChoose,
} from "../../src/replication/link-sender.js";
import type { Ack } from "../../src/replication/progress.js";

const expected: SenderExpectation = { group: "db", peer: "site-b", generation: 7n };
const timing: SenderTiming = { silenceMsMax: 10_000 };
const t0 = 1_700_000_000_000;

function hello(overrides: Partial<Hello> = {}): Hello {
  return {
    kind: "hello",
    versionMin: 1,
    versionMax: 1,
    role: "secondary",
    generation: 7n,
    durableLsn: 100n,
    appliedLsn: 90n,
    durableChecksum: 0xdead_beef,
    node: "site-b",
    group: "db",
    ...overrides,
  };
}

// The log holds 50…200; our record 100 has the peer's checksum; no bitmap.
function context(overrides: Partial<StartContext> = {}): StartContext {
  return { tailLsn: 50n, headLsn: 200n, checksumAtPeerDurable: 0xdead_beef, bitmapActive: false, bitmapCoveredLsn: 0n, bitmapBaseLsn: null, ...overrides };
}

function ack(receivedLsn: bigint, durableLsn: bigint, appliedLsn: bigint): Ack {
  return { kind: "ack", receivedLsn, durableLsn, appliedLsn, consistent: true };
}

function kinds(effects: readonly SenderEffect[]): string[] {
  return effects.map((effect) => effect.kind);
}

// A sender that accepted `peerHello` and has sent records through sentLsn.
function streaming(peerHello: Hello = hello(), sentLsn = 150n, nowMs = t0): SenderState {
  const [state, effects] = senderStep(senderInitial(nowMs), { kind: "hello", hello: peerHello, context: context() }, nowMs, expected, timing);
  assert.deepEqual(kinds(effects), ["accept"]);
  const [sent] = senderStep(state, { kind: "sent", lastLsn: sentLsn }, nowMs, expected, timing);
  return sent;
}

describe("link sender: hello refusals", () => {
  it("accepts the configured peer's hello", () => {
    assert.equal(helloRefusal(hello(), expected), null);
    assert.equal(helloRefusal(hello({ generation: 3n }), expected), null, "an older generation is a returning old primary: accepted, resynced");
    assert.equal(helloRefusal(hello({ versionMin: 1, versionMax: 9 }), expected), null, "a wider range that includes ours");
  });

  const cases: [string, Partial<Hello>, string][] = [
    ["no common version", { versionMin: protocolVersionMax + 1, versionMax: protocolVersionMax + 3 }, "versionMismatch"],
    ["another group", { group: "mail" }, "unknownGroup"],
    ["another node than the link's credential names", { node: "site-c" }, "notConfiguredPeer"],
    ["a peer claiming to be primary", { role: "primary" }, "roleConflict"],
    ["a bunker where a secondary is configured", { role: "bunker", appliedLsn: 0n }, "roleConflict"],
    ["a peer with a newer generation (we are a stale primary)", { generation: 8n }, "staleGeneration"],
    ["applied beyond durable", { appliedLsn: 101n }, "protocolError"],
  ];
  for (const [name, overrides, reason] of cases) {
    it(`refuses ${name}: reject ${reason}, then close`, () => {
      const refusal = helloRefusal(hello(overrides), expected);
      assert.equal(refusal?.reason, reason);
      assert.ok(refusal.text.length > 0 && /^[\x20-\x7e]*$/.test(refusal.text), "a printable reason text for the peer's log");
      const [state, effects] = senderStep(senderInitial(t0), { kind: "hello", hello: hello(overrides), context: context() }, t0, expected, timing);
      assert.equal(state.phase, "closed");
      assert.deepEqual(kinds(effects), ["reject", "close"]);
      assert.equal((effects[0] as { reason: string }).reason, reason);
      assert.equal((effects[1] as { peerReject: unknown }).peerReject, null);
    });
  }

  it("checks the version before anything else (a peer of another version may use other names)", () => {
    assert.equal(helloRefusal(hello({ versionMin: 9, versionMax: 9, group: "x", node: "y", role: "primary" }), expected)?.reason, "versionMismatch");
  });

  it("a second hello on a streaming link closes it", () => {
    const [state, effects] = senderStep(streaming(), { kind: "hello", hello: hello(), context: context() }, t0, expected, timing);
    assert.equal(state.phase, "closed");
    assert.deepEqual(kinds(effects), ["close"]);
  });
});

describe("link sender: where the stream starts", () => {
  it("resumes from the log when the checksum matches and the records are still held", () => {
    assert.deepEqual(startChoose(hello(), context()), { start: "log", resumeLsn: 101n });
    // The peer has exactly what we have: resume after our head.
    assert.deepEqual(startChoose(hello({ durableLsn: 200n }), context()), { start: "log", resumeLsn: 201n });
    // The peer's last record is the one before our tail: the next one it needs is our tail.
    assert.deepEqual(startChoose(hello({ durableLsn: 49n }), context()), { start: "log", resumeLsn: 50n });
  });

  it("resyncs when the checksum differs: another history at the same LSN", () => {
    assert.deepEqual(startChoose(hello({ durableChecksum: 0x1234_5678 }), context()), { start: "resync", resumeLsn: 201n, seedAllocated: true });
  });

  it("resyncs when the peer is behind the log tail (records released)", () => {
    // Record 49 is gone (checksum unknown) and so is everything the peer lacks from 49 on.
    const decision = startChoose(hello({ durableLsn: 48n }), context({ checksumAtPeerDurable: null }));
    assert.deepEqual(decision, { start: "resync", resumeLsn: 201n, seedAllocated: true });
    // Even if the shell still knew the checksum, a peer before the tail cannot resume.
    assert.equal(startChoose(hello({ durableLsn: 48n }), context({ checksumAtPeerDurable: 0xdead_beef })).start, "resync");
  });

  it("resyncs when the peer is ahead of our head (it has records we never wrote)", () => {
    assert.equal(startChoose(hello({ durableLsn: 201n }), context({ checksumAtPeerDurable: 0xdead_beef })).start, "resync");
  });

  it("resyncs while the link's bitmap is active: from coveredLsn + 1, not seeding the allocated regions", () => {
    const decision = startChoose(hello(), context({ bitmapActive: true, bitmapCoveredLsn: 170n }));
    assert.deepEqual(decision, { start: "resync", resumeLsn: 171n, seedAllocated: false });
  });

  // For the lead to decide (an interface change): with an active bitmap, startChoose resumes at
  // coveredLsn + 1 and resends only the bitmap's regions, whatever the peer holds. That is right
  // for the initial-sync bitmap (every allocated region) and for a peer that holds our history up
  // to where an overflow bitmap began marking. It is wrong for a peer that does not: a replica
  // whose disks were replaced (hello durableLsn 0) or one below the bitmap's base, while an
  // overflow bitmap is active, would get only the regions written since the overflow, end
  // "consistent", and differ from the primary everywhere else. StartContext has no bitmap base
  // LSN (primary-link.ts sets coveredLsn = peerDurableLsn when an overflow bitmap starts), so the
  // pure function cannot tell the two bitmaps apart.
  it("with an overflow bitmap active, a peer below the bitmap's base (e.g. durableLsn 0) gets everything allocated (seedAllocated)", () => {
    const overflow = context({ bitmapActive: true, bitmapCoveredLsn: 170n, bitmapBaseLsn: 100n });
    assert.deepEqual(startChoose(hello({ durableLsn: 0n, appliedLsn: 0n, durableChecksum: 0 }), overflow), { start: "resync", resumeLsn: 201n, seedAllocated: true });
    assert.deepEqual(startChoose(hello({ durableLsn: 100n }), overflow), { start: "resync", resumeLsn: 171n, seedAllocated: false }, "a peer at the base gets the bitmap's regions");
    const initial = context({ bitmapActive: true, bitmapCoveredLsn: 170n, bitmapBaseLsn: null });
    assert.deepEqual(startChoose(hello({ durableLsn: 0n, appliedLsn: 0n, durableChecksum: 0 }), initial), { start: "resync", resumeLsn: 171n, seedAllocated: false }, "an initial-sync bitmap holds everything allocated");
  });

  it("a new peer (durableLsn 0) gets an initial sync", () => {
    // The shell passes null for LSN 0: there is no record 0 in any log.
    const decision = startChoose(hello({ durableLsn: 0n, appliedLsn: 0n, durableChecksum: 0 }), context({ tailLsn: 1n, checksumAtPeerDurable: null }));
    assert.deepEqual(decision, { start: "resync", resumeLsn: 201n, seedAllocated: true });
  });

  it("accept: the chosen version and decision; baseline progress per start", () => {
    const [logState, logEffects] = senderStep(senderInitial(t0), { kind: "hello", hello: hello(), context: context() }, t0 + 5, expected, timing);
    assert.deepEqual(logEffects, [{ kind: "accept", protocolVersion: 1, decision: { start: "log", resumeLsn: 101n } }]);
    assert.deepEqual(
      { phase: logState.phase, start: logState.start, sent: logState.sentLsn, received: logState.receivedLsn, durable: logState.durableLsn, applied: logState.appliedLsn, heard: logState.heardAtMs },
      { phase: "streaming", start: "log", sent: 100n, received: 100n, durable: 100n, applied: 90n, heard: t0 + 5 },
    );
    const [resyncState, resyncEffects] = senderStep(senderInitial(t0), { kind: "hello", hello: hello(), context: context({ bitmapActive: true, bitmapCoveredLsn: 170n }) }, t0, expected, timing);
    assert.equal(resyncEffects[0]?.kind, "accept");
    assert.deepEqual(
      { start: resyncState.start, sent: resyncState.sentLsn, received: resyncState.receivedLsn, durable: resyncState.durableLsn, applied: resyncState.appliedLsn },
      { start: "resync", sent: 170n, received: 170n, durable: 170n, applied: 0n },
    );
  });
});

describe("link sender: acks", () => {
  it("every ack is progress, a repeated one too (it may carry the peer's consistency)", () => {
    let state = streaming();
    let effects: SenderEffect[];
    [state, effects] = senderStep(state, { kind: "ack", ack: ack(120n, 110n, 95n) }, t0 + 10, expected, timing);
    assert.deepEqual(kinds(effects), ["progress"]);
    assert.deepEqual([state.receivedLsn, state.durableLsn, state.appliedLsn, state.heardAtMs], [120n, 110n, 95n, t0 + 10]);
    [state, effects] = senderStep(state, { kind: "ack", ack: ack(120n, 110n, 95n) }, t0 + 20, expected, timing);
    assert.deepEqual(kinds(effects), ["progress"]);
    assert.equal(state.heardAtMs, t0 + 20, "an unchanged ack still shows the peer is alive");
    [state, effects] = senderStep(state, { kind: "ack", ack: ack(120n, 110n, 96n) }, t0 + 30, expected, timing);
    assert.deepEqual(kinds(effects), ["progress"], "applied alone moving is progress");
    [state, effects] = senderStep(state, { kind: "ack", ack: ack(150n, 150n, 150n) }, t0 + 40, expected, timing);
    assert.deepEqual(kinds(effects), ["progress"], "an ack of exactly what was sent");
    assert.equal(state.phase, "streaming");
  });

  const backwards: [string, Ack][] = [
    ["received", ack(119n, 110n, 95n)],
    ["durable", ack(120n, 109n, 95n)],
    ["applied", ack(120n, 110n, 94n)],
  ];
  for (const [field, bad] of backwards) {
    it(`an ack whose ${field} LSN goes backwards closes the link`, () => {
      const [moved] = senderStep(streaming(), { kind: "ack", ack: ack(120n, 110n, 95n) }, t0, expected, timing);
      const [state, effects] = senderStep(moved, { kind: "ack", ack: bad }, t0, expected, timing);
      assert.equal(state.phase, "closed");
      assert.deepEqual(kinds(effects), ["close"]);
      assert.match((effects[0] as { reason: string }).reason, /backwards/);
    });
  }

  it("an ack below the accept's baseline (the peer's own hello) closes the link", () => {
    const [state, effects] = senderStep(streaming(), { kind: "ack", ack: ack(99n, 99n, 90n) }, t0, expected, timing);
    assert.equal(state.phase, "closed");
    assert.deepEqual(kinds(effects), ["close"]);
  });

  it("an ack beyond the last LSN sent closes the link", () => {
    const [state, effects] = senderStep(streaming(hello(), 150n), { kind: "ack", ack: ack(151n, 100n, 90n) }, t0, expected, timing);
    assert.equal(state.phase, "closed");
    assert.match((effects[0] as { reason: string }).reason, /beyond the last sent 150/);
  });

  it("an ack before the handshake closes the link", () => {
    const [state, effects] = senderStep(senderInitial(t0), { kind: "ack", ack: ack(0n, 0n, 0n) }, t0, expected, timing);
    assert.equal(state.phase, "closed");
    assert.deepEqual(kinds(effects), ["close"]);
  });

  it("records are sent in order while streaming; anything else is a bug (assert)", () => {
    const state = streaming(hello(), 150n);
    assert.throws(() => senderStep(state, { kind: "sent", lastLsn: 150n }, t0, expected, timing), AssertionError);
    assert.throws(() => senderStep(senderInitial(t0), { kind: "sent", lastLsn: 1n }, t0, expected, timing), AssertionError);
    const [next] = senderStep(state, { kind: "sent", lastLsn: 160n }, t0, expected, timing);
    assert.equal(next.sentLsn, 160n);
  });
});

describe("link sender: heartbeats, silence, rejects", () => {
  it("a tick while streaming offers a heartbeat echoing the peer's last timestamp", () => {
    let state = streaming();
    let effects: SenderEffect[];
    [, effects] = senderStep(state, { kind: "tick" }, t0 + 1_000, expected, timing);
    assert.deepEqual(effects, [{ kind: "heartbeat", echoTimestampMs: 0 }]);
    [state, effects] = senderStep(state, { kind: "heartbeat", heartbeat: { kind: "heartbeat", timestampMs: 5_555, echoTimestampMs: 0 } }, t0 + 2_000, expected, timing);
    assert.deepEqual(effects, []);
    assert.equal(state.rttMs, null, "no echo yet: no round trip");
    [, effects] = senderStep(state, { kind: "tick" }, t0 + 3_000, expected, timing);
    assert.deepEqual(effects, [{ kind: "heartbeat", echoTimestampMs: 5_555 }]);
  });

  it("the round-trip time comes from the echo of our own timestamp", () => {
    let state = streaming();
    [state] = senderStep(state, { kind: "heartbeat", heartbeat: { kind: "heartbeat", timestampMs: 42, echoTimestampMs: t0 + 100 } }, t0 + 137, expected, timing);
    assert.equal(state.rttMs, 37);
    assert.equal(state.heardAtMs, t0 + 137);
    // An echo from the future (a clock step) keeps the last measurement.
    [state] = senderStep(state, { kind: "heartbeat", heartbeat: { kind: "heartbeat", timestampMs: 43, echoTimestampMs: t0 + 999 } }, t0 + 200, expected, timing);
    assert.equal(state.rttMs, 37);
  });

  it("a heartbeat before the handshake closes the link", () => {
    const [state, effects] = senderStep(senderInitial(t0), { kind: "heartbeat", heartbeat: { kind: "heartbeat", timestampMs: 1, echoTimestampMs: 0 } }, t0, expected, timing);
    assert.equal(state.phase, "closed");
    assert.deepEqual(kinds(effects), ["close"]);
  });

  it("silence longer than the limit closes the link, while streaming or waiting for the hello", () => {
    const state = streaming(hello(), 150n, t0);
    const [alive, aliveEffects] = senderStep(state, { kind: "tick" }, t0 + timing.silenceMsMax, expected, timing);
    assert.equal(alive.phase, "streaming", "exactly the limit is still alive");
    assert.deepEqual(kinds(aliveEffects), ["heartbeat"]);
    const [dead, deadEffects] = senderStep(state, { kind: "tick" }, t0 + timing.silenceMsMax + 1, expected, timing);
    assert.equal(dead.phase, "closed");
    assert.deepEqual(kinds(deadEffects), ["close"]);
    const [waiting, waitingEffects] = senderStep(senderInitial(t0), { kind: "tick" }, t0 + 500, expected, timing);
    assert.deepEqual([waiting.phase, waitingEffects], ["awaitingHello", []], "no heartbeat before the handshake");
    const [silent] = senderStep(senderInitial(t0), { kind: "tick" }, t0 + timing.silenceMsMax + 1, expected, timing);
    assert.equal(silent.phase, "closed");
  });

  it("an ack resets the silence clock", () => {
    const [state] = senderStep(streaming(hello(), 150n, t0), { kind: "ack", ack: ack(100n, 100n, 90n) }, t0 + 9_000, expected, timing);
    const [alive] = senderStep(state, { kind: "tick" }, t0 + 15_000, expected, timing);
    assert.equal(alive.phase, "streaming");
  });

  it("the peer's reject closes with its reason; a protocol error closes", () => {
    const [state, effects] = senderStep(streaming(), { kind: "reject", reject: { kind: "reject", reason: "linkBusy", text: "busy" } }, t0, expected, timing);
    assert.equal(state.phase, "closed");
    assert.deepEqual(effects, [{ kind: "close", reason: "peer refused: linkBusy: busy", peerReject: "linkBusy" }]);
    const [errored, errorEffects] = senderStep(streaming(), { kind: "protocolError", reason: "records from a peer" }, t0, expected, timing);
    assert.equal(errored.phase, "closed");
    assert.deepEqual(errorEffects, [{ kind: "close", reason: "protocol error: records from a peer", peerReject: null }]);
  });

  it("once closed, nothing changes and nothing is done", () => {
    const [closed] = senderStep(streaming(), { kind: "protocolError", reason: "x" }, t0, expected, timing);
    for (const input of [{ kind: "tick" } as const, { kind: "ack", ack: ack(200n, 200n, 200n) } as const, { kind: "hello", hello: hello(), context: context() } as const]) {
      const [state, effects] = senderStep(closed, input, t0 + 60_000, expected, timing);
      assert.equal(state, closed);
      assert.deepEqual(effects, []);
    }
  });
});
