// Callers waiting for an LSN to reach a state (written, durable), as a min-heap on the LSN:
// one entry per caller that actually waits, never one per record, and each progress step
// resolves the waiters at the front in O(log n) each.

interface Waiter {
  readonly lsn: bigint;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

export class LsnWaiters {
  private readonly heap: Waiter[] = [];

  get size(): number {
    return this.heap.length;
  }

  // The smallest LSN waited for, or null.
  minLsn(): bigint | null {
    return this.heap.length > 0 ? this.heap[0]!.lsn : null;
  }

  add(lsn: bigint): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.heap.push({ lsn, resolve, reject });
      this.siftUp(this.heap.length - 1);
    });
  }

  // Resolves every waiter for an LSN ≤ lsn.
  resolveThrough(lsn: bigint): void {
    while (this.heap.length > 0 && this.heap[0]!.lsn <= lsn) this.pop().resolve();
  }

  rejectAll(error: Error): void {
    const waiters = this.heap.splice(0);
    for (const waiter of waiters) waiter.reject(error);
  }

  private pop(): Waiter {
    const top = this.heap[0]!;
    const last = this.heap.pop()!;
    if (this.heap.length > 0) {
      this.heap[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  private siftUp(index: number): void {
    const heap = this.heap;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (heap[parent]!.lsn <= heap[index]!.lsn) return;
      [heap[parent], heap[index]] = [heap[index]!, heap[parent]!];
      index = parent;
    }
  }

  private siftDown(index: number): void {
    const heap = this.heap;
    for (;;) {
      const left = 2 * index + 1;
      const right = left + 1;
      let smallest = index;
      if (left < heap.length && heap[left]!.lsn < heap[smallest]!.lsn) smallest = left;
      if (right < heap.length && heap[right]!.lsn < heap[smallest]!.lsn) smallest = right;
      if (smallest === index) return;
      [heap[smallest], heap[index]] = [heap[index]!, heap[smallest]!];
      index = smallest;
    }
  }
}
