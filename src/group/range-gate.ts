// Keeps overlapping writes in LSN order on the volume. Two in-flight writes to overlapping
// ranges could otherwise land in the image in the opposite order to their log records, and
// the replicas (which apply the log in order) would silently diverge from the primary.
//
// enter() is called in LSN order, synchronously with the LSN assignment; it returns the
// in-flight predecessors this write must wait for. Non-overlapping writes never wait, and
// cost no promise: an entry makes one only when a later write has to wait for it.
//
// enterAll() takes every key and range at once: an operation that may change any image of the
// group (a restore, a resize, a sync) holds it from its LSN until it has been performed, so a
// read at an exact point (Group.readOrdered) never pairs an LSN past the operation with
// content from before it.

const everyKey = -1;

interface Entry {
  readonly volumeId: number; // everyKey: every key
  readonly offset: number;
  readonly end: number;
  done: Promise<void> | null; // made on demand by a waiter
  finish: (() => void) | null;
}

export interface GateTicket {
  readonly wait: Promise<unknown> | null;
  readonly entry: Entry;
}

// Whether an entry in flight and [offset, end) of a key touch (everyKey touches every key).
function overlap(entry: Entry, volumeId: number, offset: number, end: number): boolean {
  const sameKey = entry.volumeId === volumeId || entry.volumeId === everyKey || volumeId === everyKey;
  return sameKey && entry.offset < end && offset < entry.end;
}

function doneOf(entry: Entry): Promise<void> {
  entry.done ??= new Promise<void>((resolve) => (entry.finish = resolve));
  return entry.done;
}

export class RangeGate {
  private readonly entries = new Set<Entry>();

  get size(): number {
    return this.entries.size;
  }

  enterAll(): GateTicket {
    return this.enter(everyKey, 0, Number.MAX_SAFE_INTEGER);
  }

  enter(volumeId: number, offset: number, length: number): GateTicket {
    const end = offset + Math.max(length, 1);
    let predecessors: Promise<void>[] | null = null;
    for (const entry of this.entries) {
      if (overlap(entry, volumeId, offset, end)) (predecessors ??= []).push(doneOf(entry));
    }
    const entry: Entry = { volumeId, offset, end, done: null, finish: null };
    this.entries.add(entry);
    return { entry, wait: predecessors === null ? null : predecessors.length === 1 ? predecessors[0]! : Promise.all(predecessors) };
  }

  // Whether enter() would have to wait: an entry in flight overlaps the range.
  overlaps(volumeId: number, offset: number, length: number): boolean {
    if (this.entries.size === 0) return false;
    const end = offset + Math.max(length, 1);
    for (const entry of this.entries) if (overlap(entry, volumeId, offset, end)) return true;
    return false;
  }

  leave(ticket: GateTicket): void {
    this.entries.delete(ticket.entry);
    ticket.entry.finish?.();
  }
}
