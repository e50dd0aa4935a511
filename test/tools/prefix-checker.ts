// Checks that a volume image equals the state after SOME prefix of prefix-workload.py's writes:
// the property a replica must keep at every instant, not only once it has caught up.
//
// Each non-zero block names the write that produced it (the layout is in prefix-workload.py;
// blockOf and blockContent here must match it byte for byte, and a test runs both). Let t_b be
// the write a block holds (0: all zeros, never written). The image is the state after writes
// 1..P iff every block holds the last write to it numbered ≤ P. Write numbers are unique, so P
// can only be m = max t_b, and the image is that state iff no write numbered ≤ m is missing,
// i.e. replaying blockOf for 1..m finds no write i with i > t_blockOf(i). The replay keeps one
// u32 per block, never one entry per write.
//
// With a queue depth Q > 1 the workload orders only writes Q or more apart (and writes to one
// block), so the writes in (m - Q, m) may be missing: the image is valid iff every write ≤ m - Q
// is present. The verdict reports the interval: prefixMin = the longest complete prefix,
// prefixMax = m; with Q = 1 a valid image has prefixMin = prefixMax.
//
// The image must be a point-in-time sample (a stopped writer, a snapshot, a paused apply):
// reading a live volume block by block can tear across writes and fail a correct replica.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { crc32 } from "node:zlib";
import { assert } from "../../src/assert.js";

export const blockSize = 4096;
export const blockHeaderSize = 24;
export const blockMagic = 0x5750534c; // "LSPW"
export const blockFormatVersion = 1;
export const writeNumberMax = 0xffff_ffff; // u32 in the block and in blockOf
export const blocksMax = 1 << 20; // 4 GiB of volume
export const queueDepthMax = 64;

export interface PrefixVerdict {
  ok: boolean;
  prefixMin: number; // every write ≤ prefixMin is in the image
  prefixMax: number; // no write > prefixMax is in the image
  reason?: string;
  block?: number;
}

// The finaliser of MurmurHash3: a bijection on u32 that mixes every input bit.
function mix32(input: number): number {
  let value = input >>> 0;
  value = (value ^ (value >>> 16)) >>> 0;
  value = Math.imul(value, 0x85ebca6b) >>> 0;
  value = (value ^ (value >>> 13)) >>> 0;
  value = Math.imul(value, 0xc2b2ae35) >>> 0;
  return (value ^ (value >>> 16)) >>> 0;
}

function assertParameters(seed: number, blocks: number): void {
  assert(Number.isInteger(seed) && seed >= 0 && seed <= 0xffff_ffff, "seed is a u32");
  assert(Number.isInteger(blocks) && blocks > 0 && blocks <= blocksMax, "0 < blocks ≤ blocksMax");
}

export function blockOf(seed: number, writeNumber: number, blocks: number): number {
  return mix32(mix32(seed ^ 0x9e3779b9) ^ writeNumber) % blocks;
}

export function blockContent(seed: number, block: number, writeNumber: number): Buffer {
  assert(Number.isInteger(writeNumber) && writeNumber >= 1 && writeNumber <= writeNumberMax, "1 ≤ writeNumber ≤ writeNumberMax");
  const content = Buffer.alloc(blockSize);
  content.writeUInt32LE(blockMagic, 4);
  content.writeUInt32LE(blockFormatVersion, 8);
  content.writeUInt32LE(seed, 12);
  content.writeUInt32LE(block, 16);
  content.writeUInt32LE(writeNumber, 20);
  const identity = content.subarray(4, blockHeaderSize);
  createHash("shake128", { outputLength: blockSize - blockHeaderSize }).update(identity).digest().copy(content, blockHeaderSize);
  content.writeUInt32LE(crc32(content.subarray(4)), 0);
  return content;
}

const zeroBlock = Buffer.alloc(blockSize);

// The write a block holds (0: never written), or why it holds none.
function readTag(data: Buffer, seed: number, block: number, blocks: number, writesMax: number): number | string {
  if (data.equals(zeroBlock)) return 0;
  if (crc32(data.subarray(4)) !== data.readUInt32LE(0)) return "torn or corrupt: checksum mismatch";
  if (data.readUInt32LE(4) !== blockMagic || data.readUInt32LE(8) !== blockFormatVersion) return "not a workload block (magic or version)";
  if (data.readUInt32LE(12) !== seed) return `written with seed ${data.readUInt32LE(12)}, not ${seed}`;
  if (data.readUInt32LE(16) !== block) return `holds block ${data.readUInt32LE(16)}'s data (misdirected write)`;
  const writeNumber = data.readUInt32LE(20);
  if (writeNumber === 0 || writeNumber > writesMax) return `holds write ${writeNumber}, beyond the ${writesMax} that may have been issued`;
  if (blockOf(seed, writeNumber, blocks) !== block) return `holds write ${writeNumber}, which never went to this block`;
  if (!data.equals(blockContent(seed, block, writeNumber))) return `differs from write ${writeNumber}'s content`;
  return writeNumber;
}

// image: a point-in-time sample of the volume (blocks × 4 KiB). writesMax: an upper bound on the
// writes that may have reached the primary (the workload's issued count at or after sampling).
export function checkPrefix(image: Buffer, seed: number, blocks: number, writesMax: number, queueDepth = 1): PrefixVerdict {
  assertParameters(seed, blocks);
  assert(image.length === blocks * blockSize, "the image holds exactly `blocks` blocks");
  assert(Number.isInteger(writesMax) && writesMax >= 0 && writesMax <= writeNumberMax, "0 ≤ writesMax ≤ writeNumberMax");
  assert(Number.isInteger(queueDepth) && queueDepth >= 1 && queueDepth <= queueDepthMax, "1 ≤ queueDepth ≤ queueDepthMax");
  const tags = new Uint32Array(blocks);
  let newest = 0;
  for (let block = 0; block < blocks; block++) {
    const tag = readTag(image.subarray(block * blockSize, (block + 1) * blockSize), seed, block, blocks, writesMax);
    if (typeof tag === "string") return { ok: false, prefixMin: 0, prefixMax: 0, reason: `block ${block} ${tag}`, block };
    tags[block] = tag;
    newest = Math.max(newest, tag);
  }
  for (let writeNumber = 1; writeNumber <= newest; writeNumber++) {
    const block = blockOf(seed, writeNumber, blocks);
    if (writeNumber <= tags[block]!) continue; // present, or overwritten by a later write that is
    const verdict = { prefixMin: writeNumber - 1, prefixMax: newest };
    if (newest - verdict.prefixMin <= queueDepth) return { ok: true, ...verdict };
    return { ok: false, ...verdict, block, reason: `write ${writeNumber} (block ${block}) is missing, yet write ${newest} is present (queue depth ${queueDepth})` };
  }
  return { ok: true, prefixMin: newest, prefixMax: newest };
}

// A prefix that also holds every write acknowledged before sampling: the check for the
// primary itself, or for a replica that must have caught up (acknowledgedMin = the final count).
export function checkPrefixAtLeast(image: Buffer, seed: number, blocks: number, writesMax: number, acknowledgedMin: number, queueDepth = 1): PrefixVerdict {
  const verdict = checkPrefix(image, seed, blocks, writesMax, queueDepth);
  if (!verdict.ok || verdict.prefixMin >= acknowledgedMin) return verdict;
  return { ...verdict, ok: false, reason: `holds writes 1..${verdict.prefixMin} only, but ${acknowledgedMin} were acknowledged` };
}

// The image after applying the given writes in the given order: for tests of the checker.
export function imageAfter(seed: number, blocks: number, writeNumbers: Iterable<number>): Buffer {
  assertParameters(seed, blocks);
  const image = Buffer.alloc(blocks * blockSize);
  for (const writeNumber of writeNumbers) {
    const block = blockOf(seed, writeNumber, blocks);
    blockContent(seed, block, writeNumber).copy(image, block * blockSize);
  }
  return image;
}

export interface WorkloadProgress {
  acknowledged: number; // every write ≤ this was acknowledged
  issued: number; // no write above this was issued
  durable: number; // every write ≤ this was acknowledged with FUA or before a completed FLUSH
  first: number; // the workload's first write number (1 unless it continues an earlier one)
  fua: number; // writes acknowledged with FUA
  flushes: number; // flushes completed
  stoppedBecause: string | null; // null while running
}

// Reads the workload's progress file (replaced atomically, so never half-written).
export function readProgress(path: string): WorkloadProgress {
  const progress = JSON.parse(readFileSync(path, "utf8")) as WorkloadProgress;
  assert(Number.isInteger(progress.acknowledged) && progress.acknowledged <= progress.issued, "acknowledged ≤ issued");
  assert(Number.isInteger(progress.durable) && progress.durable <= progress.acknowledged, "durable ≤ acknowledged");
  return progress;
}
