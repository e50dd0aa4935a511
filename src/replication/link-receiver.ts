// The replica's side of one link as a pure state machine: which message may come when, and
// what it means. The shell (replication/replica-session.ts) appends records, applies items and
// writes frames; this decides.
//
//   awaitingHello ──primary's hello ok──▶ awaitingAccept ──accept──▶ streaming ──▶ closed
//                    (our hello sent)                   (log | resync)
//
// The peer must be the primary this node accepted for the group (its TLS certificate already
// named it; the hello must name the same node), with a generation not older than ours. In a
// `log` stream only records, volume tables, verify requests and heartbeats may come; the
// resync messages only after an accept with start `resync`, and resyncEnd once.

import type { Accept, Hello, Reject, RejectReasonName } from "./handshake.js";
import { protocolVersionChoose, protocolVersionMax, protocolVersionMin } from "./handshake.js";
import type { Message } from "./message.js";

export interface ReceiverExpectation {
  readonly group: string;
  readonly primary: string; // the node the accepted credential names
  readonly generation: bigint; // ours
}

export interface ReceiverState {
  readonly phase: "awaitingHello" | "awaitingAccept" | "streaming" | "closed";
  readonly start: Accept["start"] | null;
  readonly resyncEnded: boolean;
  readonly heardAtMs: number;
  readonly lastHeartbeatMs: number;
  readonly rttMs: number | null;
}

export type ReceiverEffect =
  | { readonly kind: "hello" } // answer with our hello
  | { readonly kind: "reject"; readonly reason: RejectReasonName; readonly text: string }
  | { readonly kind: "begin"; readonly accept: Accept } // log: check the log continues; resync: begin it
  | { readonly kind: "records" } // append (and ack now if asked)
  | { readonly kind: "item" } // region data, a volume table, the end of a resync: into the applier's stream
  | { readonly kind: "heartbeat"; readonly echoTimestampMs: number }
  | { readonly kind: "close"; readonly reason: string };

export function receiverInitial(nowMs: number): ReceiverState {
  return { phase: "awaitingHello", start: null, resyncEnded: false, heardAtMs: nowMs, lastHeartbeatMs: 0, rttMs: null };
}

export function primaryHelloRefusal(hello: Hello, expected: ReceiverExpectation): { reason: RejectReasonName; text: string } | null {
  if (protocolVersionChoose({ versionMin: protocolVersionMin, versionMax: protocolVersionMax }, hello) === null) {
    return { reason: "versionMismatch", text: `primary speaks ${hello.versionMin}..${hello.versionMax}` };
  }
  if (hello.group !== expected.group) return { reason: "unknownGroup", text: `no group ${hello.group} accepted from this primary` };
  if (hello.role !== "primary") return { reason: "roleConflict", text: `a ${hello.role} cannot send the stream` };
  if (hello.node !== expected.primary) return { reason: "notConfiguredPrimary", text: `${hello.node} is not the configured primary` };
  if (hello.generation < expected.generation) return { reason: "staleGeneration", text: `generation ${hello.generation} < ${expected.generation}` };
  return null;
}

function close(state: ReceiverState, reason: string, reject?: { reason: RejectReasonName; text: string }): [ReceiverState, ReceiverEffect[]] {
  const effects: ReceiverEffect[] = reject === undefined ? [] : [{ kind: "reject", ...reject }];
  effects.push({ kind: "close", reason });
  return [{ ...state, phase: "closed" }, effects];
}

const protocolError = (state: ReceiverState, text: string) => close(state, `protocol error: ${text}`, { reason: "protocolError", text });

export function receiverStep(state: ReceiverState, message: Message, nowMs: number, expected: ReceiverExpectation): [ReceiverState, ReceiverEffect[]] {
  if (state.phase === "closed") return [state, []];
  const heard = { ...state, heardAtMs: nowMs };
  if (message.kind === "reject") return close(heard, `primary refused: ${message.reason}: ${(message as Reject).text}`);
  switch (state.phase) {
    case "awaitingHello": {
      if (message.kind !== "hello") return protocolError(heard, `${message.kind} before hello`);
      const refusal = primaryHelloRefusal(message, expected);
      if (refusal !== null) return close(heard, `refused: ${refusal.reason}: ${refusal.text}`, refusal);
      return [{ ...heard, phase: "awaitingAccept" }, [{ kind: "hello" }]];
    }
    case "awaitingAccept": {
      if (message.kind !== "accept") return protocolError(heard, `${message.kind} before accept`);
      if (message.protocolVersion < protocolVersionMin || message.protocolVersion > protocolVersionMax) return protocolError(heard, `version ${message.protocolVersion}`);
      return [{ ...heard, phase: "streaming", start: message.start }, [{ kind: "begin", accept: message }]];
    }
    case "streaming":
      return streamingStep(heard, message, nowMs);
  }
}

function streamingStep(state: ReceiverState, message: Message, nowMs: number): [ReceiverState, ReceiverEffect[]] {
  switch (message.kind) {
    case "records":
      return [state, [{ kind: "records" }]];
    case "volumeTable":
    case "hashRequest":
      return [state, [{ kind: "item" }]];
    case "bitmapRegions":
    case "regionData":
    case "twinListRequest":
    case "twinCatalog":
    case "twinRegion":
      if (state.start !== "resync" || state.resyncEnded) return protocolError(state, `${message.kind} outside a resync`);
      return [state, message.kind === "bitmapRegions" ? [] : [{ kind: "item" }]];
    case "resyncEnd":
      if (state.start !== "resync" || state.resyncEnded) return protocolError(state, "resyncEnd outside a resync");
      return [{ ...state, resyncEnded: true }, [{ kind: "item" }]];
    case "heartbeat": {
      const echo = message.echoTimestampMs;
      const rttMs = echo > 0 && nowMs >= echo ? nowMs - echo : state.rttMs;
      return [{ ...state, lastHeartbeatMs: message.timestampMs, rttMs }, []];
    }
    default:
      return protocolError(state, `${message.kind} from the primary while streaming`);
  }
}

// The clock: drop a silent primary; otherwise offer a heartbeat (the shell sends it if idle).
export function receiverTick(state: ReceiverState, nowMs: number, silenceMsMax: number): [ReceiverState, ReceiverEffect[]] {
  if (state.phase === "closed") return [state, []];
  if (nowMs - state.heardAtMs > silenceMsMax) return close(state, `silent for ${nowMs - state.heardAtMs} ms`);
  return [state, state.phase === "streaming" ? [{ kind: "heartbeat", echoTimestampMs: state.lastHeartbeatMs }] : []];
}
