// Replication fuzzing against a real secondary `lockstep serve`: a primary and a secondary
// (test/e2e/replication-harness.ts Cluster) replicate a patterned volume; then the link is
// paused and the fuzzer dials the secondary itself, over TLS 1.3 with the primary's half of the
// link credential (io/link-tls.ts linkConnect, as the real primary does), and plays the
// primary with one mutant per connection, at one of three points of the handshake:
//
//   point 0: mutant ─────────────────────────────────────────────▶ (as frame 0)
//   point 1: hello ─▶ ◀─ hello   mutant ──────────────────────────▶ (as frame 1)
//   point 2: hello ─▶ ◀─ hello   accept (continues its log) ─▶ mutant (frames 2 …)
//   (at points 1 and 2, a share of the mutants goes pipelined: without waiting for the hello)
//
// Before sending, the fuzzer works out in process what a correct secondary does with the
// mutant (the same decoder and receiver state machine, and what the session then checks):
//
//   reject    a FrameError (reject protocolError, text = its reason) or a phase or hello
//             refusal (reject with the state machine's reason and text): the reject must come,
//             then the secondary closes;
//   close     a reject from us: the secondary closes without a frame;
//   harmless  a valid message that changes nothing (a hello, a heartbeat, an accept that
//             continues its log, a hash request) or a frame cut short: no reject may come;
//   unsafe    a valid message that would change the replica (records it would append, a volume
//             table, an accept that starts a resync): not sent, counted.
//
// After each mutant sent: the node is alive; a fresh connection gets the secondary's hello with
// the same durable LSN, checksum and applied LSN as before fuzzing; the image and the log file
// were not written (size and mtime). Every checkpointEvery mutants and at the end: the sha256 of
// the image and the log are the ones before fuzzing, and an NBD read of the secondary's
// read-only export returns the primary's pattern.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { command } from "../../src/nbd/protocol.js";
import { linkConnect } from "../../src/io/link-tls.js";
import { RecordKind } from "../../src/log/record.js";
import { superblockDecode, superblockSlotSize } from "../../src/log/superblock.js";
import { FrameDecoder } from "../../src/replication/frame-decoder.js";
import { FrameError } from "../../src/replication/frame-error.js";
import { type Frame, FrameEncoder } from "../../src/replication/frame.js";
import type { Accept, Hello } from "../../src/replication/handshake.js";
import { type LinkCredential, linkCredentialParse } from "../../src/replication/link-credential.js";
import { type ReceiverEffect, type ReceiverState, receiverInitial, receiverStep } from "../../src/replication/link-receiver.js";
import { type Message, messageDecode, messageEncode, type MessageToSend } from "../../src/replication/message.js";
import { Random } from "../../src/sim/random.js";
import { fileStamp, residentBytes, sha256File } from "../e2e/harness.js";
import { Cluster } from "../e2e/replication-harness.js";
import { RawClient, writeThrough } from "../nbd/raw-client.js";
import { type Mutant, Mutator, mutantRandom } from "./mutator.js";
import { expectationAfter } from "./replication-decoder-fuzz.js";
import { acceptContinuing, helloOfPrimary, pattern, replicationReseal, replicationSeeds, type StreamContext } from "./replication-seeds.js";
import { type Budget, budgetIndexes, countsText, countUp, FuzzFailure, fuzzLine, mebibytes } from "./report.js";

export const replicationCampaign = "replication-live";
export const volumeBytes = 1024 * 1024;
export const answerWaitMsMax = 5_000; // the secondary's hello, reject or close after a frame
export const checkpointEvery = 50; // mutants between sha256 checkpoints and NBD probes
export const residentBytesMax = 1024 * 1024 * 1024; // the secondary's memory, checked at each checkpoint
const seedStreamsMax = 12;
const pipelinedChance = 0.3; // at points 1 and 2: hello, accept and mutant sent without waiting
const nowMs = 1_700_000_000_000;

export interface ReplicationTarget {
  readonly cluster: Cluster;
  readonly credential: LinkCredential; // the primary's half
  readonly port: number;
  readonly imagePath: string; // the secondary's image of the volume
  readonly logPath: string; // the secondary's log copy
}

// A primary and a secondary in sync on a patterned volume; then the link paused, so that only
// the fuzzer dials the secondary.
export async function replicationTargetStart(dir: string): Promise<ReplicationTarget> {
  const cluster = await Cluster.start(dir, 1, { logLevel: "warn" }, { logLevel: "warn" });
  const { primary } = cluster;
  await primary.createVolume("fz", `${volumeBytes}`);
  await writeThrough(primary.socket, "fz", 0, pattern(0, volumeBytes));
  await cluster.link("secondary1", "async");
  await cluster.waitConsistent();
  await cluster.drain();
  const paused = await primary.cli(["link", "pause", "g", "secondary1"]);
  if (paused.code !== 0) throw new Error(`link pause: ${paused.stderr}`);
  const linkFile = join(primary.dataDir, "groups", "g", "links", "secondary1.json");
  const credential = linkCredentialParse(JSON.stringify((JSON.parse(readFileSync(linkFile, "utf8")) as { credential: unknown }).credential), linkFile);
  const secondary = cluster.secondary("secondary1");
  return { cluster, credential, port: cluster.replicationPort("secondary1"), imagePath: cluster.imagePath(secondary, "fz"), logPath: join(secondary.dataDir, "groups", "g", "log") };
}

// The log id of a log file, from its newer valid superblock.
function logIdOf(path: string): bigint {
  const slots = readFileSync(path).subarray(0, 2 * superblockSlotSize);
  const decoded = [0, 1].flatMap((slot) => {
    try {
      return [superblockDecode(slots.subarray(slot * superblockSlotSize, (slot + 1) * superblockSlotSize))];
    } catch {
      return [];
    }
  });
  return decoded.sort((a, b) => (a.sequence > b.sequence ? -1 : 1))[0]!.logId;
}

// One connection to the secondary, as its primary.
class LinkSession {
  private readonly decoder = new FrameDecoder();
  private readonly encoder = new FrameEncoder();
  readonly received: Message[] = [];
  decodeError: string | null = null;
  private isClosed = false;
  private wake: (() => void) | null = null;

  private constructor(private readonly socket: TLSSocket) {
    socket.on("data", (chunk: Buffer) => {
      try {
        for (const frame of this.decoder.push(chunk)) this.received.push(messageDecode(frame));
      } catch (error) {
        this.decodeError = (error as Error).message;
      }
      this.wake?.();
    });
    socket.on("close", () => {
      this.isClosed = true;
      this.wake?.();
    });
    socket.on("error", () => {});
  }

  static async open(target: ReplicationTarget): Promise<LinkSession> {
    return new LinkSession(await linkConnect(target.credential, "127.0.0.1", target.port));
  }

  get closed(): boolean {
    return this.isClosed;
  }

  send(message: MessageToSend): void {
    for (const part of this.encoder.encode(messageEncode(message))) this.socket.write(part);
  }

  sendBytes(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  // Waits until `done()` or the connection closes or the time is up; true if `done()`.
  async until(done: () => boolean, timeoutMs = answerWaitMsMax): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!done() && !this.isClosed && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
    return done();
  }

  async hello(): Promise<Hello | null> {
    await this.until(() => this.received.some((message) => message.kind !== "ack" && message.kind !== "heartbeat"));
    const answer = this.received.find((message) => message.kind === "hello");
    return answer?.kind === "hello" ? answer : null;
  }
}

// What a correct secondary does with a mutant at a point of the handshake (see the header).
// `answers`: what it may send before it closes, each "reason|text" of a reject, or "close" for
// a close without a frame. More than one because the network may cut the bytes anywhere: the
// secondary frames a whole socket chunk (frame checks), then decodes each of its messages
// (payload checks), and only then handles the first of them. So the first message it refuses
// (D), the first payload fault (P, if D comes before it, or in place of D) and a frame fault
// (F) can each be what it answers, depending on where the chunks end.
type Prediction =
  | { readonly kind: "answer"; readonly answers: ReadonlySet<string> }
  | { readonly kind: "harmless" }
  | { readonly kind: "unsafe"; readonly what: string };

const closeWithoutFrame = "close";

function receiverAt(point: number, context: StreamContext): ReceiverState {
  let state = receiverInitial(nowMs);
  const expected = { group: context.group, primary: context.primary, generation: context.generation };
  const prefix = [helloOfPrimary(context), acceptContinuing(context)].slice(0, point) as Message[];
  for (const message of prefix) state = receiverStep(state, message, nowMs, expected)[0];
  return state;
}

// One effect of the state machine, with what the session shell adds: it checks that an accept
// continues its log copy, and refuses records for volumes it has no table of (no volume table
// is sent before a mutant). Null: harmless.
function effectAnswer(effect: ReceiverEffect, message: Message, context: StreamContext): Prediction | null {
  switch (effect.kind) {
    case "reject":
      return { kind: "answer", answers: new Set([`${effect.reason}|${effect.text}`]) };
    case "close":
      return { kind: "answer", answers: new Set([closeWithoutFrame]) };
    case "begin": {
      const accept = effect.accept as Accept;
      if (accept.start === "resync") return { kind: "unsafe", what: "accept resync" };
      const continues = accept.logId === context.logId && accept.resumeLsn === context.headLsn + 1n && accept.previousChecksum === context.headChecksum;
      return continues ? null : { kind: "answer", answers: new Set(["protocolError|field"]) };
    }
    case "records": {
      if (message.kind !== "records") return null;
      const checked = message.records.some((record) => record.kind === RecordKind.write || record.kind === RecordKind.zero || record.kind === RecordKind.trim);
      return checked ? { kind: "answer", answers: new Set(["protocolError|field"]) } : { kind: "unsafe", what: "records" };
    }
    case "item":
      return message.kind === "hashRequest" ? null : { kind: "unsafe", what: message.kind };
    default:
      return null; // our hello, a heartbeat: harmless
  }
}

export function predict(bytes: Buffer, point: number, context: StreamContext): Prediction {
  const expected = { group: context.group, primary: context.primary, generation: context.generation };
  const decoder = new FrameDecoder({ sequenceFirst: BigInt(point) });
  const frames: Frame[] = [];
  let frameFault: string | null = null;
  try {
    frames.push(...decoder.push(bytes));
  } catch (error) {
    if (!(error instanceof FrameError)) throw error;
    frameFault = `protocolError|${error.reason}`;
  }
  let state = receiverAt(point, context);
  let expectation = point >= 2 ? expectationAfter(acceptContinuing(context) as Message, {}) : {};
  let decided: Prediction | null = null; // D: the first message the secondary refuses
  let payloadFault: string | null = null; // P
  for (const frame of frames) {
    let message: Message;
    try {
      message = messageDecode(frame, expectation);
    } catch (error) {
      if (!(error instanceof FrameError)) throw error;
      payloadFault = `protocolError|${error.reason}`;
      break;
    }
    expectation = expectationAfter(message, expectation);
    if (decided !== null) continue;
    const [next, effects] = receiverStep(state, message, nowMs, expected);
    state = next;
    for (const effect of effects) decided ??= effectAnswer(effect, message, context);
    if (decided?.kind === "unsafe") return decided; // it may be handled before any later fault
  }
  const decision = decided as Prediction | null; // (assigned in the loop: TypeScript narrows it to null)
  const answers = new Set([...(decision?.kind === "answer" ? decision.answers : []), ...(payloadFault === null ? [] : [payloadFault]), ...(frameFault === null ? [] : [frameFault])]);
  return answers.size === 0 ? { kind: "harmless" } : { kind: "answer", answers };
}

// For the figures: a frame fault by its FrameError reason, a phase error, a refused hello by its
// reject reason, or a close without a frame.
function answerCategory(answer: string): string {
  if (answer === closeWithoutFrame) return "closed without a frame";
  const [reason, text] = answer.split("|") as [string, string];
  if (reason !== "protocolError") return `hello refused: ${reason}`;
  return /^[a-zA-Z]+$/.test(text) ? text : "phase error";
}

export interface ReplicationCampaignResult {
  mutantsMade: number;
  sent: number;
  unsafeSkipped: number;
  byPoint: Map<string, number>;
  byPrediction: Map<string, number>;
  rejectReasons: Map<string, number>;
  unsafeKinds: Map<string, number>;
  probes: number;
  checkpoints: number;
  residentBytes: number[]; // the secondary's, at each checkpoint
  imageSha256: string;
  logSha256: string;
}

interface Baseline {
  readonly hello: Hello;
  readonly imageStamp: string;
  readonly logStamp: string;
  readonly imageSha256: string;
  readonly logSha256: string;
}

class ReplicationCampaign {
  readonly result: ReplicationCampaignResult = {
    mutantsMade: 0,
    sent: 0,
    unsafeSkipped: 0,
    byPoint: new Map(),
    byPrediction: new Map(),
    rejectReasons: new Map(),
    unsafeKinds: new Map(),
    probes: 0,
    checkpoints: 0,
    residentBytes: [],
    imageSha256: "",
    logSha256: "",
  };
  private baseline!: Baseline;
  private context!: StreamContext;

  constructor(
    private readonly target: ReplicationTarget,
    private readonly seed: number,
  ) {}

  async begin(): Promise<void> {
    const { credential } = this.target;
    const probe = await LinkSession.open(this.target);
    let hello: Hello | null;
    try {
      probe.send({ kind: "hello", versionMin: 1, versionMax: 1, role: "primary", generation: (1n << 64n) - 1n, durableLsn: 0n, appliedLsn: 0n, durableChecksum: 0, node: credential.self, group: credential.group });
      hello = await probe.hello();
    } finally {
      probe.destroy();
    }
    if (hello === null) throw new Error(`the secondary did not answer a valid hello: ${this.secondary.logTail()}`);
    this.context = {
      group: credential.group,
      primary: credential.self,
      secondary: credential.peer,
      generation: hello.generation,
      logId: logIdOf(this.target.logPath),
      headLsn: hello.durableLsn,
      headChecksum: hello.durableChecksum,
      volumes: [{ volumeId: 1, name: "fz", size: volumeBytes }], // the group's first volume; only hash requests use the id
    };
    this.baseline = {
      hello,
      imageStamp: fileStamp(this.target.imagePath),
      logStamp: fileStamp(this.target.logPath),
      imageSha256: await sha256File(this.target.imagePath),
      logSha256: await sha256File(this.target.logPath),
    };
    this.result.imageSha256 = this.baseline.imageSha256;
    this.result.logSha256 = this.baseline.logSha256;
    await this.checkpoint();
  }

  private get secondary() {
    return this.target.cluster.secondary("secondary1");
  }

  async one(index: number): Promise<void> {
    const random = mutantRandom(this.seed, index);
    const point = random.below(3);
    const seeds = replicationSeeds(new Random(random.next()), this.context, BigInt(point), seedStreamsMax);
    const mutant = new Mutator(random, replicationReseal(BigInt(point))).mutate(point === 0 ? seeds : seeds.filter((seed) => !seed.kind.startsWith("hello") || random.chance(0.2)));
    this.result.mutantsMade += 1;
    const prediction = predict(mutant.bytes, point, this.context);
    if (prediction.kind === "unsafe") {
      this.result.unsafeSkipped += 1;
      countUp(this.result.unsafeKinds, prediction.what);
      return;
    }
    const expectedText = prediction.kind === "answer" ? [...prediction.answers].join(" or ") : "no reject";
    const fail = (problem: string) => new FuzzFailure(replicationCampaign, this.seed, index, mutant, `point ${point}, expected ${expectedText}: ${problem}`);
    const pipelined = point >= 1 && random.chance(pipelinedChance);
    await this.sendMutant(mutant, point, pipelined, prediction, fail);
    this.result.sent += 1;
    countUp(this.result.byPoint, `point ${point}${pipelined ? " pipelined" : ""}`);
    countUp(this.result.byPrediction, prediction.kind === "answer" ? "refused" : "harmless");
    const node = this.secondary;
    if (node.child?.exitCode !== null || node.child?.signalCode !== null) throw fail(`the secondary died: ${node.logTail()}`);
    await this.probe(fail);
    if (this.result.sent % checkpointEvery === 0) await this.checkpoint(fail);
  }

  // pipelined: the hello, the accept and the mutant go without waiting for the secondary's hello.
  private async sendMutant(mutant: Mutant, point: number, pipelined: boolean, prediction: Prediction, fail: (problem: string) => FuzzFailure): Promise<void> {
    const session = await LinkSession.open(this.target);
    try {
      if (point >= 1) {
        session.send(helloOfPrimary(this.context));
        if (!pipelined && (await session.hello()) === null) throw fail(`no hello from the secondary before the mutant: ${session.received.map((message) => message.kind).join(",")}`);
      }
      if (point >= 2) session.send(acceptContinuing(this.context));
      session.sendBytes(mutant.bytes);
      if (prediction.kind === "harmless") session.end(); // the secondary waits for more otherwise
      const closed = await session.until(() => session.closed, answerWaitMsMax);
      if (!closed) throw fail(`the secondary kept the connection open ${answerWaitMsMax} ms`);
      if (session.decodeError !== null) throw fail(`the secondary sent a malformed frame: ${session.decodeError}`);
      const reject = session.received.find((message) => message.kind === "reject");
      const got = reject?.kind === "reject" ? `${reject.reason}|${reject.text}` : closeWithoutFrame;
      if (prediction.kind === "answer") {
        if (!prediction.answers.has(got)) throw fail(`the secondary answered ${got}`);
        countUp(this.result.rejectReasons, answerCategory(got));
      } else if (got !== closeWithoutFrame) {
        throw fail(`the secondary refused what it should take: ${got}`);
      }
    } finally {
      session.destroy();
    }
  }

  // A fresh connection gets the secondary's hello, at the same log position as before fuzzing;
  // nothing wrote the image or the log.
  private async probe(fail: (problem: string) => FuzzFailure): Promise<void> {
    const session = await LinkSession.open(this.target).catch((error: Error) => {
      throw fail(`the secondary refused a fresh connection: ${error.message}`);
    });
    let hello: Hello | null;
    try {
      session.send(helloOfPrimary(this.context));
      hello = await session.hello();
    } finally {
      session.destroy();
    }
    if (hello === null) throw fail("the secondary did not answer a valid hello");
    const before = this.baseline.hello;
    if (hello.durableLsn !== before.durableLsn || hello.durableChecksum !== before.durableChecksum || hello.appliedLsn !== before.appliedLsn || hello.generation !== before.generation) {
      throw fail(`the secondary's position moved: durable ${before.durableLsn} → ${hello.durableLsn}, applied ${before.appliedLsn} → ${hello.appliedLsn}, generation ${before.generation} → ${hello.generation}`);
    }
    if (fileStamp(this.target.imagePath) !== this.baseline.imageStamp) throw fail("the secondary's image was written");
    if (fileStamp(this.target.logPath) !== this.baseline.logStamp) throw fail("the secondary's log was written");
    this.result.probes += 1;
  }

  async checkpoint(fail: (problem: string) => Error = (problem) => new Error(problem)): Promise<void> {
    const problem = async (): Promise<string | null> => {
      if ((await sha256File(this.target.imagePath)) !== this.baseline.imageSha256) return "the secondary's image sha256 changed";
      if ((await sha256File(this.target.logPath)) !== this.baseline.logSha256) return "the secondary's log sha256 changed";
      const client = await RawClient.connect(this.secondary.socket);
      try {
        await client.handshake("fz");
        client.request(command.read, 1, 0, volumeBytes);
        const reply = await client.reply(volumeBytes);
        if (reply.errno !== 0 || !reply.payload.equals(pattern(0, volumeBytes))) return `an NBD read of the secondary's export got errno ${reply.errno} or other bytes than the primary's`;
      } finally {
        client.destroy();
      }
      const resident = residentBytes(this.secondary.pid);
      this.result.residentBytes.push(resident);
      return resident > residentBytesMax ? `the secondary holds ${resident} bytes of memory (limit ${residentBytesMax})` : null;
    };
    const found = await problem();
    if (found !== null) throw fail(found);
    this.result.checkpoints += 1;
  }
}

export async function replicationLiveCampaign(target: ReplicationTarget, seed: number, budget: Budget): Promise<ReplicationCampaignResult> {
  const campaign = new ReplicationCampaign(target, seed);
  await campaign.begin();
  for (const index of budgetIndexes(budget)) await campaign.one(index);
  await campaign.checkpoint();
  return campaign.result;
}

export function replicationCampaignReport(result: ReplicationCampaignResult, seed: number, elapsedMs: number): void {
  fuzzLine(`replication (secondary lockstep serve over TLS, seed ${seed}): ${result.sent} mutants sent in ${(elapsedMs / 1000).toFixed(1)} s (${countsText(result.byPoint)}), 0 crashes, 0 hangs, ${result.probes} fresh connections answered at the same log position`);
  fuzzLine(`replication: expected and got: ${countsText(result.byPrediction)}; rejects by reason: ${countsText(result.rejectReasons)}`);
  fuzzLine(`replication: ${result.unsafeSkipped} valid mutants not sent (they would change the replica: ${countsText(result.unsafeKinds) || "none"})`);
  fuzzLine(`replication: 0 bytes changed: image sha256 ${result.imageSha256.slice(0, 16)}… and log sha256 ${result.logSha256.slice(0, 16)}… unchanged at ${result.checkpoints} checkpoints; secondary resident memory ${mebibytes(result.residentBytes[0]!)} → ${mebibytes(result.residentBytes.at(-1)!)} MiB (max ${mebibytes(Math.max(...result.residentBytes))})`);
}
