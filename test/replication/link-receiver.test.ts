// The replica's side of a link as a pure state machine (src/replication/link-receiver.ts): the
// phase rules (hello, then accept, then the stream), what a log stream and a resync stream may
// carry, the primary's identity and generation, heartbeats and silence.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RecordKind } from "../../src/log/record.js";
import { type Accept, type Hello, protocolVersionMax } from "../../src/replication/handshake.js";
import { type ReceiverEffect, type ReceiverExpectation, type ReceiverState, primaryHelloRefusal, receiverInitial, receiverStep, receiverTick } from "../../src/replication/link-receiver.js";
import type { Message } from "../../src/replication/message.js";
import { recordsDecode, recordsEncode } from "../../src/replication/records-batch.js";
import { chainedRecords } from "./generators.js";

const expected: ReceiverExpectation = { group: "db", primary: "site-a", generation: 4n };
const t0 = 1_700_000_000_000;
const silenceMsMax = 10_000;

function primaryHello(overrides: Partial<Hello> = {}): Hello {
  return { kind: "hello", versionMin: 1, versionMax: 1, role: "primary", generation: 4n, durableLsn: 500n, appliedLsn: 500n, durableChecksum: 7, node: "site-a", group: "db", ...overrides };
}

function accept(start: Accept["start"], overrides: Partial<Accept> = {}): Accept {
  return { kind: "accept", protocolVersion: 1, start, resumeLsn: 101n, previousChecksum: 9, logId: 77n, intervals: false, ...overrides };
}

const payload = Buffer.alloc(512, 1);
const records: Message = {
  kind: "records",
  records: recordsDecode(Buffer.concat(recordsEncode(chainedRecords(101n, 77n, 9, [{ fields: { kind: RecordKind.write, flags: 0, volumeId: 1, offset: 0, length: 512, generation: 4n, timestampMs: 1 }, payload }])))),
  ackNow: false,
  intervalEnd: false,
};
const heartbeat = (timestampMs: number, echoTimestampMs: number): Message => ({ kind: "heartbeat", timestampMs, echoTimestampMs });
const regionData: Message = { kind: "regionData", volumeId: 1, offset: 0, length: 512, data: null };
const bitmapRegions: Message = { kind: "bitmapRegions", regions: [{ volumeId: 1, offset: 0, length: 4096 }] };
const resyncEnd: Message = { kind: "resyncEnd", consistentLsn: 101n };
const volumeTable: Message = { kind: "volumeTable", atLsn: 100n, volumes: [{ volumeId: 1, name: "disk0", size: 1 << 20 }] };
const hashRequest: Message = { kind: "hashRequest", requestId: 1, volumeId: 1, regionBytes: 4096, count: 1, offset: 0, snapshot: null };

function kinds(effects: readonly ReceiverEffect[]): string[] {
  return effects.map((effect) => effect.kind);
}

function step(state: ReceiverState, message: Message, nowMs = t0): [ReceiverState, ReceiverEffect[]] {
  return receiverStep(state, message, nowMs, expected);
}

function streaming(start: Accept["start"]): ReceiverState {
  const [waiting, helloEffects] = step(receiverInitial(t0), primaryHello());
  assert.deepEqual(kinds(helloEffects), ["hello"]);
  assert.equal(waiting.phase, "awaitingAccept");
  const [state, effects] = step(waiting, accept(start));
  assert.deepEqual(effects, [{ kind: "begin", accept: accept(start) }]);
  assert.deepEqual([state.phase, state.start], ["streaming", start]);
  return state;
}

// The message is a protocol error: reject protocolError (for the primary's log), then close.
function assertProtocolError([state, effects]: [ReceiverState, ReceiverEffect[]]): void {
  assert.equal(state.phase, "closed");
  assert.deepEqual(kinds(effects), ["reject", "close"]);
  assert.equal((effects[0] as { reason: string }).reason, "protocolError");
}

describe("link receiver: the primary's hello", () => {
  it("accepts the configured primary, at our generation or a newer one", () => {
    assert.equal(primaryHelloRefusal(primaryHello(), expected), null);
    assert.equal(primaryHelloRefusal(primaryHello({ generation: 5n }), expected), null);
  });

  const cases: [string, Partial<Hello>, string][] = [
    ["no common version", { versionMin: protocolVersionMax + 1, versionMax: protocolVersionMax + 4 }, "versionMismatch"],
    ["another group", { group: "mail" }, "unknownGroup"],
    ["a secondary claiming to send the stream", { role: "secondary" }, "roleConflict"],
    ["another node than the accepted primary", { node: "site-x" }, "notConfiguredPrimary"],
    ["a stale generation (an old primary returning)", { generation: 3n }, "staleGeneration"],
  ];
  for (const [name, overrides, reason] of cases) {
    it(`refuses ${name}: reject ${reason}, close, no hello`, () => {
      assert.equal(primaryHelloRefusal(primaryHello(overrides), expected)?.reason, reason);
      const [state, effects] = step(receiverInitial(t0), primaryHello(overrides));
      assert.equal(state.phase, "closed");
      assert.deepEqual(kinds(effects), ["reject", "close"]);
      assert.equal((effects[0] as { reason: string }).reason, reason);
    });
  }
});

describe("link receiver: phase rules", () => {
  for (const message of [records, heartbeat(1, 0), accept("log"), volumeTable] as Message[]) {
    it(`${message.kind} before the primary's hello is a protocol error`, () => {
      assertProtocolError(step(receiverInitial(t0), message));
    });
  }

  for (const message of [records, heartbeat(1, 0), primaryHello(), regionData] as Message[]) {
    it(`${message.kind} between the hellos and the accept is a protocol error`, () => {
      const [waiting] = step(receiverInitial(t0), primaryHello());
      assertProtocolError(step(waiting, message));
    });
  }

  it("an accept of a version we do not speak is a protocol error", () => {
    const [waiting] = step(receiverInitial(t0), primaryHello());
    assertProtocolError(step(waiting, accept("log", { protocolVersion: protocolVersionMax + 1 })));
  });

  it("a reject closes in any phase, without answering it", () => {
    const refusal: Message = { kind: "reject", reason: "notConfiguredPeer", text: "who are you" };
    for (const state of [receiverInitial(t0), step(receiverInitial(t0), primaryHello())[0], streaming("log")]) {
      const [closed, effects] = step(state, refusal);
      assert.equal(closed.phase, "closed");
      assert.deepEqual(effects, [{ kind: "close", reason: "primary refused: notConfiguredPeer: who are you" }]);
    }
  });

  it("a log stream carries records, volume tables, hash requests and heartbeats", () => {
    const state = streaming("log");
    assert.deepEqual(kinds(step(state, records)[1]), ["records"]);
    assert.deepEqual(kinds(step(state, volumeTable)[1]), ["item"]);
    assert.deepEqual(kinds(step(state, hashRequest)[1]), ["item"]);
    const [afterHeartbeat, effects] = step(state, heartbeat(5, 0));
    assert.deepEqual(effects, []);
    assert.equal(afterHeartbeat.phase, "streaming");
  });

  for (const message of [regionData, bitmapRegions, resyncEnd]) {
    it(`${message.kind} in a log stream is refused`, () => {
      assertProtocolError(step(streaming("log"), message));
    });
  }

  for (const message of [primaryHello(), accept("log"), { kind: "ack", receivedLsn: 1n, durableLsn: 1n, appliedLsn: 1n }, { kind: "hashReply", requestId: 1, digests: Buffer.alloc(16) }] as Message[]) {
    it(`${message.kind} from the primary while streaming is refused`, () => {
      assertProtocolError(step(streaming("resync"), message));
    });
  }

  it("a resync stream: regions, region data, records alongside, and resyncEnd once", () => {
    let state = streaming("resync");
    let effects: ReceiverEffect[];
    [state, effects] = step(state, bitmapRegions);
    assert.deepEqual(effects, [], "the region list itself changes nothing on the replica");
    [state, effects] = step(state, regionData);
    assert.deepEqual(kinds(effects), ["item"]);
    [state, effects] = step(state, records);
    assert.deepEqual(kinds(effects), ["records"]);
    [state, effects] = step(state, volumeTable);
    assert.deepEqual(kinds(effects), ["item"]);
    assert.equal(state.resyncEnded, false);
    [state, effects] = step(state, resyncEnd);
    assert.deepEqual(kinds(effects), ["item"]);
    assert.equal(state.resyncEnded, true);
    assert.deepEqual(kinds(step(state, records)[1]), ["records"], "records go on after the resync");
    assertProtocolError(step(state, resyncEnd));
    assertProtocolError(step(state, regionData));
    assertProtocolError(step(state, bitmapRegions));
  });

  it("once closed, nothing changes", () => {
    const [closed] = step(receiverInitial(t0), records);
    const [state, effects] = step(closed, primaryHello());
    assert.equal(state, closed);
    assert.deepEqual(effects, []);
    assert.deepEqual(receiverTick(closed, t0 + 1e9, silenceMsMax), [closed, []]);
  });
});

describe("link receiver: heartbeats and silence", () => {
  it("records the primary's timestamp for the echo and measures the round trip from ours", () => {
    let state = streaming("log");
    [state] = step(state, heartbeat(123, 0), t0 + 10);
    assert.equal(state.rttMs, null);
    assert.deepEqual(receiverTick(state, t0 + 20, silenceMsMax)[1], [{ kind: "heartbeat", echoTimestampMs: 123 }]);
    [state] = step(state, heartbeat(124, t0 + 50), t0 + 71);
    assert.equal(state.rttMs, 21);
    assert.equal(state.heardAtMs, t0 + 71);
  });

  it("drops a primary silent for longer than the limit; any message counts as heard", () => {
    const state = streaming("log");
    assert.equal(receiverTick(state, t0 + silenceMsMax, silenceMsMax)[0].phase, "streaming");
    const [dead, effects] = receiverTick(state, t0 + silenceMsMax + 1, silenceMsMax);
    assert.equal(dead.phase, "closed");
    assert.deepEqual(kinds(effects), ["close"], "silence is not a protocol error: no reject");
    const [heard] = step(state, records, t0 + 9_000);
    assert.equal(receiverTick(heard, t0 + silenceMsMax + 1, silenceMsMax)[0].phase, "streaming");
  });

  it("no heartbeat before the stream, but silence counts from the start", () => {
    const [waiting] = step(receiverInitial(t0), primaryHello());
    assert.deepEqual(receiverTick(waiting, t0 + 1_000, silenceMsMax), [waiting, []]);
    assert.equal(receiverTick(receiverInitial(t0), t0 + silenceMsMax + 1, silenceMsMax)[0].phase, "closed");
  });
});
