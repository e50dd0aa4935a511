// The replication decoder under mutants, in process: each mutant of valid frames (every message
// kind, short streams) is fed to a FrameDecoder in random chunks, every frame it yields to
// messageDecode (against what the stream expects next, as frame-stream.ts does), and every
// message to both link state machines. Each mutant must end in one of two ways:
//
//   a FrameError (the typed error)                      — counted by reason
//   frames that re-encode to exactly the bytes sent,    — counted as valid
//   messages that re-encode to exactly their payloads
//
// Anything else fails the campaign with the seed and the mutant in hex: another exception
// (an assertion, a RangeError), a non-canonical decode, a frame decoded from bytes that were
// not sent, an allocation beyond the largest frame payload, more than one frame buffered, or
// a mutant that takes longer than mutantMsMax to decode.

import { performance } from "node:perf_hooks";
import { linkSilenceMsMax } from "../../src/constants.js";
import { type Frame, frameEncode, frameHeaderSize } from "../../src/replication/frame.js";
import { FrameDecoder } from "../../src/replication/frame-decoder.js";
import { FrameError } from "../../src/replication/frame-error.js";
import { type ReceiverState, receiverInitial, receiverStep } from "../../src/replication/link-receiver.js";
import { type SenderInput, type SenderState, senderInitial, senderStep } from "../../src/replication/link-sender.js";
import { replicationFramePayloadSizeMax } from "../../src/replication/limits.js";
import { type Message, messageDecode, messageEncode } from "../../src/replication/message.js";
import type { RecordsExpectation } from "../../src/replication/records-batch.js";
import { Random } from "../../src/sim/random.js";
import { allocationSizes } from "../allocations.js";
import { type Mutant, Mutator, mutantRandom, type Seed } from "./mutator.js";
import { type Budget, budgetIndexes, countsText, countUp, FuzzFailure, fuzzLine } from "./report.js";
import { defaultStreamContext, replicationReseal, replicationSeeds, type StreamContext } from "./replication-seeds.js";

export const decoderCampaign = "replication-decoder";
export const mutantMsMax = 2_000; // one mutant's decode; far above the slowest legitimate (a 33 MiB frame)
export const chunkCutsMax = 4; // the mutant is pushed in up to this many + 1 chunks
const seedStreamsMax = 16;

export interface DecoderCampaignResult {
  mutants: number;
  frameErrors: number;
  valid: number; // mutants whose every frame decoded (and re-encoded canonically)
  framesDecoded: number;
  messagesByKind: Map<string, number>;
  reasons: Map<string, number>;
  allocationLargest: number;
  slowestMs: number;
}

// What happened to one mutant; a problem is a string (the campaign turns it into a failure).
interface MutantOutcome {
  readonly reason: string | null; // the FrameError's reason; null: decoded whole
  readonly frames: number;
  readonly kinds: readonly string[];
  readonly problem: string | null;
  readonly allocationLargest: number;
}

const timing = { silenceMsMax: linkSilenceMsMax };
const nowMs = 1_700_000_000_000;
const startContext = { tailLsn: 1n, headLsn: 100n, checksumAtPeerDurable: defaultStreamContext.headChecksum, bitmapActive: false, bitmapCoveredLsn: 0n, bitmapBaseLsn: null };

// Runs one decoded message through both pure state machines (either side may receive any
// kind from a peer). They must not throw: they decide, the shell acts.
function machinesStep(machines: { receiver: ReceiverState; sender: SenderState }, message: Message, context: StreamContext): void {
  machines.receiver = receiverStep(machines.receiver, message, nowMs, { group: context.group, primary: context.primary, generation: context.generation })[0];
  let input: SenderInput | null = null;
  if (message.kind === "hello") input = { kind: "hello", hello: message, context: startContext };
  else if (message.kind === "ack") input = { kind: "ack", ack: message };
  else if (message.kind === "heartbeat") input = { kind: "heartbeat", heartbeat: message };
  else if (message.kind === "reject") input = { kind: "reject", reject: message };
  if (input !== null) machines.sender = senderStep(machines.sender, input, nowMs, { group: context.group, peer: context.secondary, generation: context.generation }, timing)[0];
}

// Canonical: the frame re-encodes to the bytes it came from, the message to its payload.
function canonicalProblem(frame: Frame, message: Message, sent: Buffer): string | null {
  const again = Buffer.concat(frameEncode({ type: frame.type, flags: frame.flags, sequence: frame.sequence }, [frame.payload]));
  if (!again.equals(sent)) return `frame ${frame.sequence} decoded from bytes it does not re-encode to`;
  const encoded = messageEncode(message);
  if (encoded.type !== frame.type || encoded.flags !== frame.flags || !Buffer.concat(encoded.payload).equals(frame.payload)) {
    return `${message.kind} payload decoded but does not re-encode to the same bytes (not canonical)`;
  }
  return null;
}

// The chunks the mutant is pushed in (a socket cuts a stream anywhere).
function chunksOf(bytes: Buffer, random: Random): Buffer[] {
  const cuts = Array.from({ length: random.below(chunkCutsMax + 1) }, () => random.below(bytes.length + 1)).sort((a, b) => a - b);
  return [...cuts, bytes.length].map((cut, index, all) => bytes.subarray(index === 0 ? 0 : all[index - 1]!, cut));
}

// What the next records frame must continue, after `message` (as frame-stream.ts keeps it).
export function expectationAfter(message: Message, expectation: RecordsExpectation): RecordsExpectation {
  if (message.kind === "records") {
    const last = message.records[message.records.length - 1]!;
    return { firstLsn: last.lsn + 1n, previousChecksum: last.checksum, logId: last.logId };
  }
  if (message.kind === "accept") return { firstLsn: message.resumeLsn, previousChecksum: message.previousChecksum, logId: message.logId };
  return expectation;
}

export function decodeMutant(mutant: Mutant, random: Random, context: StreamContext, sequenceFirst: bigint): MutantOutcome {
  const decoder = new FrameDecoder({ sequenceFirst });
  const machines = { receiver: receiverInitial(nowMs), sender: senderInitial(nowMs) };
  let expectation: RecordsExpectation = {};
  let at = 0;
  const kinds: string[] = [];
  let reason: string | null = null;
  let problem: string | null = null;
  const sizes = allocationSizes(() => {
    try {
      for (const chunk of chunksOf(mutant.bytes, random)) {
        for (const frame of decoder.push(chunk)) {
          const size = frameHeaderSize + frame.payload.length;
          const message = messageDecode(frame, expectation);
          problem = canonicalProblem(frame, message, mutant.bytes.subarray(at, at + size));
          if (problem !== null) return;
          at += size;
          kinds.push(message.kind);
          expectation = expectationAfter(message, expectation);
          machinesStep(machines, message, context);
        }
      }
      decoder.end();
    } catch (error) {
      if (error instanceof FrameError) reason = error.reason;
      else problem = `not a FrameError: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`;
    }
  });
  const allocationLargest = Math.max(0, ...sizes);
  if (problem === null && allocationLargest > replicationFramePayloadSizeMax) problem = `allocated ${allocationLargest} bytes (limit ${replicationFramePayloadSizeMax})`;
  if (problem === null && decoder.bufferedBytes > frameHeaderSize + replicationFramePayloadSizeMax) problem = `decoder holds ${decoder.bufferedBytes} bytes`;
  return { reason, frames: kinds.length, kinds, problem, allocationLargest };
}

export function replicationDecoderCampaign(seed: number, budget: Budget, context: StreamContext = defaultStreamContext): DecoderCampaignResult {
  const sequenceFirst = 0n;
  const seeds: Seed[] = replicationSeeds(new Random(seed), context, sequenceFirst, seedStreamsMax);
  const reseal = replicationReseal(sequenceFirst);
  const result: DecoderCampaignResult = { mutants: 0, frameErrors: 0, valid: 0, framesDecoded: 0, messagesByKind: new Map(), reasons: new Map(), allocationLargest: 0, slowestMs: 0 };
  for (const index of budgetIndexes(budget)) {
    const random = mutantRandom(seed, index);
    const mutant = new Mutator(random, reseal).mutate(seeds);
    const started = performance.now();
    const outcome = decodeMutant(mutant, random, context, sequenceFirst);
    const elapsedMs = performance.now() - started;
    if (outcome.problem !== null) throw new FuzzFailure(decoderCampaign, seed, index, mutant, outcome.problem);
    if (elapsedMs > mutantMsMax) throw new FuzzFailure(decoderCampaign, seed, index, mutant, `decoding took ${elapsedMs.toFixed(0)} ms (limit ${mutantMsMax})`);
    result.mutants += 1;
    result.framesDecoded += outcome.frames;
    for (const kind of outcome.kinds) countUp(result.messagesByKind, kind);
    if (outcome.reason !== null) {
      result.frameErrors += 1;
      countUp(result.reasons, outcome.reason);
    } else {
      result.valid += 1;
    }
    result.allocationLargest = Math.max(result.allocationLargest, outcome.allocationLargest);
    result.slowestMs = Math.max(result.slowestMs, elapsedMs);
  }
  return result;
}

export function decoderCampaignReport(result: DecoderCampaignResult, seed: number, elapsedMs: number): void {
  fuzzLine(`replication decoder (in process, seed ${seed}): ${result.mutants} mutants in ${(elapsedMs / 1000).toFixed(1)} s, ${result.frameErrors} malformed (FrameError), ${result.valid} still valid and canonical, 0 crashes, 0 untyped errors, 0 non-canonical decodes`);
  fuzzLine(`replication decoder: FrameError reasons: ${countsText(result.reasons)}`);
  fuzzLine(`replication decoder: frames that decoded, by kind: ${countsText(result.messagesByKind)}`);
  fuzzLine(`replication decoder: largest allocation ${result.allocationLargest} bytes (limit ${replicationFramePayloadSizeMax}), slowest mutant ${result.slowestMs.toFixed(1)} ms (limit ${mutantMsMax})`);
}
