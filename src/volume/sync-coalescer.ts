// Coalesces datasync calls: every caller gets a sync that STARTED after it called, but callers
// that arrive while one sync is running share the next one. N concurrent flushes cost at most
// two fdatasyncs, never N.

export class SyncCoalescer {
  private running: Promise<void> | null = null;
  private next: Promise<void> | null = null;

  constructor(private readonly doSync: () => Promise<void>) {}

  sync(): Promise<void> {
    if (this.running === null) return this.start();
    if (this.next === null) {
      this.next = this.running.then(
        () => this.startNext(),
        () => this.startNext(),
      );
    }
    return this.next;
  }

  private startNext(): Promise<void> {
    this.next = null;
    return this.start();
  }

  private start(): Promise<void> {
    const run = this.doSync();
    this.running = run;
    const clear = () => {
      if (this.running === run) this.running = null;
    };
    run.then(clear, clear);
    return run;
  }
}
