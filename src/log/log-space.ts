// Where records go in the circular data area, and which bytes are in use. Pure bookkeeping:
// no I/O, no clock; group-log.ts drives it and recovery replays it, so both place records by
// the same rule.
//
// Placement: records are laid end to end from the head. A record that would cross the end of
// the data area goes to the data start instead, and the bytes left at the end are wasted (a
// wrap marker is written at the old head when at least one sector remains, which is always:
// positions are sector-aligned). A record ending exactly at the end needs no marker.
//
// Accounting: the live bytes, from the tail to the head, are kept as a queue of segments (runs
// of consecutive records, wasted bytes included, each about segmentBytes long), so memory is
// bounded by the log's size and not by how many records pass through it. Freeing is in three
// steps, because freed space may be reused only once a superblock that no longer needs it is
// durable (otherwise a crash would recover from a tail whose records were overwritten):
//
//   live ──free(lsn)──▶ freed (still counted as used) ──persistDone()──▶ reusable
//
//   segments: [ freed … freed | live … live (last one open) ]
//              ▲ durable tail   ▲ tail of the next superblock     ▲ head

import { assert } from "../assert.js";

export interface Segment {
  readonly firstLsn: bigint;
  lastLsn: bigint;
  // Where the segment starts: its first record, or the wrap marker before it.
  readonly firstPosition: number;
  readonly previousChecksum: number; // the checksum of record firstLsn - 1
  bytes: number;
  closed: boolean;
}

export interface Placement {
  readonly position: number; // where the record goes
  readonly wrapPosition: number | null; // where a wrap marker goes first, if any
  readonly bytes: number; // the record's disk size plus any wasted bytes before it
}

export interface TailPoint {
  readonly lsn: bigint;
  readonly position: number;
  readonly previousChecksum: number;
}

export interface PersistToken {
  readonly segments: number;
  readonly bytes: number;
  readonly tail: TailPoint | null; // null: nothing live, the tail is the head
}

export class LogSpace {
  readonly capacity: number;
  private head: number;
  private used = 0;
  private readonly segments: Segment[] = [];
  private segmentsStart = 0; // segments before this index were removed (compacted lazily)
  private freedSegments = 0;
  private freedByteCount = 0;

  constructor(
    readonly dataStart: number,
    readonly dataEnd: number,
    readonly segmentBytes: number,
    headPosition: number,
  ) {
    assert(dataStart < dataEnd && segmentBytes > 0, "log space layout");
    assert(headPosition >= dataStart && headPosition < dataEnd, "head inside the data area");
    this.capacity = dataEnd - dataStart;
    this.head = headPosition;
  }

  get headPosition(): number {
    return this.head;
  }
  get usedBytes(): number {
    return this.used;
  }
  get freeBytes(): number {
    return this.capacity - this.used;
  }
  // Bytes freed by free() that a durable superblock has not yet given back.
  get freedBytes(): number {
    return this.freedByteCount;
  }
  get freedSegmentCount(): number {
    return this.freedSegments;
  }
  get segmentCount(): number {
    return this.segments.length - this.segmentsStart;
  }

  // Where a record of diskBytes would go now, or null when it does not fit.
  place(diskBytes: number): Placement | null {
    const wraps = this.head + diskBytes > this.dataEnd;
    const waste = wraps ? this.dataEnd - this.head : 0;
    if (waste + diskBytes > this.capacity - this.used) return null;
    return {
      position: wraps ? this.dataStart : this.head,
      wrapPosition: wraps ? this.head : null,
      bytes: waste + diskBytes,
    };
  }

  fits(diskBytes: number): boolean {
    return this.place(diskBytes) !== null;
  }

  // Takes the room for record `lsn` (which must fit) and returns where it goes.
  reserve(lsn: bigint, diskBytes: number, previousChecksum: number): Placement {
    const placement = this.place(diskBytes);
    assert(placement !== null, "reserve without room");
    let segment = this.segments.length > this.segmentsStart ? this.segments[this.segments.length - 1]! : null;
    if (segment !== null && !segment.closed) assert(segment.lastLsn + 1n === lsn, "records reserved in LSN order");
    if (segment === null || segment.closed || segment.bytes >= this.segmentBytes) {
      if (segment !== null) segment.closed = true;
      segment = { firstLsn: lsn, lastLsn: lsn, firstPosition: this.head, previousChecksum, bytes: 0, closed: false };
      this.segments.push(segment);
    }
    segment.lastLsn = lsn;
    segment.bytes += placement.bytes;
    this.used += placement.bytes;
    this.head = placement.position + diskBytes;
    if (this.head === this.dataEnd) this.head = this.dataStart;
    return placement;
  }

  // Frees, in memory, every live segment whose records are all ≤ lsn. Returns the bytes freed.
  free(lsn: bigint): number {
    let bytes = 0;
    for (;;) {
      const index = this.segmentsStart + this.freedSegments;
      const segment = this.segments[index];
      if (segment === undefined || segment.lastLsn > lsn) break;
      segment.closed = true; // an open segment freed whole: the next record starts a new one
      this.freedSegments += 1;
      this.freedByteCount += segment.bytes;
      bytes += segment.bytes;
    }
    return bytes;
  }

  // The oldest live record, or null when nothing is live (then the tail is the head).
  liveTail(): TailPoint | null {
    const segment = this.segments[this.segmentsStart + this.freedSegments];
    if (segment === undefined) return null;
    return { lsn: segment.firstLsn, position: segment.firstPosition, previousChecksum: segment.previousChecksum };
  }

  // The oldest record still on disk (freed or not), or null.
  diskTail(): TailPoint | null {
    const segment = this.segments[this.segmentsStart];
    if (segment === undefined) return null;
    return { lsn: segment.firstLsn, position: segment.firstPosition, previousChecksum: segment.previousChecksum };
  }

  // Captures what a superblock written now would free once durable.
  persistBegin(): PersistToken {
    return { segments: this.freedSegments, bytes: this.freedByteCount, tail: this.liveTail() };
  }

  // The superblock of `token` is durable: its freed segments become reusable.
  persistDone(token: PersistToken): void {
    assert(token.segments <= this.freedSegments && token.bytes <= this.freedByteCount, "persist token");
    this.segmentsStart += token.segments;
    this.freedSegments -= token.segments;
    this.freedByteCount -= token.bytes;
    this.used -= token.bytes;
    assert(this.used >= 0, "used bytes");
    if (this.segmentsStart > 1024 && this.segmentsStart * 2 > this.segments.length) {
      this.segments.splice(0, this.segmentsStart);
      this.segmentsStart = 0;
    }
  }

  // The segment holding lsn (freed or live), or null.
  find(lsn: bigint): Segment | null {
    let low = this.segmentsStart;
    let high = this.segments.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const segment = this.segments[middle]!;
      if (lsn < segment.firstLsn) high = middle - 1;
      else if (lsn > segment.lastLsn) low = middle + 1;
      else return segment;
    }
    return null;
  }
}
