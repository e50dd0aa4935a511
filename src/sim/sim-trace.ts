// What one simulated run did: every event the harness records (steps, faults, crashes, the
// state after each step) goes into a running SHA-256, the trace hash; the same seed must give
// the same hash. The newest events and log lines are kept (bounded) to print with a violation.

import { createHash, type Hash } from "node:crypto";
import { pino } from "pino";
import type { Logger } from "../logger.js";

const linesKeptMax = 400;

export class SimTrace {
  private readonly hash: Hash = createHash("sha256");
  private readonly lines: string[] = [];
  events = 0;

  constructor(private readonly nowMs: () => number) {}

  event(text: string): void {
    this.events += 1;
    this.hash.update(text).update("\n");
    this.keep(`${this.nowMs() - 1_700_000_000_000} ${text}`);
  }

  private keep(line: string): void {
    this.lines.push(line);
    if (this.lines.length > linesKeptMax * 2) this.lines.splice(0, this.lines.length - linesKeptMax);
  }

  digest(): string {
    return this.hash.copy().digest("hex").slice(0, 16);
  }

  tail(count = Number(process.env.LOCKSTEP_SIM_TAIL ?? 60)): string[] {
    return this.lines.slice(-count);
  }

  // The nodes' logs (pino, info and above) interleaved with the events, stamped with virtual
  // time, never written anywhere unless a run fails.
  logger(level: string): Logger {
    const destination = { write: (line: string) => this.keep(`   log ${line.trimEnd()}`) };
    return pino({ level, base: null, timestamp: () => `,"t":${this.nowMs() - 1_700_000_000_000}` }, destination);
  }
}
