// The simulated world: virtual time, its timers, and the few real asynchronous operations on
// the simulated path (io/io-scheduler.ts), all run by one loop so that a seed replays exactly.
//
//   settle():  run every microtask; then the oldest scheduled real operation, alone, to its end;
//              repeat until nothing is runnable (what is left waits for virtual time)
//   advance:   pop the earliest timer (ties: the order they were set), move the clock there, run it
//
// Nothing in the simulated nodes reads the machine's clock or sets a real timer: each node
// incarnation gets a clock (LogClock) whose timers are owned by that incarnation. A crash kills
// the owner: its timers never fire, and its scheduled operations are refused, so a dead
// process never acts again.

import { setImmediate as immediate } from "node:timers/promises";
import { OperatingError } from "../errors.js";
import { installIoScheduler } from "../io/io-scheduler.js";
import type { LogClock } from "../log/group-log.js";

// One incarnation of one simulated process (or the harness itself, which never dies).
export class SimOwner {
  alive = true;
  private markDied!: () => void;
  readonly died: Promise<void> = new Promise((resolve) => (this.markDied = resolve));

  constructor(readonly name: string) {}

  kill(): void {
    this.alive = false;
    this.markDied();
  }
}

// A start that did not finish because the incarnation was crashed meanwhile (not a failure).
export class SimCrashedWhileStarting extends Error {
  constructor(owner: string) {
    super(`${owner} crashed while starting`);
  }
}

// Runs the start of a node's new incarnation. If it throws, either the incarnation was crashed
// meanwhile (SimCrashedWhileStarting: not a failure) or the process exits (its timers stop; the
// page cache keeps what it wrote) and the error stands; forget() drops the incarnation.
export async function startIncarnation<T>(owner: SimOwner, start: () => Promise<T>, forget: () => void): Promise<T> {
  try {
    return await start();
  } catch (error) {
    forget();
    if (!owner.alive) throw new SimCrashedWhileStarting(owner.name);
    owner.kill();
    throw error;
  }
}

interface Timer {
  readonly atUs: number;
  readonly sequence: number;
  readonly owner: SimOwner;
  run: (() => void) | null; // null: cancelled
}

interface ScheduledIo {
  readonly owner: SimOwner | null;
  readonly path: string;
  readonly start: () => Promise<unknown>;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: unknown) => void;
}

export const simEpochMs = 1_700_000_000_000;

export class SimWorld {
  private nowUs = simEpochMs * 1000; // microseconds: disk latencies are fractions of a millisecond
  private sequence = 0;
  private readonly timers: Timer[] = []; // a binary heap on (atUs, sequence)
  private readonly deadTimers: Timer[] = []; // timers of dead incarnations, kept for unwind()
  private readonly ios: ScheduledIo[] = [];
  private readonly directories: { prefix: string; owner: () => SimOwner | null }[] = [];
  readonly harness = new SimOwner("harness");
  ioCount = 0;

  // Whole milliseconds, as Date.now() (records and superblocks store it as an integer).
  get nowMs(): number {
    return Math.floor(this.nowUs / 1000);
  }

  // ---- Timers ----

  // Virtual time in microseconds (what orders timers).
  get nowMicros(): number {
    return this.nowUs;
  }

  schedule(owner: SimOwner, delayMs: number, run: () => void): () => void {
    return this.scheduleAt(owner, this.nowUs + Math.max(0, Math.round(delayMs * 1000)), run);
  }

  scheduleAt(owner: SimOwner, atUs: number, run: () => void): () => void {
    if (!owner.alive) return () => {};
    const timer: Timer = { atUs: Math.max(atUs, this.nowUs), sequence: this.sequence++, owner, run };
    this.push(timer);
    return () => {
      timer.run = null;
    };
  }

  delay(owner: SimOwner, ms: number): Promise<void> {
    return new Promise((resolve) => this.schedule(owner, ms, resolve));
  }

  clock(owner: SimOwner): LogClock {
    return {
      nowMs: () => this.nowMs,
      setTimeout: (callback, ms) => this.schedule(owner, ms, callback),
    };
  }

  // ---- Real operations (io/io-scheduler.ts) ----

  // Files under prefix belong to the owner the function returns now (null: the node is down).
  addDirectory(prefix: string, owner: () => SimOwner | null): void {
    this.directories.push({ prefix, owner });
  }

  install(): void {
    installIoScheduler(<T>(path: string, start: () => Promise<T>) => this.scheduleIo(path, start));
  }

  uninstall(): void {
    installIoScheduler(null);
  }

  private scheduleIo<T>(path: string, start: () => Promise<T>): Promise<T> {
    const directory = this.directories.find((candidate) => path.startsWith(candidate.prefix));
    const owner = directory === undefined ? null : directory.owner();
    if (directory !== undefined && (owner === null || !owner.alive)) return Promise.reject(deadError(path));
    return new Promise<T>((resolve, reject) => this.ios.push({ owner, path, start, resolve: resolve as (value: unknown) => void, reject }));
  }

  // Runs microtasks and scheduled real operations until only virtual time can move things on.
  async settle(): Promise<void> {
    for (;;) {
      await immediate();
      const io = this.ios.shift();
      if (io === undefined) {
        await immediate(); // what an immediate callback of the nodes started
        if (this.ios.length === 0) return;
        continue;
      }
      if (io.owner !== null && !io.owner.alive) {
        io.reject(deadError(io.path));
        continue;
      }
      this.ioCount += 1;
      try {
        io.resolve(await io.start());
      } catch (error) {
        io.reject(error);
      }
    }
  }

  // Settles, then moves time on timer by timer until done() holds (true) or the deadline passes
  // (false: the clock stops at the deadline).
  async runUntil(done: () => boolean, deadlineMs: number): Promise<boolean> {
    for (;;) {
      await this.settle();
      if (done()) return true;
      const next = this.peekLive();
      if (next === undefined || next.atUs > deadlineMs * 1000) {
        if (deadlineMs * 1000 > this.nowUs) this.nowUs = deadlineMs * 1000;
        return false;
      }
      this.pop();
      this.nowUs = Math.max(this.nowUs, next.atUs);
      const run = next.run!;
      next.run = null;
      run();
    }
  }

  runFor(ms: number): Promise<boolean> {
    return this.runUntil(() => false, this.nowUs / 1000 + ms);
  }

  // Runs a task of the harness inside the world (it may wait for virtual time) to its end, or
  // until the deadline: then "timeout".
  async runTask<T>(task: Promise<T>, msMax: number): Promise<{ value: T } | { error: unknown } | "timeout"> {
    let outcome: { value: T } | { error: unknown } | null = null;
    task.then((value) => (outcome = { value }), (error: unknown) => (outcome = { error }));
    await this.runUntil(() => outcome !== null, this.nowUs / 1000 + msMax);
    return outcome ?? "timeout";
  }

  // The end of a run (every node crashed): the dead incarnations' timers fire so that what
  // waited on them fails and unwinds (a store closing waits for its last sync); their disks
  // and scheduled operations refuse everything by now. The harness's own timers are dropped.
  async unwind(): Promise<void> {
    for (let round = 0; round < 100 && this.timers.length + this.deadTimers.length > 0; round++) {
      const due = [...this.deadTimers.splice(0), ...this.timers.splice(0)].filter((timer) => !timer.owner.alive).sort((a, b) => (earlier(a, b) ? -1 : 1));
      for (const timer of due) {
        const run = timer.run; // an earlier one may have cancelled it
        timer.run = null;
        run?.();
      }
      await this.settle();
    }
  }

  // ---- The heap ----

  private peekLive(): Timer | undefined {
    while (this.timers.length > 0) {
      const top = this.timers[0]!;
      if (top.run !== null && top.owner.alive) return top;
      if (top.run !== null) this.deadTimers.push(top);
      this.pop();
    }
    return undefined;
  }

  private push(timer: Timer): void {
    const heap = this.timers;
    heap.push(timer);
    let index = heap.length - 1;
    while (index > 0) {
      const parent = (index - 1) >> 1;
      if (!earlier(heap[index]!, heap[parent]!)) break;
      [heap[index], heap[parent]] = [heap[parent]!, heap[index]!];
      index = parent;
    }
  }

  private pop(): void {
    const heap = this.timers;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    heap[0] = last;
    let index = 0;
    for (;;) {
      const left = index * 2 + 1;
      const right = left + 1;
      let smallest = index;
      if (left < heap.length && earlier(heap[left]!, heap[smallest]!)) smallest = left;
      if (right < heap.length && earlier(heap[right]!, heap[smallest]!)) smallest = right;
      if (smallest === index) return;
      [heap[index], heap[smallest]] = [heap[smallest]!, heap[index]!];
      index = smallest;
    }
  }
}

function earlier(a: Timer, b: Timer): boolean {
  return a.atUs < b.atUs || (a.atUs === b.atUs && a.sequence < b.sequence);
}

function deadError(path: string): OperatingError {
  return new OperatingError("DISK_IO", { what: `${path}: the simulated process is down`, errno: "EIO" });
}
