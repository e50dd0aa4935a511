// Snapshot twins when the exact point was lost (docs/PROTOCOL.md §5.1, DESIGN-NOTES.md §8): a
// link that folded records into its bitmap missed the operations and snapshot writes among
// them, so after the volumes are resynced the primary makes the peer's twins equal to its
// snapshots, at one point X of the stream, before any record after X:
//
//   primary                                             peer (its applier, at X)
//   twinListRequest(volume) ─────────────────────────▶  lists its twins
//                           ◀───────────────────────── twinList(volume, twins)
//   plans: keep or build each snapshot (planTwins)
//   twinCatalog(volume, snapshots, build flags) ─────▶  deletes the twins the primary lacks,
//                                                        and those of another parent; builds
//                                                        each flagged twin on its base in O(1)
//   twinRegion(volume, twin, offset, data)… ─────────▶  writes where the snapshot differs
//                                                        from its base (from metadata: a diff)
//
// The regions are read from copies the primary froze at X, so they are the snapshots' content
// at X whatever happens on the primary meanwhile. A twin's base is its parent twin (built or
// kept before it: the catalog is in tree order) or the peer's volume, which the resync made
// equal to the primary's at X.
//
//   twinListRequest (8 bytes)   0 requestId u32 │ 4 volumeId u32
//   twinList (16 + entries)     0 requestId u32 │ 4 volumeId u32 │ 8 count u32 │ 12 reserved u32
//   twinCatalog (16 + entries)  0 volumeId u32 │ 4 reserved u32 │ 8 count u32 │ 12 reserved u32
//   entry (20 + n + p bytes)    0 size u64 │ 8 createdLsn u64 │ 16 flags u8 (1 writable, 2 build:
//                               catalog only) │ 17 n u8 │ 18 p u8 (0: the volume is the parent)
//                               │ 19 reserved u8 │ 20 name │ parent
//   twinRegion (24 + n [+ data]) 0 volumeId u32 │ 4 length u32 │ 8 offset u64 │ 16 n u8 │
//                               17 reserved (7 bytes) │ 24 name │ data (none with flag zero)

import { assert } from "../assert.js";
import { sectorSize, snapshotNameLengthMax, snapshotsPerVolumeMax, volumeIdMax, volumeSizeMax } from "../constants.js";
import { FrameError } from "./frame-error.js";
import { replicationRegionDataSizeMax } from "./limits.js";
import { isName, isNameString, PayloadReader, PayloadWriter } from "./payload-codec.js";

export const twinListRequestSize = 8;
const twinEntrySizeMin = 20;
const twinEntrySizeMax = twinEntrySizeMin + 2 * snapshotNameLengthMax;
export const twinListSizeMin = 16;
export const twinListSizeMax = 16 + snapshotsPerVolumeMax * twinEntrySizeMax;
export const twinRegionHeaderSize = 24;
export const twinRegionSizeMin = twinRegionHeaderSize + 1;
export const twinRegionSizeMax = twinRegionHeaderSize + snapshotNameLengthMax + replicationRegionDataSizeMax;

const TwinFlag = { writable: 0x1, build: 0x2 } as const;

export interface Twin {
  readonly name: string;
  readonly parent: string | null; // null: a snapshot of the volume
  readonly writable: boolean;
  readonly size: number;
  readonly createdLsn: bigint;
}

export interface CatalogTwin extends Twin {
  readonly build: boolean; // the peer builds it (else it keeps the twin it has)
}

export interface TwinListRequest {
  readonly kind: "twinListRequest";
  readonly requestId: number;
  readonly volumeId: number;
}

export interface TwinList {
  readonly kind: "twinList";
  readonly requestId: number;
  readonly volumeId: number;
  readonly twins: readonly Twin[];
}

export interface TwinCatalog {
  readonly kind: "twinCatalog";
  readonly volumeId: number;
  readonly twins: readonly CatalogTwin[]; // every snapshot of the volume, parents before children
}

export interface TwinRegion {
  readonly kind: "twinRegion";
  readonly volumeId: number;
  readonly twin: string;
  readonly offset: number;
  readonly length: number;
  readonly data: Buffer | null; // null: zeroes (frame flag `zero`)
}

function checkVolumeId(volumeId: number): void {
  if (volumeId > volumeIdMax) throw new FrameError("field", { field: "volumeId", value: volumeId });
}

function readName(reader: PayloadReader, length: number, field: string): string {
  if (length < 1 || length > snapshotNameLengthMax) throw new FrameError("field", { field, length });
  const bytes = reader.bytes(length);
  if (!isName(bytes)) throw new FrameError("name", { field }); // twins have operators' names, never '~'
  return bytes.toString("latin1");
}

function entriesSize(twins: readonly Twin[]): number {
  return twins.reduce((total, twin) => total + twinEntrySizeMin + twin.name.length + (twin.parent?.length ?? 0), 0);
}

function writeEntries(writer: PayloadWriter, twins: readonly (Twin & { build?: boolean })[]): void {
  for (const twin of twins) {
    assert(isNameString(twin.name) && (twin.parent === null || isNameString(twin.parent)), `twin names: ${twin.name}`);
    const flags = (twin.writable ? TwinFlag.writable : 0) | (twin.build === true ? TwinFlag.build : 0);
    const parent = twin.parent ?? "";
    writer.u64(twin.size).u64(twin.createdLsn).u8(flags).u8(twin.name.length).u8(parent.length).u8(0).bytes(Buffer.from(twin.name, "latin1")).bytes(Buffer.from(parent, "latin1"));
  }
}

// Entries in tree order, names unique, each parent listed before it (catalog) or anywhere
// (a peer's list); `buildAllowed`: the catalog's flag.
function readEntries(reader: PayloadReader, count: number, buildAllowed: boolean, parentsFirst: boolean): CatalogTwin[] {
  if (count > snapshotsPerVolumeMax) throw new FrameError("field", { field: "count", value: count });
  const twins: CatalogTwin[] = [];
  const seen = new Set<string>();
  for (let index = 0; index < count; index++) {
    const size = reader.u64Number("size");
    const createdLsn = reader.u64();
    const flags = reader.u8();
    const nameLength = reader.u8();
    const parentLength = reader.u8();
    if (reader.u8() !== 0) throw new FrameError("field", { field: "reserved", index });
    if ((flags & ~(TwinFlag.writable | (buildAllowed ? TwinFlag.build : 0))) !== 0) throw new FrameError("field", { field: "flags", index, value: flags });
    if (size === 0 || size % sectorSize !== 0 || size > volumeSizeMax) throw new FrameError("field", { field: "size", index, value: size });
    const name = readName(reader, nameLength, "name");
    const parent = parentLength === 0 ? null : readName(reader, parentLength, "parent");
    if (seen.has(name) || parent === name) throw new FrameError("field", { field: "name", index, reason: "twice, or its own parent" });
    if (parentsFirst && parent !== null && !seen.has(parent)) throw new FrameError("field", { field: "parent", index, reason: "not listed before it" });
    seen.add(name);
    twins.push({ name, parent, writable: (flags & TwinFlag.writable) !== 0, size, createdLsn, build: (flags & TwinFlag.build) !== 0 });
  }
  return twins;
}

export function twinListRequestEncode(message: TwinListRequest): Buffer {
  return new PayloadWriter(twinListRequestSize).u32(message.requestId).u32(message.volumeId).done();
}

export function twinListRequestDecode(payload: Buffer): TwinListRequest {
  const reader = new PayloadReader(payload);
  const message = { kind: "twinListRequest" as const, requestId: reader.u32(), volumeId: reader.u32() };
  reader.end();
  checkVolumeId(message.volumeId);
  return message;
}

export function twinListEncode(message: TwinList): Buffer {
  const writer = new PayloadWriter(16 + entriesSize(message.twins)).u32(message.requestId).u32(message.volumeId).u32(message.twins.length).u32(0);
  writeEntries(writer, message.twins);
  return writer.done();
}

export function twinListDecode(payload: Buffer): TwinList {
  const reader = new PayloadReader(payload);
  const requestId = reader.u32();
  const volumeId = reader.u32();
  const count = reader.u32();
  reader.zero32("reserved");
  checkVolumeId(volumeId);
  const twins = readEntries(reader, count, false, false).map(({ build: _build, ...twin }) => twin);
  reader.end();
  return { kind: "twinList", requestId, volumeId, twins };
}

export function twinCatalogEncode(message: TwinCatalog): Buffer {
  const writer = new PayloadWriter(16 + entriesSize(message.twins)).u32(message.volumeId).u32(0).u32(message.twins.length).u32(0);
  writeEntries(writer, message.twins);
  return writer.done();
}

export function twinCatalogDecode(payload: Buffer): TwinCatalog {
  const reader = new PayloadReader(payload);
  const volumeId = reader.u32();
  reader.zero32("reserved");
  const count = reader.u32();
  reader.zero32("reserved");
  checkVolumeId(volumeId);
  const twins = readEntries(reader, count, true, true);
  reader.end();
  return { kind: "twinCatalog", volumeId, twins };
}

// The payload as parts for writev: [header and name, data]; the data is referenced.
export function twinRegionEncode(message: TwinRegion): Buffer[] {
  assert(message.length > 0 && message.length <= replicationRegionDataSizeMax && message.offset % sectorSize === 0 && message.length % sectorSize === 0, "twinRegion range");
  assert(message.data === null || message.data.length === message.length, "twinRegion length is the data's");
  const header = new PayloadWriter(twinRegionHeaderSize + message.twin.length).u32(message.volumeId).u32(message.length).u64(message.offset).u8(message.twin.length).bytes(Buffer.alloc(7)).bytes(Buffer.from(message.twin, "latin1")).done();
  return message.data === null ? [header] : [header, message.data];
}

export function twinRegionDecode(payload: Buffer, zero: boolean): TwinRegion {
  const reader = new PayloadReader(payload);
  const volumeId = reader.u32();
  const length = reader.u32();
  const offset = reader.u64Number("offset");
  const nameLength = reader.u8();
  if (!reader.bytes(7).equals(Buffer.alloc(7))) throw new FrameError("field", { field: "reserved" });
  checkVolumeId(volumeId);
  if (length === 0 || length % sectorSize !== 0 || length > replicationRegionDataSizeMax) throw new FrameError("field", { field: "length", value: length });
  if (offset % sectorSize !== 0 || offset + length > volumeSizeMax) throw new FrameError("field", { field: "offset", value: offset });
  const twin = readName(reader, nameLength, "twin");
  const data = zero ? null : reader.bytes(length);
  reader.end();
  return { kind: "twinRegion", volumeId, twin, offset, length, data };
}

// ---- Planning (pure; both sides agree on it) ----

function sameTwin(a: Twin, b: Twin): boolean {
  return a.parent === b.parent && a.writable === b.writable && a.size === b.size && a.createdLsn === b.createdLsn;
}

// The peer's twins that go before any is built: those the primary has no snapshot of, and
// those the primary's snapshot of that name has another parent (so the twin is another
// snapshot), each with every twin taken of it. Children first.
export function doomedTwins(peer: readonly Twin[], primary: readonly Twin[]): string[] {
  const wanted = new Map(primary.map((twin) => [twin.name, twin]));
  const children = new Map<string, string[]>();
  for (const twin of peer) if (twin.parent !== null) children.set(twin.parent, [...(children.get(twin.parent) ?? []), twin.name]);
  const doomed: string[] = [];
  const marked = new Set<string>();
  const doom = (name: string): void => {
    if (marked.has(name)) return;
    marked.add(name);
    for (const child of children.get(name) ?? []) doom(child);
    doomed.push(name);
  };
  for (const twin of peer) {
    const own = wanted.get(twin.name);
    if (own === undefined || own.parent !== twin.parent) doom(twin.name);
  }
  return doomed;
}

// The primary's plan for one volume: its snapshots in tree order, each marked build unless the
// peer has an identical twin it did not miss a change to (stale: the names the link missed
// changes to; null: all of them).
export function planTwins(primary: readonly Twin[], peer: readonly Twin[], stale: ReadonlySet<string> | null): CatalogTwin[] {
  const doomed = new Set(doomedTwins(peer, primary));
  const theirs = new Map(peer.map((twin) => [twin.name, twin]));
  return treeOrder(primary).map((twin) => {
    const existing = theirs.get(twin.name);
    const keep = existing !== undefined && !doomed.has(twin.name) && sameTwin(existing, twin) && stale !== null && !stale.has(twin.name);
    return { ...twin, build: !keep };
  });
}

// Parents before children (a parent missing from the list counts as the volume).
export function treeOrder<T extends Twin>(twins: readonly T[]): T[] {
  const byName = new Map(twins.map((twin) => [twin.name, twin]));
  const ordered: T[] = [];
  const placed = new Set<string>();
  const place = (twin: T, depth: number): void => {
    if (placed.has(twin.name)) return;
    assert(depth <= twins.length, "a snapshot tree has no cycles");
    const parent = twin.parent === null ? undefined : byName.get(twin.parent);
    if (parent !== undefined) place(parent, depth + 1);
    placed.add(twin.name);
    ordered.push(twin);
  };
  for (const twin of twins) place(twin, 0);
  return ordered;
}
