// NBD fuzzing against a real `lockstep serve` process (test/e2e/harness.ts TestNode): one
// connection per mutant, over the node's unix socket.
//
//   handshake mutant:    greeting ◀── mutated client flags and options ──▶ (replies) ── end
//   transmission mutant: valid handshake (GO, negotiated at random) ── mutated requests ── end
//                        (a share of them pipelined: handshake and requests in one write)
//
// After each mutant, whatever it did:
//   - the node is alive, and the server closed the connection within closeWaitMsMax of ours;
//   - with structured replies (self-delimiting), every whole request but DISC got exactly one
//     well-formed reply (fewer only when the server hung up on a broken rule);
//   - the image equals the fuzzer's model (nbd-oracle.ts): a mutant that carries no request a
//     correct server must run leaves every byte as it was; one that does changes exactly the
//     ranges it addressed, with exactly the bytes it sent;
//   - the group log: its head LSN moved by exactly the number of changes run (one record each),
//     and for a mutant that runs none the log file was not touched (size and mtime);
//   - a fresh connection reads a range back and gets the model's bytes (the probe).
// Every checkpointEvery mutants, and at the end: the sha256 of the image and of the log (equal
// to the previous ones when no change ran between), and nbdinfo (a real client) reads the size.
//
// The volume is 1 MiB with a position-dependent pattern, so a write that lands at the wrong
// place or with shifted bytes shows. A read-only export of it (snapshot fz@ro) takes a share of
// the mutants: there, nothing may ever change.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { logCheckpointFillRatio } from "../../src/constants.js";
import { command, magicSimpleReply, magicStructuredReply, replyFlagDone } from "../../src/nbd/protocol.js";
import { Random } from "../../src/sim/random.js";
import { fileStamp, residentBytes, runOk, sha256File, TestNode } from "../e2e/harness.js";
import { RawClient, writeThrough } from "../nbd/raw-client.js";
import { type Mutant, Mutator, mutantRandom, type Seed } from "./mutator.js";
import { applyChanges, type SessionTerms, type StreamExpectation, streamExpectation } from "./nbd-oracle.js";
import { handshakeSeeds, requestsSeed } from "./nbd-seeds.js";
import { pattern } from "./replication-seeds.js";
import { type Budget, budgetIndexes, countsText, countUp, FuzzFailure, fuzzLine, mebibytes } from "./report.js";

export const nbdCampaign = "nbd";
export const volumeBytes = 1024 * 1024;
export const closeWaitMsMax = 5_000; // the server ends a connection after the client's end
export const settleMsMax = 5_000; // changes run asynchronously: the image and log reach the model within this
export const checkpointEvery = 100; // mutants between sha256 checkpoints and nbdinfo probes
export const residentBytesMax = 1024 * 1024 * 1024; // the node's memory, checked at each checkpoint
const handshakeChance = 0.3;
const readOnlyChance = 0.25;
const pipelinedChance = 0.2;
const seedsPerMutant = 3;
const probeBytes = 4096;
const pollMs = 5;

const exportWritable = "fz";
const volumePattern = pattern(0, volumeBytes); // what valid writes carry: they restore it where zeroes went
const exportReadOnly = "fz@ro";

export interface NbdTarget {
  readonly node: TestNode;
  readonly imagePath: string;
  readonly logPath: string;
  readonly model: Buffer; // what the image must hold
}

// What the node's metrics say of the group log and of its NBD connections.
interface NodeState {
  readonly headLsn: number;
  readonly durableLsn: number;
  readonly usedBytes: number;
  readonly sizeBytes: number;
  readonly checkpoints: number;
  readonly nbdConnections: number;
}

export interface NbdCampaignResult {
  mutants: number;
  handshakeMutants: number;
  transmissionMutants: number;
  readOnlyMutants: number;
  pipelinedMutants: number; // sent in the same write as the handshake
  mutantsWithoutChange: number;
  mutantsWithChange: number;
  changesRun: number;
  bytesChangedByMutants: number; // within the addressed ranges
  hangUps: number; // mutants the oracle expected the server to hang up on
  repliesChecked: number; // replies counted and parsed (structured-reply sessions)
  probes: number;
  seedKinds: Map<string, number>;
  checkpoints: { imageSha256: string; logSha256: string; residentBytes: number }[];
}

// A write-ahead node (an acknowledged write is in the log before the image) with the volume,
// its pattern written by a valid client, and a read-only snapshot of it.
export async function nbdTargetStart(dir: string): Promise<NbdTarget> {
  const node = new TestNode(dir, { durability: "write-ahead", logLevel: "warn" });
  await node.start();
  const imagePath = await node.createVolume(exportWritable, `${volumeBytes}`);
  await writeThrough(node.socket, exportWritable, 0, volumePattern);
  const snapshot = await node.cli(["snapshot", "create", exportReadOnly]);
  if (snapshot.code !== 0) throw new Error(`snapshot create: ${snapshot.stderr}`);
  return { node, imagePath, logPath: join(node.dataDir, "groups", "g", "log"), model: Buffer.from(volumePattern) };
}

async function nodeState(node: TestNode): Promise<NodeState> {
  const text = await (await fetch(`${node.api!.url}/metrics`)).text();
  const samples = new Map(text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => [line.slice(0, line.lastIndexOf(" ")), Number(line.slice(line.lastIndexOf(" ") + 1))]));
  const value = (name: string) => samples.get(name) ?? Number.NaN;
  return {
    headLsn: value('lockstep_log_head_lsn{group="g"}'),
    durableLsn: value('lockstep_log_durable_lsn{group="g"}'),
    usedBytes: value('lockstep_log_used_bytes{group="g"}'),
    sizeBytes: value('lockstep_log_size_bytes{group="g"}'),
    checkpoints: value('lockstep_group_checkpoints_total{group="g"}'),
    nbdConnections: value("lockstep_nbd_connections"),
  };
}

// The replies of a structured-reply session: READ always comes as chunks, other commands may
// get a simple reply (16 bytes, no data then). How many requests were answered (a simple reply,
// or a chunk flagged DONE), and whether the bytes are malformed or end inside a reply.
function structuredReplies(bytes: Buffer): { answered: number; problem: string | null; partial: boolean } {
  let answered = 0;
  let at = 0;
  while (bytes.length - at >= 4) {
    const magic = bytes.readUInt32BE(at);
    if (magic === magicSimpleReply) {
      if (bytes.length - at < 16) break;
      answered += 1;
      at += 16;
    } else if (magic === magicStructuredReply) {
      if (bytes.length - at < 20 || bytes.length - at < 20 + bytes.readUInt32BE(at + 16)) break;
      if ((bytes.readUInt16BE(at + 4) & replyFlagDone) !== 0) answered += 1;
      at += 20 + bytes.readUInt32BE(at + 16);
    } else {
      return { answered, problem: `reply magic 0x${magic.toString(16)} at byte ${at}`, partial: false };
    }
  }
  return { answered, problem: null, partial: at < bytes.length };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// The first byte where the image differs from the model, and how many differ; null if equal.
function imageDifference(imagePath: string, model: Buffer): { first: number; count: number } | null {
  const image = readFileSync(imagePath);
  if (image.equals(model)) return null;
  let first = -1;
  let count = Math.abs(image.length - model.length);
  for (let at = 0; at < Math.min(image.length, model.length); at++) {
    if (image[at] === model[at]) continue;
    if (first < 0) first = at;
    count += 1;
  }
  return { first, count };
}

class NbdCampaign {
  readonly result: NbdCampaignResult = {
    mutants: 0,
    handshakeMutants: 0,
    transmissionMutants: 0,
    readOnlyMutants: 0,
    pipelinedMutants: 0,
    mutantsWithoutChange: 0,
    mutantsWithChange: 0,
    changesRun: 0,
    bytesChangedByMutants: 0,
    hangUps: 0,
    repliesChecked: 0,
    probes: 0,
    seedKinds: new Map(),
    checkpoints: [],
  };
  private headLsnExpected = 0;
  private logStamp = "";
  private logUsedAtSettle = Number.POSITIVE_INFINITY;
  private checkpointsAtSettle = -1;
  private changedSinceCheckpoint = false;

  constructor(
    private readonly target: NbdTarget,
    private readonly seed: number,
  ) {}

  async begin(): Promise<void> {
    const problem = imageDifference(this.target.imagePath, this.target.model);
    if (problem !== null) throw new Error(`the image does not hold its pattern before fuzzing (first difference at ${problem.first})`);
    await this.logSettle();
    await this.checkpoint();
  }

  async one(index: number): Promise<void> {
    const random = mutantRandom(this.seed, index);
    const handshake = random.chance(handshakeChance);
    const mutant = handshake ? this.handshakeMutant(random) : null;
    const outcome = mutant !== null ? await this.sendHandshake(mutant, index) : await this.sendTransmission(random, index);
    const fail = (problem: string) => new FuzzFailure(nbdCampaign, this.seed, index, outcome.mutant, problem);
    if (this.target.node.child?.exitCode !== null || this.target.node.child?.signalCode !== null) throw fail(`the node died: ${this.target.node.logTail()}`);
    await this.checkAfter(outcome.changes, fail);
    await this.probe(random, fail);
    this.result.mutants += 1;
    countUp(this.result.seedKinds, outcome.mutant.seedKind.split(":")[0]!);
    if ((index + 1) % checkpointEvery === 0) await this.checkpoint(fail);
  }

  private handshakeMutant(random: Random): Mutant {
    const seeds = handshakeSeeds([exportWritable, exportReadOnly, "nope"]);
    return new Mutator(random).mutate(seeds);
  }

  private async sendHandshake(mutant: Mutant, index: number): Promise<{ mutant: Mutant; changes: number }> {
    const client = await RawClient.connect(this.target.node.socket);
    try {
      await client.read(18); // the greeting
      client.write(mutant.bytes);
      await this.endAndWait(client, mutant, index);
    } finally {
      client.destroy();
    }
    this.result.handshakeMutants += 1;
    return { mutant, changes: 0 };
  }

  private async sendTransmission(random: Random, index: number): Promise<{ mutant: Mutant; changes: number }> {
    const readOnly = random.chance(readOnlyChance);
    const structured = random.chance(0.5);
    const meta = structured && random.chance(0.5);
    const blockSize = random.chance(0.5);
    const terms: SessionTerms = { size: volumeBytes, readOnly, blockSizeNegotiated: blockSize, canFastZero: true };
    const seeds: Seed[] = Array.from({ length: seedsPerMutant }, () => requestsSeed(random, { size: volumeBytes, structured, metaContext: meta }, volumePattern));
    const mutant = new Mutator(random).mutate(seeds);
    const expectation = streamExpectation(mutant.bytes, terms);
    const pipelined = random.chance(pipelinedChance);
    const client = await RawClient.connect(this.target.node.socket);
    const fail = (problem: string) => new FuzzFailure(nbdCampaign, this.seed, index, mutant, problem);
    try {
      const name = readOnly ? exportReadOnly : exportWritable;
      let repliesReadable = structured;
      if (pipelined) {
        // A hang-up may drop the handshake's replies with the rest: the server closes at once.
        const handshook = await client.handshakePipelined(name, { structured, meta, blockSize }, mutant.bytes).then(
          () => true,
          (error: Error) => {
            if (!expectation.hangUp) throw fail(`the pipelined handshake failed: ${error.message}`);
            return false;
          },
        );
        repliesReadable &&= handshook;
      } else {
        await client.handshake(name, { structured, meta, blockSize });
        client.write(mutant.bytes);
      }
      if (repliesReadable) await this.awaitReplies(client, expectation.replies);
      await this.endAndWait(client, mutant, index);
      if (repliesReadable) this.checkReplies(client, expectation, fail);
    } finally {
      client.destroy();
    }
    applyChanges(this.target.model, expectation.changes);
    this.result.transmissionMutants += 1;
    if (readOnly) this.result.readOnlyMutants += 1;
    if (pipelined) this.result.pipelinedMutants += 1;
    if (expectation.hangUp) this.result.hangUps += 1;
    this.result.bytesChangedByMutants += expectation.changes.reduce((sum, change) => sum + change.length, 0);
    return { mutant, changes: expectation.changes.length };
  }

  // Waits (bounded) until the server has answered `replies` requests or closed.
  private async awaitReplies(client: RawClient, replies: number): Promise<void> {
    const deadline = Date.now() + settleMsMax;
    while (structuredReplies(client.peek()).answered < replies && !(await client.ended(0)) && Date.now() < deadline) await sleep(pollMs);
  }

  private checkReplies(client: RawClient, expectation: StreamExpectation, fail: (problem: string) => FuzzFailure): void {
    const { answered, problem, partial } = structuredReplies(client.peek());
    if (problem !== null) throw fail(`a malformed reply: ${problem}`);
    if (expectation.hangUp ? answered > expectation.replies : answered !== expectation.replies || partial) {
      throw fail(`${answered} repl${answered === 1 ? "y" : "ies"}${partial ? " and a partial one" : ""} for ${expectation.replies} request(s) to answer${expectation.hangUp ? " before the hang-up" : ""}`);
    }
    this.result.repliesChecked += answered;
  }

  // Ends our side; the server must close the connection in bounded time (never hang).
  private async endAndWait(client: RawClient, mutant: Mutant, index: number): Promise<void> {
    client.socket.end();
    if (!(await client.ended(closeWaitMsMax))) throw new FuzzFailure(nbdCampaign, this.seed, index, mutant, `the server kept the connection open ${closeWaitMsMax} ms after the client ended it`);
  }

  // The image reaches the model, the log's head LSN moves by exactly `changes` records, and
  // (no change) the log file is untouched.
  private async checkAfter(changes: number, fail: (problem: string) => FuzzFailure): Promise<void> {
    this.headLsnExpected += changes;
    const deadline = Date.now() + settleMsMax;
    for (;;) {
      const difference = imageDifference(this.target.imagePath, this.target.model);
      const log = await nodeState(this.target.node);
      if (log.headLsn > this.headLsnExpected) throw fail(`the log holds ${log.headLsn - this.headLsnExpected} record(s) more than the changes the mutant may run (head LSN ${log.headLsn}, expected ${this.headLsnExpected})`);
      if (difference === null && log.headLsn === this.headLsnExpected && log.durableLsn === log.headLsn) break;
      if (Date.now() > deadline) {
        if (difference !== null) throw fail(`the image differs from the model: ${difference.count} byte(s), the first at offset ${difference.first} (${changes} change(s) expected)`);
        throw fail(`the log's head LSN is ${log.headLsn}, durable ${log.durableLsn}; expected ${this.headLsnExpected} (${changes} change(s))`);
      }
      await sleep(pollMs);
    }
    if (changes === 0) {
      this.result.mutantsWithoutChange += 1;
      if (fileStamp(this.target.logPath) !== this.logStamp) throw fail("the log file was written by a mutant that runs no change");
      return;
    }
    this.result.mutantsWithChange += 1;
    this.result.changesRun += changes;
    this.changedSinceCheckpoint = true;
    await this.logSettle();
  }

  // After changes: wait for a checkpoint they may have started, then take the log's stamp. A
  // checkpoint starts when a change leaves the log more than logCheckpointFillRatio full; it
  // releases records (used bytes fall), writes the superblock, and only then counts itself.
  private async logSettle(): Promise<void> {
    const deadline = Date.now() + settleMsMax;
    let log = await nodeState(this.target.node);
    if (this.checkpointsAtSettle < 0) this.checkpointsAtSettle = log.checkpoints; // the first settle
    const due = () => log.usedBytes > logCheckpointFillRatio * log.sizeBytes || log.usedBytes < this.logUsedAtSettle;
    while (due() && log.checkpoints === this.checkpointsAtSettle && Date.now() < deadline) {
      await sleep(pollMs);
      log = await nodeState(this.target.node);
    }
    this.checkpointsAtSettle = log.checkpoints;
    this.logUsedAtSettle = log.usedBytes;
    this.headLsnExpected = log.headLsn;
    this.logStamp = fileStamp(this.target.logPath);
  }

  // A fresh connection reads a range and gets the model's bytes.
  private async probe(random: Random, fail: (problem: string) => FuzzFailure): Promise<void> {
    const offset = random.below((volumeBytes - probeBytes) / 512) * 512;
    const client = await RawClient.connect(this.target.node.socket);
    try {
      await client.handshake(exportWritable, { structured: false });
      client.request(command.read, 7, offset, probeBytes);
      const reply = await client.reply(probeBytes);
      if (reply.errno !== 0 || !reply.payload.equals(this.target.model.subarray(offset, offset + probeBytes))) throw fail(`the probe read at ${offset} got errno ${reply.errno} or other bytes than the model`);
    } catch (error) {
      if (error instanceof FuzzFailure) throw error;
      throw fail(`the probe failed: ${(error as Error).message}`);
    } finally {
      client.destroy();
    }
    this.result.probes += 1;
  }

  // sha256 of the image and the log; unchanged since the last checkpoint if no change ran; and
  // a real client (nbdinfo) still sees the export.
  async checkpoint(fail: (problem: string) => Error = (problem) => new Error(problem)): Promise<void> {
    const imageSha256 = await sha256File(this.target.imagePath);
    const logSha256 = await sha256File(this.target.logPath);
    const last = this.result.checkpoints.at(-1);
    if (last !== undefined && !this.changedSinceCheckpoint && (last.imageSha256 !== imageSha256 || last.logSha256 !== logSha256)) {
      throw fail(`no change ran since the last checkpoint, yet the ${last.imageSha256 !== imageSha256 ? "image" : "log"} sha256 changed`);
    }
    const size = await runOk("nbdinfo", ["--size", this.target.node.uri(exportWritable)], { timeoutMs: 10_000 });
    if (Number(size.stdout.trim()) !== volumeBytes) throw fail(`nbdinfo reports size ${size.stdout.trim()}`);
    const resident = residentBytes(this.target.node.pid);
    if (resident > residentBytesMax) throw fail(`the node holds ${resident} bytes of memory (limit ${residentBytesMax})`);
    this.result.checkpoints.push({ imageSha256, logSha256, residentBytes: resident });
    this.changedSinceCheckpoint = false;
  }
}

export async function nbdLiveCampaign(target: NbdTarget, seed: number, budget: Budget): Promise<NbdCampaignResult> {
  const campaign = new NbdCampaign(target, seed);
  await campaign.begin();
  for (const index of budgetIndexes(budget)) await campaign.one(index);
  await campaign.checkpoint();
  const deadline = Date.now() + settleMsMax;
  while ((await nodeState(target.node)).nbdConnections !== 0) {
    if (Date.now() > deadline) throw new Error(`${(await nodeState(target.node)).nbdConnections} NBD connection(s) still open on the server after every client closed`);
    await sleep(pollMs);
  }
  return campaign.result;
}

export function nbdCampaignReport(result: NbdCampaignResult, seed: number, elapsedMs: number): void {
  const first = result.checkpoints[0]!;
  const last = result.checkpoints.at(-1)!;
  fuzzLine(`nbd (lockstep serve, seed ${seed}): ${result.mutants} mutants in ${(elapsedMs / 1000).toFixed(1)} s (${result.handshakeMutants} handshakes, ${result.transmissionMutants} request streams: ${result.readOnlyMutants} on a read-only export, ${result.pipelinedMutants} sent behind the handshake in one write), 0 crashes, 0 hangs, ${result.probes} probes answered`);
  fuzzLine(`nbd: ${result.mutantsWithoutChange} mutants ran no change: 0 bytes changed in the image, log untouched; ${result.mutantsWithChange} ran ${result.changesRun} valid writes/zeroes/trims (${result.bytesChangedByMutants} bytes addressed): 0 bytes changed outside them, 1 log record each`);
  fuzzLine(`nbd: ${result.repliesChecked} replies counted and parsed in structured sessions: one per request, none malformed; ${result.hangUps} mutants broke a rule the server hangs up on; 0 connections left open on the server; seeds: ${countsText(result.seedKinds)}`);
  fuzzLine(`nbd: sha256 at ${result.checkpoints.length} checkpoints; image ${first.imageSha256.slice(0, 16)}… → ${last.imageSha256.slice(0, 16)}…, log ${first.logSha256.slice(0, 16)}… → ${last.logSha256.slice(0, 16)}…; node resident memory ${mebibytes(first.residentBytes)} → ${mebibytes(last.residentBytes)} MiB (max ${mebibytes(Math.max(...result.checkpoints.map((checkpoint) => checkpoint.residentBytes)))})`);
}
