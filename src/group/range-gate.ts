// Keeps overlapping writes in LSN order on the volume. Two in-flight writes to overlapping
// ranges could otherwise land in the image in the opposite order to their log records, and
// the replicas (which apply the log in order) would silently diverge from the primary.
//
// enter() is called in LSN order, synchronously with the LSN assignment; it returns the
// in-flight predecessors this write must wait for. Non-overlapping writes never wait.

interface Entry {
  readonly volumeId: number;
  readonly offset: number;
  readonly end: number;
  readonly done: Promise<void>;
  readonly finish: () => void;
}

export interface GateTicket {
  readonly wait: Promise<unknown> | null;
  leave(): void;
}

export class RangeGate {
  private readonly entries = new Set<Entry>();

  get size(): number {
    return this.entries.size;
  }

  enter(volumeId: number, offset: number, length: number): GateTicket {
    const end = offset + Math.max(length, 1);
    let predecessors: Promise<void>[] | null = null;
    for (const entry of this.entries) {
      if (entry.volumeId === volumeId && entry.offset < end && offset < entry.end) {
        (predecessors ??= []).push(entry.done);
      }
    }
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    const entry: Entry = { volumeId, offset, end, done, finish };
    this.entries.add(entry);
    return {
      wait: predecessors === null ? null : predecessors.length === 1 ? predecessors[0]! : Promise.all(predecessors),
      leave: () => {
        this.entries.delete(entry);
        entry.finish();
      },
    };
  }
}
