// The handshake messages of a replication link and version negotiation (docs/PROTOCOL.md §4).
//
//   primary ──hello──▶ peer            who I am, which group, my generation and log position
//   primary ◀─hello─── peer            (or reject: unknown group, not the configured primary…)
//   primary ──accept─▶ peer            version chosen, resume at LSN n, log or resync first
//                                      (or reject: not a configured peer, stale generation…)
//
// The layouts of `hello` and `reject` are frozen for every protocol version: whatever versions
// two nodes speak, they can always tell each other which ones, or why they refuse.
//
//   hello (40…166 bytes)
//   0 versionMin u16 │ 2 versionMax u16 │ 4 role u16 │ 6 reserved u16
//   8 generation u64 │ 16 durableLsn u64 │ 24 appliedLsn u64 │ 32 durableChecksum u32
//   36 nodeLength u8, node │ groupLength u8, group
//
//   accept (16 bytes)
//   0 protocolVersion u16 │ 2 start u16 │ 4 reserved u32 │ 8 resumeLsn u64
//
//   reject (4…260 bytes)
//   0 reason u16 │ 2 textLength u16 │ 4 text (printable ASCII)

import { assert } from "../assert.js";
import { FrameError } from "./frame-error.js";
import { replicationNameBytesMax, replicationRejectTextBytesMax } from "./limits.js";
import { isPrintable, PayloadReader, PayloadWriter } from "./payload-codec.js";

// The protocol versions this build speaks (the message set and payload layouts; the frame
// header has its own format version, frameVersion in frame.ts). Version 2: a records frame
// may leave its records to their own checksums (RecordsFlag.recordChecksums, frame.ts).
export const protocolVersionMin = 1;
export const protocolVersionMax = 2;
// The first version whose records frames carry RecordsFlag.recordChecksums.
export const protocolVersionRecordChecksums = 2;

export type PeerRole = "primary" | "secondary" | "bunker";
const roleCodes: Record<PeerRole, number> = { primary: 1, secondary: 2, bunker: 3 };
const roleByCode = new Map(Object.entries(roleCodes).map(([role, code]) => [code, role as PeerRole]));

export interface Hello {
  readonly kind: "hello";
  readonly versionMin: number;
  readonly versionMax: number;
  readonly role: PeerRole; // the sender's role in this group
  readonly generation: bigint; // the sender's generation of this group
  readonly durableLsn: bigint; // the last LSN durable in the sender's log (0: none)
  readonly appliedLsn: bigint; // the last LSN applied to the sender's volumes (bunker: 0)
  readonly durableChecksum: number; // the record checksum at durableLsn (0 when durableLsn = 0)
  readonly node: string; // the sender's node name
  readonly group: string;
}

export type AcceptStart = "log" | "resync";
const startCodes: Record<AcceptStart, number> = { log: 1, resync: 2 };
const startByCode = new Map(Object.entries(startCodes).map(([start, code]) => [code, start as AcceptStart]));

export interface Accept {
  readonly kind: "accept";
  readonly protocolVersion: number; // chosen by the primary: the highest both speak
  // log: records follow from resumeLsn. resync: the peer becomes inconsistent; bitmapRegions,
  // regionData and resyncEnd follow, and records from resumeLsn alongside them.
  readonly start: AcceptStart;
  readonly resumeLsn: bigint; // the first LSN the primary sends
  readonly previousChecksum: number; // the checksum of the primary's record resumeLsn − 1 (0 if none): the first record's `previous`
  readonly logId: bigint; // the primary's log: every record sent carries it
  // periodic links: the peer applies records only through the last batch flagged intervalEnd,
  // so its volumes move from one interval boundary to the next.
  readonly intervals: boolean;
}

// Why a node refuses a link. Stable: add, never renumber.
export const RejectReason = {
  versionMismatch: 1, // no protocol version in common
  unknownGroup: 2, // the receiver has no such group
  notConfiguredPrimary: 3, // the sender is not the primary configured for this group here
  notConfiguredPeer: 4, // the sender is not a configured link of this group here
  staleGeneration: 5, // the sender's generation is lower than the receiver's
  roleConflict: 6, // the roles cannot pair (two primaries, a primary-to-primary hello…)
  linkBusy: 7, // a link of this group from that node is already connected
  shuttingDown: 8,
  protocolError: 9, // a frame failed its checks (text: the FrameError reason); sent before closing
} as const;
export type RejectReasonName = keyof typeof RejectReason;
const rejectByCode = new Map(Object.entries(RejectReason).map(([name, code]) => [code as number, name as RejectReasonName]));

export interface Reject {
  readonly kind: "reject";
  readonly reason: RejectReasonName;
  readonly text: string; // printable ASCII, at most replicationRejectTextBytesMax bytes
}

export const helloFixedSize = 36;
export const helloSizeMin = helloFixedSize + 2 * (1 + 1);
export const helloSizeMax = helloFixedSize + 2 * (1 + replicationNameBytesMax);
export const acceptSize = 32;
const acceptFlagIntervals = 0x1;
export const rejectSizeMin = 4;
export const rejectSizeMax = 4 + replicationRejectTextBytesMax;

// The highest version in both ranges, or null when they do not meet.
export function protocolVersionChoose(local: { versionMin: number; versionMax: number }, remote: { versionMin: number; versionMax: number }): number | null {
  const highest = Math.min(local.versionMax, remote.versionMax);
  return highest >= Math.max(local.versionMin, remote.versionMin) ? highest : null;
}

// Field rules shared by the encoder (asserted) and the decoder (FrameError field).
function helloProblem(hello: Omit<Hello, "kind" | "node" | "group">): string | null {
  if (hello.versionMin < 1 || hello.versionMin > hello.versionMax) return "versionMin";
  if (hello.appliedLsn > hello.durableLsn) return "appliedLsn";
  if (hello.role === "bunker" && hello.appliedLsn !== 0n) return "appliedLsn";
  if (hello.durableLsn === 0n && hello.durableChecksum !== 0) return "durableChecksum";
  return null;
}

export function helloEncode(hello: Hello): Buffer {
  assert(helloProblem(hello) === null, `hello field ${helloProblem(hello)} out of range`);
  assert(hello.versionMax <= 0xffff && Number.isInteger(hello.versionMin) && Number.isInteger(hello.versionMax), "hello version out of range");
  return new PayloadWriter(helloFixedSize + 2 + hello.node.length + hello.group.length)
    .u16(hello.versionMin)
    .u16(hello.versionMax)
    .u16(roleCodes[hello.role])
    .u16(0)
    .u64(hello.generation)
    .u64(hello.durableLsn)
    .u64(hello.appliedLsn)
    .u32(hello.durableChecksum)
    .name(hello.node)
    .name(hello.group)
    .done();
}

export function helloDecode(payload: Buffer): Hello {
  const reader = new PayloadReader(payload);
  const versionMin = reader.u16();
  const versionMax = reader.u16();
  const roleCode = reader.u16();
  const role = roleByCode.get(roleCode);
  if (role === undefined) throw new FrameError("field", { field: "role", value: roleCode });
  reader.zero16("reserved");
  const fields = { versionMin, versionMax, role, generation: reader.u64(), durableLsn: reader.u64(), appliedLsn: reader.u64(), durableChecksum: reader.u32() };
  const problem = helloProblem(fields);
  if (problem !== null) throw new FrameError("field", { field: problem });
  const node = reader.name("node");
  const group = reader.name("group");
  reader.end();
  return { kind: "hello", ...fields, node, group };
}

export function acceptEncode(accept: Accept): Buffer {
  assert(Number.isInteger(accept.protocolVersion) && accept.protocolVersion >= 1 && accept.protocolVersion <= 0xffff, "accept version out of range");
  assert(accept.resumeLsn >= 1n, "accept resumeLsn is at least 1");
  assert(Number.isInteger(accept.previousChecksum) && accept.previousChecksum >= 0 && accept.previousChecksum <= 0xffff_ffff, "accept previousChecksum out of range");
  return new PayloadWriter(acceptSize).u16(accept.protocolVersion).u16(startCodes[accept.start]).u32(accept.previousChecksum).u64(accept.resumeLsn).u64(accept.logId).u32(accept.intervals ? acceptFlagIntervals : 0).u32(0).done();
}

export function acceptDecode(payload: Buffer): Accept {
  const reader = new PayloadReader(payload);
  const protocolVersion = reader.u16();
  if (protocolVersion < 1) throw new FrameError("field", { field: "protocolVersion", value: protocolVersion });
  const startCode = reader.u16();
  const start = startByCode.get(startCode);
  if (start === undefined) throw new FrameError("field", { field: "start", value: startCode });
  const previousChecksum = reader.u32();
  const resumeLsn = reader.u64();
  if (resumeLsn < 1n) throw new FrameError("field", { field: "resumeLsn", value: resumeLsn });
  const logId = reader.u64();
  const flags = reader.u32();
  if ((flags & ~acceptFlagIntervals) !== 0) throw new FrameError("field", { field: "flags", value: flags });
  reader.zero32("reserved");
  reader.end();
  return { kind: "accept", protocolVersion, start, resumeLsn, previousChecksum, logId, intervals: (flags & acceptFlagIntervals) !== 0 };
}

export function rejectEncode(reject: Reject): Buffer {
  const text = Buffer.from(reject.text, "latin1");
  assert(text.length <= replicationRejectTextBytesMax && isPrintable(text) && text.toString("latin1") === reject.text, "reject text: printable ASCII within the limit");
  return new PayloadWriter(rejectSizeMin + text.length).u16(RejectReason[reject.reason]).u16(text.length).bytes(text).done();
}

export function rejectDecode(payload: Buffer): Reject {
  const reader = new PayloadReader(payload);
  const reasonCode = reader.u16();
  const reason = rejectByCode.get(reasonCode);
  if (reason === undefined) throw new FrameError("field", { field: "reason", value: reasonCode });
  const textLength = reader.u16();
  if (textLength > replicationRejectTextBytesMax) throw new FrameError("field", { field: "textLength", value: textLength });
  const text = reader.bytes(textLength);
  if (!isPrintable(text)) throw new FrameError("field", { field: "text" });
  reader.end();
  return { kind: "reject", reason, text: text.toString("latin1") };
}
