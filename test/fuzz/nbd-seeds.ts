// Valid NBD client input for the mutator, made with the project's own encoders (nbd/protocol.ts):
// handshakes (client flags and option sequences, as a client sends them after the greeting) and
// transmission requests (headers, and WRITE payloads), with the map of every fixed field and its
// limits. All integers of NBD are big-endian.
//
//   handshake: client flags u32 │ option: "IHAVEOPT" · option u32 · length u32 · data │ …
//   request:   magic u32 · flags u16 · type u16 · handle u64 · offset u64 · length u32 │ payload

import {
  nbdMetaContextsMax,
  nbdOptionDataSizeMax,
  nbdOptionDrainSizeMax,
  nbdPayloadSizeMax,
  nbdStringLengthMax,
  nbdWriteDrainSizeMax,
  sectorSize,
} from "../../src/constants.js";
import {
  clientFlag,
  command,
  commandFlag,
  goOptionEncode,
  info,
  metaContextBaseAllocation,
  metaContextOptionEncode,
  option,
  optionEncode,
  optionHeaderSize,
  requestHeaderEncode,
} from "../../src/nbd/protocol.js";
import type { Random } from "../../src/sim/random.js";
import type { Field, Seed } from "./mutator.js";

const big = (...values: number[]) => values.map((value) => BigInt(value));
const u64Edges = [(1n << 53n) - 1n, 1n << 53n, 1n << 63n, (1n << 64n) - 1n];

// What the transmission requests of a connection may be (as negotiated by its valid handshake).
export interface RequestTerms {
  readonly size: number;
  readonly structured: boolean;
  readonly metaContext: boolean; // base:allocation selected: BLOCK_STATUS allowed
}

// ---- Handshake ----

interface OptionPart {
  readonly type: number;
  readonly data: Buffer;
  readonly dataFields: readonly Field[]; // offsets from the option's data
}

function goPart(type: number, name: string, infoRequests: readonly number[]): OptionPart {
  const nameLength = Buffer.byteLength(name);
  return {
    type,
    data: goOptionEncode(name, infoRequests),
    dataFields: [
      { name: "go.nameLength", at: 0, size: 4, endian: "be", interesting: big(nbdStringLengthMax, 0) },
      { name: "go.infoCount", at: 4 + nameLength, size: 2, endian: "be", interesting: big(0xffff) },
      ...infoRequests.map((_, index) => ({ name: `go.info${index}`, at: 6 + nameLength + 2 * index, size: 2 as const, endian: "be" as const, interesting: big(info.blockSize, 0xffff) })),
    ],
  };
}

function metaPart(type: number, name: string, queries: readonly string[]): OptionPart {
  const nameLength = Buffer.byteLength(name);
  return {
    type,
    data: metaContextOptionEncode(name, queries),
    dataFields: [
      { name: "meta.nameLength", at: 0, size: 4, endian: "be", interesting: big(nbdStringLengthMax) },
      { name: "meta.count", at: 4 + nameLength, size: 4, endian: "be", interesting: big(nbdMetaContextsMax, 0xffff_ffff) },
      ...(queries.length > 0 ? [{ name: "meta.queryLength", at: 8 + nameLength, size: 4 as const, endian: "be" as const, interesting: big(nbdStringLengthMax) }] : []),
    ],
  };
}

const plain = (type: number, data = Buffer.alloc(0)): OptionPart => ({ type, data, dataFields: [] });

function handshakeSeed(kind: string, flags: number, parts: readonly OptionPart[]): Seed {
  const flagsBytes = Buffer.alloc(4);
  flagsBytes.writeUInt32BE(flags);
  const chunks: Buffer[] = [flagsBytes];
  const fields: Field[] = [{ name: "clientFlags", at: 0, size: 4, endian: "be", interesting: big(clientFlag.fixedNewstyle, 4) }];
  const units: number[] = [];
  let at = 4;
  parts.forEach((part, index) => {
    units.push(at);
    const prefix = `option${index}`;
    fields.push(
      { name: `${prefix}.magicHigh`, at, size: 4, endian: "be" },
      { name: `${prefix}.magicLow`, at: at + 4, size: 4, endian: "be" },
      { name: `${prefix}.type`, at: at + 8, size: 4, endian: "be", interesting: big(option.exportName, option.go, option.setMetaContext, 0x7fff_ffff, 0x8000_0000) },
      { name: `${prefix}.length`, at: at + 12, size: 4, endian: "be", interesting: big(0, nbdOptionDataSizeMax, nbdOptionDrainSizeMax) },
      ...part.dataFields.map((field) => ({ ...field, name: `${prefix}.${field.name}`, at: at + optionHeaderSize + field.at })),
    );
    const frame = optionEncode(part.type, part.data);
    chunks.push(frame);
    at += frame.length;
  });
  return { kind: `handshake:${kind}`, bytes: Buffer.concat(chunks), fields, units };
}

// Handshakes a client may send, naming `exportName` (the writable volume or a read-only one).
export function handshakeSeeds(exportNames: readonly string[]): Seed[] {
  const flags = clientFlag.fixedNewstyle | clientFlag.noZeroes;
  const seeds: Seed[] = [];
  for (const name of exportNames) {
    seeds.push(
      handshakeSeed("go", flags, [goPart(option.go, name, [])]),
      handshakeSeed("structured+meta+go", flags, [plain(option.structuredReply), metaPart(option.setMetaContext, name, [metaContextBaseAllocation]), goPart(option.go, name, [info.blockSize, info.name, info.description])]),
      handshakeSeed("list+info+go", flags, [plain(option.list), goPart(option.info, name, [info.name]), goPart(option.go, name, [info.blockSize])]),
      handshakeSeed("export-name", clientFlag.fixedNewstyle, [plain(option.exportName, Buffer.from(name))]),
      handshakeSeed("list-meta+abort", flags, [plain(option.structuredReply), metaPart(option.listMetaContext, name, []), plain(option.abort)]),
      handshakeSeed("starttls+unknown+go", flags, [plain(option.startTls), plain(0x99, Buffer.from("lockstep")), goPart(option.go, name, [])]),
    );
  }
  return seeds;
}

// ---- Transmission ----

function requestFields(at: number, size: number): Field[] {
  return [
    { name: "magic", at, size: 4, endian: "be" },
    { name: "flags", at: at + 4, size: 2, endian: "be", interesting: big(commandFlag.fua, commandFlag.noHole, commandFlag.df, commandFlag.reqOne, commandFlag.fastZero, 0x8000) },
    { name: "type", at: at + 6, size: 2, endian: "be", interesting: big(command.read, command.write, command.disconnect, command.trim, command.writeZeroes, command.blockStatus, 8) },
    { name: "handle", at: at + 8, size: 8, endian: "be" },
    { name: "offset", at: at + 16, size: 8, endian: "be", interesting: [BigInt(size), BigInt(size - sectorSize), BigInt(size + sectorSize), ...u64Edges] },
    { name: "length", at: at + 24, size: 4, endian: "be", interesting: big(0, sectorSize, size, nbdPayloadSizeMax, nbdWriteDrainSizeMax, 0xffff_ffff) },
  ];
}

// One valid request (and its payload) for a connection with `terms`; WRITE carries `content` of
// the range it addresses, so the image model knows exactly what a write should leave.
function validRequest(random: Random, terms: RequestTerms, handle: number, content: Buffer): { type: number; bytes: Buffer } {
  const sectors = 1 + random.below(16);
  const length = sectors * sectorSize;
  const offset = random.below(terms.size / sectorSize - sectors + 1) * sectorSize;
  const fua = random.chance(0.3) ? commandFlag.fua : 0;
  const kinds = [command.read, command.read, command.write, command.write, command.flush, command.trim, command.writeZeroes, command.cache, ...(terms.metaContext ? [command.blockStatus] : [])];
  const type = kinds[random.below(kinds.length)]!;
  let flags = fua;
  if (type === command.read && terms.structured && random.chance(0.3)) flags |= commandFlag.df;
  if (type === command.writeZeroes) flags |= (random.chance(0.5) ? commandFlag.noHole : 0) | (random.chance(0.3) ? commandFlag.fastZero : 0);
  if (type === command.blockStatus) flags = random.chance(0.5) ? commandFlag.reqOne : 0;
  const flush = type === command.flush;
  const header = requestHeaderEncode({ flags, type, handleHigh: 0, handleLow: handle, offset: flush ? 0 : offset, length: flush ? 0 : length });
  return { type, bytes: type === command.write ? Buffer.concat([header, content.subarray(offset, offset + length)]) : header };
}

// A few valid requests in a row (sometimes ending with DISC), as one seed.
export function requestsSeed(random: Random, terms: RequestTerms, content: Buffer, requestsMax = 4): Seed {
  const parts: Buffer[] = [];
  const fields: Field[] = [];
  const units: number[] = [];
  const names: string[] = [];
  let at = 0;
  const count = 1 + random.below(requestsMax);
  for (let index = 0; index < count; index++) {
    const request = validRequest(random, terms, index + 1, content);
    units.push(at);
    fields.push(...requestFields(at, terms.size).map((field) => ({ ...field, name: `request${index}.${field.name}` })));
    parts.push(request.bytes);
    names.push(Object.entries(command).find(([, value]) => value === request.type)![0]);
    at += request.bytes.length;
  }
  if (random.chance(0.1)) {
    units.push(at);
    parts.push(requestHeaderEncode({ flags: 0, type: command.disconnect, handleHigh: 0, handleLow: count + 1, offset: 0, length: 0 }));
    names.push("disconnect");
  }
  return { kind: `requests:${names.join("+")}`, bytes: Buffer.concat(parts), fields, units };
}
