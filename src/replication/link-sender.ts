// The primary's side of one link as a pure state machine: it takes what happened (the peer's
// hello, an ack, a heartbeat, a batch sent, the clock) and returns its new state and what to do
// (send, start streaming, close). No socket, clock or file here: the shell
// (replication/primary-link.ts) reads the log, reads regions and writes frames.
//
//   awaitingHello ──hello ok──▶ streaming ──fault / silence / reject──▶ closed
//        └──────hello refused (reject sent)──────────────────────────▶ closed
//
// Resume (docs/PROTOCOL.md §4.1–4.2): the peer's hello names the last LSN it has durable and
// that record's checksum. If the primary still holds the records after it, and its own record
// at that LSN has the same checksum (the same history), the link continues from there
// (`log`). Otherwise, or while the link's dirty bitmap is active, it starts with a resync.

import { assert } from "../assert.js";
import type { AcceptStart, Hello, Reject, RejectReasonName } from "./handshake.js";
import { protocolVersionChoose, protocolVersionMax, protocolVersionMin } from "./handshake.js";
import type { Ack, Heartbeat } from "./progress.js";

export interface SenderExpectation {
  readonly group: string;
  readonly peer: string; // the node the link's credential names
  readonly generation: bigint; // ours
}

// What the log and the link's bitmap say when the hello arrives (the shell looks it up).
export interface StartContext {
  readonly tailLsn: bigint; // the oldest record still in the log
  readonly headLsn: bigint;
  readonly checksumAtPeerDurable: number | null; // our record at the peer's durableLsn (null: not in the log)
  readonly bitmapActive: boolean; // the link has a dirty bitmap to resync
  readonly bitmapCoveredLsn: bigint; // records through this LSN are in the bitmap
  // The bitmap holds what the peer lacks beyond this LSN (it had everything through it when the
  // bitmap began); null: the bitmap holds every allocated region (an initial sync).
  readonly bitmapBaseLsn: bigint | null;
}

export type StartDecision =
  | { readonly start: "log"; readonly resumeLsn: bigint }
  | { readonly start: "resync"; readonly resumeLsn: bigint; readonly seedAllocated: boolean };

export interface SenderState {
  readonly phase: "awaitingHello" | "streaming" | "closed";
  readonly start: AcceptStart | null;
  readonly sentLsn: bigint; // the last LSN sent on this connection (resumeLsn − 1 at first)
  readonly receivedLsn: bigint; // the peer's last ack
  readonly durableLsn: bigint;
  readonly appliedLsn: bigint;
  readonly heardAtMs: number;
  readonly lastHeartbeatMs: number; // timestampMs of the peer's last heartbeat, for the echo
  readonly rttMs: number | null;
}

export type SenderInput =
  | { readonly kind: "hello"; readonly hello: Hello; readonly context: StartContext }
  | { readonly kind: "ack"; readonly ack: Ack }
  | { readonly kind: "heartbeat"; readonly heartbeat: Heartbeat }
  | { readonly kind: "reject"; readonly reject: Reject }
  | { readonly kind: "sent"; readonly lastLsn: bigint }
  | { readonly kind: "protocolError"; readonly reason: string }
  | { readonly kind: "tick" };

export type SenderEffect =
  | { readonly kind: "reject"; readonly reason: RejectReasonName; readonly text: string }
  | { readonly kind: "accept"; readonly protocolVersion: number; readonly decision: StartDecision }
  | { readonly kind: "progress" } // the peer's acks moved: wake sync waiters, drain, release
  | { readonly kind: "heartbeat"; readonly echoTimestampMs: number }
  | { readonly kind: "close"; readonly reason: string; readonly peerReject: RejectReasonName | null };

export interface SenderTiming {
  readonly silenceMsMax: number;
}

export function senderInitial(nowMs: number): SenderState {
  return { phase: "awaitingHello", start: null, sentLsn: 0n, receivedLsn: 0n, durableLsn: 0n, appliedLsn: 0n, heardAtMs: nowMs, lastHeartbeatMs: 0, rttMs: null };
}

// Why the primary refuses a peer's hello, or null.
export function helloRefusal(hello: Hello, expected: SenderExpectation): { reason: RejectReasonName; text: string } | null {
  if (protocolVersionChoose({ versionMin: protocolVersionMin, versionMax: protocolVersionMax }, hello) === null) {
    return { reason: "versionMismatch", text: `peer speaks ${hello.versionMin}..${hello.versionMax}` };
  }
  if (hello.group !== expected.group) return { reason: "unknownGroup", text: `link is for group ${expected.group}, peer said ${hello.group}` };
  if (hello.node !== expected.peer) return { reason: "notConfiguredPeer", text: `link is to ${expected.peer}, peer said ${hello.node}` };
  if (hello.role !== "secondary") return { reason: "roleConflict", text: `peer is a ${hello.role}` };
  if (hello.generation > expected.generation) return { reason: "staleGeneration", text: `our generation ${expected.generation} < peer's ${hello.generation}` };
  if (hello.appliedLsn > hello.durableLsn) return { reason: "protocolError", text: "appliedLsn > durableLsn" };
  return null;
}

// Where the stream starts for a peer at hello.durableLsn.
export function startChoose(hello: Hello, context: StartContext): StartDecision {
  if (context.bitmapActive) {
    // A peer that holds less than the bitmap assumes (its disks were replaced, say) needs all.
    const peerBehindBase = context.bitmapBaseLsn !== null && hello.durableLsn < context.bitmapBaseLsn;
    if (peerBehindBase) return { start: "resync", resumeLsn: context.headLsn + 1n, seedAllocated: true };
    // A peer that already holds records past the bitmap's coverage (an earlier resync streamed
    // them) keeps its log copy and continues it; the bitmap's regions come alongside.
    if (hello.durableLsn > context.bitmapCoveredLsn) {
      const sameHistory = hello.durableLsn <= context.headLsn && context.checksumAtPeerDurable !== null && context.checksumAtPeerDurable === hello.durableChecksum;
      if (!sameHistory) return { start: "resync", resumeLsn: context.headLsn + 1n, seedAllocated: true };
      return { start: "resync", resumeLsn: hello.durableLsn + 1n, seedAllocated: false };
    }
    return { start: "resync", resumeLsn: context.bitmapCoveredLsn + 1n, seedAllocated: false };
  }
  const peerDurable = hello.durableLsn;
  const sameHistory =
    peerDurable <= context.headLsn &&
    peerDurable + 1n >= context.tailLsn &&
    context.checksumAtPeerDurable !== null &&
    context.checksumAtPeerDurable === hello.durableChecksum;
  if (sameHistory) return { start: "log", resumeLsn: peerDurable + 1n };
  // A new peer, one whose records we released without a bitmap, or another history.
  return { start: "resync", resumeLsn: context.headLsn + 1n, seedAllocated: true };
}

export function senderStep(state: SenderState, input: SenderInput, nowMs: number, expected: SenderExpectation, timing: SenderTiming): [SenderState, SenderEffect[]] {
  if (state.phase === "closed") return [state, []];
  switch (input.kind) {
    case "hello": {
      if (state.phase !== "awaitingHello") return close(state, "hello after the handshake", null);
      const refusal = helloRefusal(input.hello, expected);
      if (refusal !== null) return [{ ...state, phase: "closed" }, [{ kind: "reject", ...refusal }, { kind: "close", reason: `refused: ${refusal.reason}: ${refusal.text}`, peerReject: null }]];
      const protocolVersion = protocolVersionChoose({ versionMin: protocolVersionMin, versionMax: protocolVersionMax }, input.hello)!;
      const decision = startChoose(input.hello, input.context);
      const baseline = decision.start === "log" ? input.hello.durableLsn : decision.resumeLsn - 1n;
      const applied = decision.start === "log" ? input.hello.appliedLsn : 0n;
      return [
        { ...state, phase: "streaming", start: decision.start, sentLsn: decision.resumeLsn - 1n, receivedLsn: baseline, durableLsn: baseline, appliedLsn: applied, heardAtMs: nowMs },
        [{ kind: "accept", protocolVersion, decision }],
      ];
    }
    case "ack":
      return ackStep(state, input.ack, nowMs);
    case "heartbeat": {
      if (state.phase !== "streaming") return close(state, "heartbeat before the handshake", null);
      const echo = input.heartbeat.echoTimestampMs;
      const rttMs = echo > 0 && nowMs >= echo ? nowMs - echo : state.rttMs;
      return [{ ...state, heardAtMs: nowMs, lastHeartbeatMs: input.heartbeat.timestampMs, rttMs }, []];
    }
    case "reject":
      return close(state, `peer refused: ${input.reject.reason}: ${input.reject.text}`, input.reject.reason);
    case "sent":
      assert(state.phase === "streaming" && input.lastLsn > state.sentLsn, "records sent in order while streaming");
      return [{ ...state, sentLsn: input.lastLsn }, []];
    case "protocolError":
      return close(state, `protocol error: ${input.reason}`, null);
    case "tick":
      return tickStep(state, nowMs, timing);
  }
}

function close(state: SenderState, reason: string, peerReject: RejectReasonName | null): [SenderState, SenderEffect[]] {
  return [{ ...state, phase: "closed" }, [{ kind: "close", reason, peerReject }]];
}

// An ack never goes back, never claims more than was sent, and keeps applied ≤ durable ≤ received.
function ackStep(state: SenderState, ack: Ack, nowMs: number): [SenderState, SenderEffect[]] {
  if (state.phase !== "streaming") return close(state, "ack before the handshake", null);
  if (ack.receivedLsn > state.sentLsn) return close(state, `ack of LSN ${ack.receivedLsn} beyond the last sent ${state.sentLsn}`, null);
  if (ack.receivedLsn < state.receivedLsn || ack.durableLsn < state.durableLsn || ack.appliedLsn < state.appliedLsn) {
    return close(state, "ack went backwards", null);
  }
  // Every ack is progress, even one that repeats: the first ack of a resync that had nothing
  // to send is what tells the primary the peer applied its (empty) end.
  const next = { ...state, receivedLsn: ack.receivedLsn, durableLsn: ack.durableLsn, appliedLsn: ack.appliedLsn, heardAtMs: nowMs };
  return [next, [{ kind: "progress" }]];
}

function tickStep(state: SenderState, nowMs: number, timing: SenderTiming): [SenderState, SenderEffect[]] {
  if (nowMs - state.heardAtMs > timing.silenceMsMax) return close(state, `silent for ${nowMs - state.heardAtMs} ms`, null);
  if (state.phase === "streaming") return [state, [{ kind: "heartbeat", echoTimestampMs: state.lastHeartbeatMs }]];
  return [state, []];
}
