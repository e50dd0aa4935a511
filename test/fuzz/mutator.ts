// A seeded structured mutator for binary protocol input: it takes valid byte sequences (made by
// the project's own encoders, each with a map of its fields and of its units — frames or
// requests) and returns mutants: bit flips, boundary values in named fields, truncation,
// extension, deletion, and splices of two valid sequences. Every mutant is made by its own
// Random, derived from the campaign's seed and the mutant's index, so one mutant replays alone.
//
//   seed (bytes, fields, unit starts) ──in-place steps (bits, fields)──▶ ──one structural step──▶
//   (truncate | extend | insert | delete | splice | unit shuffle) ──reseal (optional)──▶ mutant
//
// In-place steps come first, while the field offsets of the seed still hold. A campaign may pass
// a `reseal` function that repairs what a mutation breaks on purpose only to be caught at the
// first check (checksums, sequence numbers): resealed mutants reach the deeper checks.

import { Random } from "../../src/sim/random.js";

// ---- Limits (every mutant is bounded) ----
export const mutationInPlaceStepsMax = 3; // bit flips and field edits per mutant
export const bitFlipsPerStepMax = 8;
export const bytesRandomPerStepMax = 4;
export const extendBytesMax = 64; // random bytes appended or inserted by one step
export const deleteBytesMax = 64;
export const cutSlackBytesMax = 4; // truncation lands this near a unit boundary half the time
export const structuralStepChance = 0.5; // a mutant gets one structural step with this chance
export const mutantBytesMax = 4 * 1024 * 1024; // seeds are small; this bounds splices of splices

export type Endian = "le" | "be";

// A fixed-width unsigned integer field of a seed, at a byte offset from the seed's start.
export interface Field {
  readonly name: string;
  readonly at: number;
  readonly size: 1 | 2 | 4 | 8;
  readonly endian: Endian;
  readonly interesting?: readonly bigint[]; // the field's own limits (each tried, and ±1)
}

export interface Seed {
  readonly kind: string; // for reports: what the bytes are (e.g. "hello+accept", "write+read")
  readonly bytes: Buffer;
  readonly fields: readonly Field[];
  readonly units: readonly number[]; // the start offsets of the seed's frames or requests, ascending
}

export interface Mutant {
  readonly bytes: Buffer;
  readonly steps: readonly string[]; // what was done, in order, for a failure report
  readonly seedKind: string;
}

export type Reseal = (bytes: Buffer, random: Random) => string | null; // a step name, or null

// The Random of mutant `index` of a campaign: independent of every other mutant.
export function mutantRandom(seed: number, index: number): Random {
  return new Random((seed ^ Math.imul(index + 1, 0x9e37_79b1)) >>> 0);
}

export function widthMax(size: Field["size"]): bigint {
  return (1n << BigInt(size * 8)) - 1n;
}

// The values every field of a width is tried with: 0, 1, the sign boundary, max, and for
// 64-bit fields the 32-bit, 53-bit (JS safe integer) and 63-bit edges.
function boundaryValues(size: Field["size"]): bigint[] {
  const max = widthMax(size);
  const half = max >> 1n;
  const values = [0n, 1n, 2n, half, half + 1n, max - 1n, max];
  if (size === 8) values.push(0xffff_ffffn, 0x1_0000_0000n, (1n << 53n) - 1n, 1n << 53n, (1n << 53n) + 1n);
  if (size >= 4) values.push(0xffffn, 0x1_0000n);
  return values;
}

export function fieldRead(bytes: Buffer, field: Field): bigint {
  switch (field.size) {
    case 1:
      return BigInt(bytes.readUInt8(field.at));
    case 2:
      return BigInt(field.endian === "le" ? bytes.readUInt16LE(field.at) : bytes.readUInt16BE(field.at));
    case 4:
      return BigInt(field.endian === "le" ? bytes.readUInt32LE(field.at) : bytes.readUInt32BE(field.at));
    case 8:
      return field.endian === "le" ? bytes.readBigUInt64LE(field.at) : bytes.readBigUInt64BE(field.at);
  }
}

// Writes `value` modulo the field's width (so max + 1 wraps to 0, as it would on the wire).
export function fieldWrite(bytes: Buffer, field: Field, value: bigint): void {
  const wrapped = ((value % (widthMax(field.size) + 1n)) + widthMax(field.size) + 1n) % (widthMax(field.size) + 1n);
  const number = Number(wrapped);
  switch (field.size) {
    case 1:
      bytes.writeUInt8(number, field.at);
      return;
    case 2:
      if (field.endian === "le") bytes.writeUInt16LE(number, field.at);
      else bytes.writeUInt16BE(number, field.at);
      return;
    case 4:
      if (field.endian === "le") bytes.writeUInt32LE(number, field.at);
      else bytes.writeUInt32BE(number, field.at);
      return;
    case 8:
      if (field.endian === "le") bytes.writeBigUInt64LE(wrapped, field.at);
      else bytes.writeBigUInt64BE(wrapped, field.at);
      return;
  }
}

function pick<T>(random: Random, items: readonly T[]): T {
  return items[random.below(items.length)]!;
}

export class Mutator {
  constructor(
    private readonly random: Random,
    private readonly reseal: Reseal | null = null,
    private readonly resealChance = 0.7,
  ) {}

  // One mutant of one of `seeds` (a splice takes a second one).
  mutate(seeds: readonly Seed[]): Mutant {
    const random = this.random;
    const seed = pick(random, seeds);
    let bytes: Buffer = Buffer.from(seed.bytes);
    const steps: string[] = [];
    const inPlace = 1 + random.below(mutationInPlaceStepsMax);
    const structural = random.chance(structuralStepChance);
    for (let step = 0; step < (structural ? inPlace - 1 : inPlace); step++) steps.push(this.inPlace(bytes, seed));
    if (structural) {
      const [mutated, name] = this.structural(bytes, seed, seeds);
      bytes = mutated.length > mutantBytesMax ? mutated.subarray(0, mutantBytesMax) : mutated;
      steps.push(name);
    }
    if (this.reseal !== null && random.chance(this.resealChance)) {
      const name = this.reseal(bytes, random);
      if (name !== null) steps.push(name);
    }
    return { bytes, steps, seedKind: seed.kind };
  }

  private inPlace(bytes: Buffer, seed: Seed): string {
    const random = this.random;
    if (bytes.length === 0) return "none";
    const choice = seed.fields.length > 0 ? random.below(4) : random.below(2);
    if (choice === 0) return this.bitFlips(bytes);
    if (choice === 1) return this.bytesRandom(bytes);
    const field = pick(random, seed.fields);
    if (field.at + field.size > bytes.length) return "none";
    const value = choice === 2 ? this.boundaryValue(field) : fieldRead(bytes, field) + (random.chance(0.5) ? 1n : -1n);
    fieldWrite(bytes, field, value);
    return `${field.name}=0x${fieldRead(bytes, field).toString(16)}`;
  }

  private bitFlips(bytes: Buffer): string {
    const count = 1 + this.random.below(bitFlipsPerStepMax);
    const flipped: number[] = [];
    for (let flip = 0; flip < count; flip++) {
      const bit = this.random.below(bytes.length * 8);
      bytes[bit >> 3]! ^= 1 << (bit & 7);
      flipped.push(bit);
    }
    return `flip(${flipped.join(",")})`;
  }

  private bytesRandom(bytes: Buffer): string {
    const count = 1 + this.random.below(bytesRandomPerStepMax);
    const at: number[] = [];
    for (let index = 0; index < count; index++) {
      const position = this.random.below(bytes.length);
      bytes[position] = this.random.below(256);
      at.push(position);
    }
    return `bytes(${at.join(",")})`;
  }

  private boundaryValue(field: Field): bigint {
    const interesting = field.interesting ?? [];
    if (interesting.length > 0 && this.random.chance(0.5)) {
      return pick(this.random, interesting) + BigInt(this.random.below(3) - 1); // limit − 1, limit, limit + 1
    }
    return pick(this.random, boundaryValues(field.size));
  }

  private structural(bytes: Buffer, seed: Seed, seeds: readonly Seed[]): [Buffer, string] {
    const random = this.random;
    switch (random.below(6)) {
      case 0: {
        const cut = this.cutPoint(bytes.length, seed.units);
        return [bytes.subarray(0, cut), `truncate(${cut})`];
      }
      case 1: {
        const extra = this.filler(1 + random.below(extendBytesMax));
        return [Buffer.concat([bytes, extra]), `extend(${extra.length})`];
      }
      case 2: {
        const at = random.below(bytes.length + 1);
        const extra = this.filler(1 + random.below(extendBytesMax));
        return [Buffer.concat([bytes.subarray(0, at), extra, bytes.subarray(at)]), `insert(${at},${extra.length})`];
      }
      case 3: {
        const at = random.below(bytes.length + 1);
        const count = 1 + random.below(deleteBytesMax);
        return [Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + count)]), `delete(${at},${count})`];
      }
      case 4: {
        const other = pick(random, seeds);
        const cut = this.cutPoint(bytes.length, seed.units);
        const from = this.cutPoint(other.bytes.length, other.units);
        return [Buffer.concat([bytes.subarray(0, cut), other.bytes.subarray(from)]), `splice(${cut},${other.kind}@${from})`];
      }
      default:
        return this.unitShuffle(bytes, seed);
    }
  }

  // A unit (frame, request) dropped, repeated or moved: valid pieces in an invalid order.
  private unitShuffle(bytes: Buffer, seed: Seed): [Buffer, string] {
    const starts = seed.units.filter((start) => start < bytes.length);
    if (starts.length === 0) return [bytes, "none"];
    const units = starts.map((start, index) => bytes.subarray(start, starts[index + 1] ?? bytes.length));
    const head = bytes.subarray(0, starts[0]);
    const index = this.random.below(units.length);
    const choice = this.random.below(3);
    if (choice === 0) units.splice(index, 1);
    else if (choice === 1) units.splice(index, 0, units[index]!);
    else units.push(units.splice(index, 1)[0]!);
    return [Buffer.concat([head, ...units]), `${["drop", "repeat", "move"][choice]}Unit(${index})`];
  }

  // Anywhere, or (half the time) within a few bytes of a unit boundary, where decoders switch state.
  private cutPoint(length: number, units: readonly number[]): number {
    const boundaries = [...units, length];
    if (!this.random.chance(0.5)) return this.random.below(length + 1);
    const boundary = pick(this.random, boundaries) + this.random.below(2 * cutSlackBytesMax + 1) - cutSlackBytesMax;
    return Math.max(0, Math.min(length, boundary));
  }

  private filler(count: number): Buffer {
    const style = this.random.below(3);
    if (style === 0) return Buffer.alloc(count, 0);
    if (style === 1) return Buffer.alloc(count, 0xff);
    return this.random.fill(Buffer.alloc(count));
  }
}

// Hex for a failure report, cut to a readable length (the whole mutant is replayable by seed).
export function mutantHex(bytes: Buffer, bytesMax: number): string {
  const hex = bytes.subarray(0, bytesMax).toString("hex");
  return bytes.length > bytesMax ? `${hex}… (${bytes.length} bytes)` : hex;
}
