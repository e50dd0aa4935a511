// The copy-on-write model, as pure functions over the metadata (docs/DESIGN-NOTES.md §7).
//
// A *line* is something that takes changes: line 0 is the volume itself (its chunks live in
// the volume's image), and every writable snapshot has a line of its own (its chunks live in
// slots of the store). Each line counts epochs: taking a snapshot of a line freezes its
// current epoch e and moves the line to e+1. A chunk version written in epoch b and
// overwritten in epoch d is readable by the frozen epochs b ≤ e < d.
//
// An *image* (the volume, or a snapshot) is a chain of links, top first:
//
//   the volume                       [ (0, live) ]
//   snapshot of the volume           [ (0, e) ]
//   writable snapshot of the volume  [ (L, live), (0, e) ]
//   snapshot of that one             [ (L, f), (0, e) ]
//
// A chunk of an image is found at the first link that has it. Only a line's live top is ever
// written; every other link is frozen, so a snapshot never changes except through its own
// writes or a refresh (which gives it a new chain).
//
// Preservation happens once per chunk, whatever the number of snapshots: when a line's chunk
// is changed and some frozen link of that line may still read it (its birth ≤ the newest
// frozen epoch of the line), the old version is kept under (line, chunk, death = the line's
// epoch) and every snapshot that needs it finds it by epoch. Nothing is written per snapshot.

import { assert } from "../assert.js";
import { liveEpoch, type ChainLink, type ChunkCurrent, type ChunkVersion, type ImageEntry } from "./snapshot-metadata.js";

export type ChunkLocation =
  | { readonly kind: "volume" } // the volume's image, at the chunk's own offset
  | { readonly kind: "slot"; readonly slot: number }
  | { readonly kind: "zero" }; // no link has the chunk (never happens when a chain ends at line 0)

export interface ChunkLookup {
  versionAfter(line: number, chunk: number, epoch: number): ChunkVersion | undefined;
  current(line: number, chunk: number): ChunkCurrent | undefined;
}

const volumeLocation: ChunkLocation = { kind: "volume" };
const zeroLocation: ChunkLocation = { kind: "zero" };

function currentLocation(line: number, current: ChunkCurrent): ChunkLocation {
  return line === 0 ? volumeLocation : { kind: "slot", slot: current.slot };
}

// Where one chunk of an image is.
export function resolveChunk(chain: readonly ChainLink[], chunk: number, lookup: ChunkLookup): ChunkLocation {
  for (const link of chain) {
    if (link.epoch === liveEpoch) {
      if (link.line === 0) return volumeLocation;
      const current = lookup.current(link.line, chunk);
      if (current !== undefined) return currentLocation(link.line, current);
      continue;
    }
    const version = lookup.versionAfter(link.line, chunk, link.epoch);
    if (version !== undefined) {
      if (version.birth <= link.epoch) return { kind: "slot", slot: version.slot };
      continue; // the line first had this chunk after the link was frozen
    }
    if (link.line === 0) return volumeLocation; // unchanged since the link was frozen
    const current = lookup.current(link.line, chunk);
    if (current !== undefined && current.birth <= link.epoch) return currentLocation(link.line, current);
  }
  return zeroLocation;
}

export function sameLocation(a: ChunkLocation, b: ChunkLocation): boolean {
  if (a.kind !== b.kind) return false;
  return a.kind !== "slot" || a.slot === (b as { slot: number }).slot;
}

// The frozen epochs each line's images read, sorted ascending.
export function frozenEpochs(images: Iterable<ImageEntry>): Map<number, number[]> {
  const epochs = new Map<number, number[]>();
  for (const image of images) {
    for (const link of image.chain) {
      if (link.epoch === liveEpoch) continue;
      const list = epochs.get(link.line) ?? [];
      list.push(link.epoch);
      epochs.set(link.line, list);
    }
  }
  for (const list of epochs.values()) list.sort((a, b) => a - b);
  return epochs;
}

// Lines that some image writes to (line 0 always: the volume).
export function liveLines(images: Iterable<ImageEntry>): Set<number> {
  const lines = new Set<number>([0]);
  for (const image of images) if (image.chain[0]!.epoch === liveEpoch) lines.add(image.chain[0]!.line);
  return lines;
}

// Whether a change to a chunk of the line born at `birth` must first preserve it.
export function mustPreserve(birth: number, epochs: readonly number[] | undefined): boolean {
  return epochs !== undefined && epochs.length > 0 && birth <= epochs[epochs.length - 1]!;
}

// Whether any frozen epoch in [birth, death) still reads a version.
export function versionNeeded(birth: number, death: number, epochs: readonly number[] | undefined): boolean {
  if (epochs === undefined) return false;
  let low = 0;
  let high = epochs.length;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (epochs[middle]! < birth) low = middle + 1;
    else high = middle;
  }
  return low < epochs.length && epochs[low]! < death;
}

// Whether a line's current chunk (born at `birth`) is still read: by the live image on top of
// the line, or by a frozen link at or after its birth.
export function currentNeeded(birth: number, live: boolean, epochs: readonly number[] | undefined): boolean {
  return live || (epochs !== undefined && epochs.length > 0 && epochs[epochs.length - 1]! >= birth);
}

// The chain of an image taken of `source` now: a live top link is frozen at its line's epoch
// (the caller then moves that line to the next epoch).
export function frozenChain(source: readonly ChainLink[], lineEpoch: (line: number) => number): ChainLink[] {
  assert(source.length > 0 && source[source.length - 1]!.line === 0, "a chain ends at the volume");
  const [top, ...rest] = source;
  if (top!.epoch !== liveEpoch) return [...source];
  return [{ line: top!.line, epoch: lineEpoch(top!.line) }, ...rest];
}
