// Per-chunk coordination inside one volume's snapshot store. Two kinds:
//
//   run(key, action)  one action at a time per key (a chunk of a line): two changes to the
//                     same chunk never both decide to preserve it or both allocate its slot.
//   hold(chunk)       a read of a snapshot that resolved to the volume's own chunk; a change
//                     that has just preserved that chunk waits for such reads (drained())
//                     before it overwrites the volume, so none of them sees the new data.
//
// Both maps hold only keys with work in flight: memory is bounded by the requests in flight.

export class ChunkLocks {
  private readonly tails = new Map<string, Promise<void>>();
  private readonly holds = new Map<number, { count: number; waiters: (() => void)[] }>();

  async run<T>(key: string, action: () => Promise<T>): Promise<T> {
    const before = this.tails.get(key);
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    this.tails.set(key, mine);
    try {
      if (before !== undefined) await before;
      return await action();
    } finally {
      if (this.tails.get(key) === mine) this.tails.delete(key);
      done();
    }
  }

  hold(chunk: number): () => void {
    let entry = this.holds.get(chunk);
    if (entry === undefined) {
      entry = { count: 0, waiters: [] };
      this.holds.set(chunk, entry);
    }
    entry.count += 1;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.count -= 1;
      if (entry.count === 0) {
        this.holds.delete(chunk);
        for (const wake of entry.waiters) wake();
      }
    };
  }

  drained(chunk: number): Promise<void> | null {
    const entry = this.holds.get(chunk);
    if (entry === undefined) return null;
    return new Promise((resolve) => entry.waiters.push(resolve));
  }

  get busy(): number {
    return this.tails.size + this.holds.size;
  }
}
