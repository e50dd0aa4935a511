// After a reply leaves, the event loop keeps polling for a moment instead of sleeping, so a
// client that sends its next request at once (queue depth 1: a database's commit, a flush
// after a few writes) finds the loop awake. In a virtual machine the sleep and the wake-up
// across vCPUs cost tens of µs each way: an in-memory export at queue depth 1 did 11k
// requests a second with the loop sleeping between them and 23–24k with a 50 µs window, at
// no more CPU per request (docs/DESIGN-NOTES.md §5).
//
// The window is a chain of setImmediate callbacks: while one is pending, libuv polls for I/O
// without blocking, and every callback checks the clock. A connection opens it after a reply
// that left nothing of its own in flight (NbdConnection.uncorkNow): then only the client can
// bring the next request. With requests still waiting, on the disk or on a sync peer, a
// spinning loop kept the threads and processes they wait for off its CPU: on two vCPUs a sync
// link's row fell to half when every reply opened a window. It never spins on an idle node,
// and a busy loop (queue depth 16) is never idle long enough to spin at all.

import { performance } from "node:perf_hooks";

export class PollWindow {
  private until = 0;
  private spinning = false;
  private stopped = false;
  turns = 0; // loop turns spent polling (status: nbd.poll)
  windows = 0; // windows opened

  constructor(
    readonly windowMicros: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {}

  get active(): boolean {
    return this.spinning;
  }

  // A reply just left: poll until windowMicros from now.
  extend(): void {
    if (this.windowMicros <= 0 || this.stopped) return;
    this.until = this.nowMs() + this.windowMicros / 1000;
    if (this.spinning) return;
    this.spinning = true;
    this.windows += 1;
    setImmediate(spin, this);
  }

  stop(): void {
    this.stopped = true;
    this.until = 0;
  }

  turn(): void {
    if (!this.stopped && this.nowMs() < this.until) {
      this.turns += 1;
      setImmediate(spin, this);
    } else {
      this.spinning = false;
    }
  }
}

function spin(window: PollWindow): void {
  window.turn();
}

export const noPollWindow = new PollWindow(0);
