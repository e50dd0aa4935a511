// A replica session (src/replication/replica-session.ts) driven by a scripted primary over a
// real TCP connection on 127.0.0.1, with a real replica on simulated disks behind it: an initial
// sync whose records follow the accept at once (while the replica is still restarting its log
// copy on disk), a reconnect that continues the log, and an accept that does not continue it.

import assert from "node:assert/strict";
import type { Socket } from "node:net";
import { after, describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { OperatingError } from "../../src/errors.js";
import type { Replica } from "../../src/group/replica.js";
import { systemClock } from "../../src/log/group-log.js";
import { RecordFlag, RecordKind, recordDecode, recordEncode } from "../../src/log/record.js";
import { silentLogger } from "../../src/logger.js";
import { FrameStream } from "../../src/replication/frame-stream.js";
import type { Hello } from "../../src/replication/handshake.js";
import type { Message, MessageToSend } from "../../src/replication/message.js";
import { ReplicaSession, ReplicaSessionSlot } from "../../src/replication/replica-session.js";
import { type Primary, primaryLogId, primaryWith, ReplicaDisks, SyncGate, volumeImage, volumeSize } from "../group/replica-fixture.js";
import { socketPair } from "./generators.js";


async function waitFor(condition: () => boolean, what: string, msMax = 10_000): Promise<void> {
  const startMs = Date.now();
  while (!condition()) {
    if (Date.now() - startMs > msMax) assert.fail(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

// The primary's end of one connection, scripted by the test.
class ScriptedPrimary {
  readonly messages: Message[] = [];
  readonly stream: FrameStream;
  closedWith: Error | null | undefined = undefined;

  constructor(socket: Socket) {
    this.stream = new FrameStream(socket, { message: (message) => void this.messages.push(message), closed: (error) => (this.closedWith = error) }, { messagesBytesMax: 1 << 20, nowMs: () => Date.now() });
  }

  // Buffered by the socket when its buffer is full (the test sends little; no need to wait).
  send(message: MessageToSend): void {
    this.stream.send(message);
  }

  async peerHello(): Promise<Hello> {
    await waitFor(() => this.messages.length > 0 || this.closedWith !== undefined, "the peer's hello");
    assert.equal(this.messages[0]?.kind, "hello", `the peer answered ${this.messages[0]?.kind ?? String(this.closedWith)}`);
    return this.messages[0] as Hello;
  }

  // What the peer sent, for failure messages.
  said(): string {
    return this.messages.map((message) => (message.kind === "reject" ? `reject ${message.reason} ${message.text}` : message.kind)).join(", ");
  }

  lastAck(): { durableLsn: bigint; appliedLsn: bigint } | null {
    const acks = this.messages.filter((message) => message.kind === "ack");
    return (acks.at(-1) as { durableLsn: bigint; appliedLsn: bigint } | undefined) ?? null;
  }

  sendRecords(primary: Primary, fromLsn: number, toLsn: number, batch: number, ackNow = false): void {
    for (let lsn = fromLsn; lsn <= toLsn; lsn += batch) {
      const last = Math.min(toLsn, lsn + batch - 1);
      this.send({ kind: "records", records: primary.records.slice(lsn - 1, last), ackNow: ackNow && last === toLsn, intervalEnd: false });
    }
  }
}

const disksMade: ReplicaDisks[] = [];
after(async () => {
  for (const disks of disksMade) await disks.remove();
});

async function connectSession(replica: Replica): Promise<{ primary: ScriptedPrimary; session: ReplicaSession }> {
  const [primarySocket, replicaSocket] = await socketPair();
  const session = new ReplicaSession(replicaSocket, { node: "site-b", replica, expected: { group: "g", primary: "site-a", generation: 1n }, logger: silentLogger, clock: systemClock });
  const primary = new ScriptedPrimary(primarySocket);
  return { primary, session };
}

function primaryHello(durableLsn: bigint, durableChecksum: number): MessageToSend {
  return { kind: "hello", versionMin: 1, versionMax: 1, role: "primary", generation: 1n, durableLsn, appliedLsn: durableLsn, durableChecksum, node: "site-a", group: "g" };
}

describe("replica session", () => {
  it("initial sync with records right behind the accept, then a reconnect that continues the log", async () => {
    const log = await primaryWith(120, 21);
    const disks = await ReplicaDisks.make();
    disksMade.push(disks);
    const { replica, volume } = await disks.open(true);
    replica.start();

    // Connection 1: resync from LSN 1; everything is sent at once behind the accept.
    const first = await connectSession(replica);
    first.primary.send(primaryHello(80n, log.records[79]!.checksum));
    const hello = await first.primary.peerHello();
    assert.deepEqual([hello.role, hello.node, hello.group, hello.durableLsn, hello.durableChecksum], ["secondary", "site-b", "g", 0n, 0]);
    first.primary.send({ kind: "accept", protocolVersion: 1, start: "resync", resumeLsn: 1n, previousChecksum: 0, logId: primaryLogId, intervals: false });
    // The primary's log also writes to a volume 2 that this replica's host never attached.
    first.primary.send({ kind: "volumeTable", atLsn: 0n, volumes: [{ volumeId: 1, name: "disk0", size: volumeSize }, { volumeId: 2, name: "disk1", size: volumeSize }] });
    first.primary.send({ kind: "bitmapRegions", regions: [{ volumeId: 1, offset: 0, length: volumeSize }] });
    first.primary.sendRecords(log, 1, 50, 7);
    first.primary.send({ kind: "regionData", volumeId: 1, offset: 0, length: volumeSize, data: log.images[50]! });
    await waitFor(() => replica.log.logId === primaryLogId, "the replica's log copy to restart");
    await sleep(20); // the rest comes after the accept has been acted on
    first.primary.sendRecords(log, 51, 80, 9, true);
    first.primary.send({ kind: "resyncEnd", consistentLsn: 80n });
    await waitFor(() => (first.primary.lastAck()?.durableLsn ?? 0n) >= 80n || first.primary.closedWith !== undefined, "the ack of LSN 80");
    assert.equal(first.primary.closedWith, undefined, `the session dropped a correct stream (it sent: ${first.primary.said()})`);
    await waitFor(() => replica.consistent && replica.appliedLsn === 80n, "the end of the resync");
    assert.ok((await volumeImage(volume)).equals(log.images[80]!));
    assert.equal(disks.tables.length, 1);
    first.primary.stream.close();
    await first.session.closed;

    // Connection 2: the replica says where it is; the primary continues its log.
    const second = await connectSession(replica);
    second.primary.send(primaryHello(120n, log.records[119]!.checksum));
    const again = await second.primary.peerHello();
    assert.deepEqual([again.durableLsn, again.durableChecksum], [80n, log.records[79]!.checksum]);
    second.primary.send({ kind: "accept", protocolVersion: 1, start: "log", resumeLsn: 81n, previousChecksum: log.records[79]!.checksum, logId: primaryLogId, intervals: false });
    second.primary.send({ kind: "volumeTable", atLsn: 80n, volumes: [{ volumeId: 1, name: "disk0", size: volumeSize }, { volumeId: 2, name: "disk1", size: volumeSize }] }); // every stream starts with one
    second.primary.sendRecords(log, 81, 120, 11, true);
    await waitFor(() => (second.primary.lastAck()?.appliedLsn ?? 0n) >= 120n || second.primary.closedWith !== undefined, "the ack of LSN 120 applied");
    assert.equal(second.primary.closedWith, undefined, `the session dropped a correct stream (it sent: ${second.primary.said()})`);
    assert.ok((await volumeImage(volume)).equals(log.images[120]!));
    second.primary.stream.close();
    await second.session.closed;

    // Connection 3: a log accept that does not continue the copy is refused.
    const third = await connectSession(replica);
    third.primary.send(primaryHello(120n, log.records[119]!.checksum));
    await third.primary.peerHello();
    third.primary.send({ kind: "accept", protocolVersion: 1, start: "log", resumeLsn: 100n, previousChecksum: log.records[98]!.checksum, logId: primaryLogId, intervals: false });
    const reason = await third.session.closed;
    assert.match(reason, /resumeLsn|field/);
    await waitFor(() => third.primary.closedWith !== undefined, "the primary's end");
    assert.deepEqual(
      third.primary.messages.find((message) => message.kind === "reject"),
      { kind: "reject", reason: "protocolError", text: "field" },
    );
    assert.equal(replica.log.headLsn, 120n, "nothing appended");

    // Connection 4: a write record without its data (a primary logs those only with no link to
    // ship them to) is refused, and nothing is appended.
    const fourth = await connectSession(replica);
    fourth.primary.send(primaryHello(121n, 0));
    await fourth.primary.peerHello();
    fourth.primary.send({ kind: "accept", protocolVersion: 1, start: "log", resumeLsn: 121n, previousChecksum: log.records[119]!.checksum, logId: primaryLogId, intervals: false });
    fourth.primary.send({ kind: "volumeTable", atLsn: 120n, volumes: [{ volumeId: 1, name: "disk0", size: volumeSize }] });
    const last = log.records[119]!;
    const { record: bytes } = recordEncode({ ...last, kind: RecordKind.write, flags: RecordFlag.dataOmitted, volumeId: 1, offset: 0, length: 4096, lsn: 121n, previousChecksum: last.checksum }, undefined);
    fourth.primary.send({ kind: "records", records: [recordDecode(bytes)], ackNow: true, intervalEnd: false });
    assert.match(await fourth.session.closed, /field/);
    await waitFor(() => fourth.primary.closedWith !== undefined, "the primary's end");
    assert.deepEqual(
      fourth.primary.messages.find((message) => message.kind === "reject"),
      { kind: "reject", reason: "protocolError", text: "field" },
    );
    assert.equal(replica.log.headLsn, 120n, "nothing appended");
    await replica.close();
  });

  // A replica streaming from LSN 1 whose log copy's syncs go through a SyncGate.
  async function streamingWithHeldSyncs(): Promise<{ log: Primary; replica: Replica; primary: ScriptedPrimary; session: ReplicaSession; gate: SyncGate }> {
    const log = await primaryWith(30, 23);
    const disks = await ReplicaDisks.make();
    disksMade.push(disks);
    const { replica } = await disks.open(true);
    replica.start();
    const gate = new SyncGate(disks.log);
    const { primary, session } = await connectSession(replica);
    primary.send(primaryHello(30n, log.records[29]!.checksum));
    await primary.peerHello();
    primary.send({ kind: "accept", protocolVersion: 1, start: "resync", resumeLsn: 1n, previousChecksum: 0, logId: primaryLogId, intervals: false });
    primary.send({ kind: "volumeTable", atLsn: 0n, volumes: [{ volumeId: 1, name: "disk0", size: volumeSize }, { volumeId: 2, name: "disk1", size: volumeSize }] });
    await waitFor(() => replica.log.logId === primaryLogId, "the replica's log copy to restart");
    return { log, replica, primary, session, gate };
  }

  it("sync frames: each is acknowledged once durable, and the frames behind one are appended while its sync runs", async () => {
    const { log, replica, primary, session, gate } = await streamingWithHeldSyncs();
    gate.hold = true;
    primary.sendRecords(log, 1, 10, 10, true);
    await waitFor(() => gate.entered > 0, "the log copy's sync of the first frame");
    primary.sendRecords(log, 11, 20, 10, true);
    primary.sendRecords(log, 21, 30, 10, true);
    // Before, the session waited for the first frame's sync before it read the next frame.
    await waitFor(() => replica.log.headLsn === 30n, "the frames behind the first to be appended while its sync runs");
    await sleep(30); // the acker's interval: it may say what moved, never more than is durable
    assert.ok((primary.lastAck()?.durableLsn ?? 0n) < 10n, `acknowledged before durable: ${primary.lastAck()?.durableLsn}`);
    const syncsHeld = gate.entered;
    gate.release();
    await waitFor(() => (primary.lastAck()?.durableLsn ?? 0n) === 30n || primary.closedWith !== undefined, "the ack of LSN 30");
    assert.equal(primary.closedWith, undefined, `the session dropped a correct stream (it sent: ${primary.said()})`);
    assert.equal(syncsHeld, 1, "one sync was running while the other frames were appended");
    primary.stream.close();
    await session.closed;
    await replica.close();
  });

  it("a sync frame whose log copy fails to sync ends the session, unacknowledged", async () => {
    const { log, replica, primary, session, gate } = await streamingWithHeldSyncs();
    gate.failWith = new OperatingError("DISK_IO", { what: "datasync replica log (injected)", errno: "EIO" });
    primary.sendRecords(log, 1, 10, 10, true);
    const reason = await session.closed;
    assert.ok(gate.entered > 0, "the log copy's sync ran");
    assert.match(reason, /injected/); // the failed log's error ends it
    await waitFor(() => primary.closedWith !== undefined, "the primary's end");
    assert.ok((primary.lastAck()?.durableLsn ?? 0n) < 10n, "nothing acknowledged as durable");
    await replica.close().catch(() => undefined);
  });
});

// A stand-in for a session: closed by the primary at once, its handler still running until
// the test lets it return.
class BusySession {
  readonly closed: Promise<string>;
  private close$!: (reason: string) => void;
  private handlerDone!: () => void;
  private readonly handler = new Promise<void>((resolve) => (this.handlerDone = resolve));
  constructor(readonly name: string, readonly started: string[]) {
    this.closed = new Promise((resolve) => (this.close$ = resolve));
    started.push(name);
  }
  close(reason: string): void {
    this.close$(reason);
  }
  async finished(): Promise<void> {
    await this.closed;
    await this.handler;
  }
  returnFromHandler(): void {
    this.handlerDone();
  }
}

describe("the replica's session slot", () => {
  it("a new connection waits for the last session's handler even after it closed, and only the newest waiting one starts", async () => {
    const slot = new ReplicaSessionSlot();
    const started: string[] = [];
    const sessions = new Map<string, BusySession>();
    const make = (name: string) => () => {
      const session = new BusySession(name, started);
      sessions.set(name, session);
      return session as unknown as ReplicaSession;
    };
    const first = slot.run(make("a"));
    await waitFor(() => sessions.has("a"), "the first session");
    sessions.get("a")!.close("the primary dropped the connection"); // closed, handler still busy
    assert.equal(await first, "the primary dropped the connection");
    assert.equal(slot.active, false);
    const second = slot.run(make("b"));
    const third = slot.run(make("c"));
    await sleep(10);
    assert.deepEqual(started, ["a"], "nothing starts while a's handler runs");
    sessions.get("a")!.returnFromHandler();
    assert.equal(await second, null, "b was superseded by c before it could start");
    await waitFor(() => sessions.has("c"), "the newest session");
    assert.deepEqual(started, ["a", "c"]);
    assert.equal(slot.active, true);
    slot.close("stopping");
    sessions.get("c")!.returnFromHandler();
    await slot.finished();
    assert.equal(await third, "stopping");
  });
});
