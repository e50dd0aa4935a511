// The applied watermark: the highest LSN L such that every record with LSN <= L has been
// applied to its volume. Writes complete out of order; a checkpoint may only release log
// records up to this watermark.

import { assert } from "../assert.js";

export class AppliedWatermark {
  private readonly pending: bigint[] = []; // begun, in increasing order (a queue)
  private head = 0;
  private readonly ended = new Set<bigint>();
  private applied: bigint;

  constructor(appliedLsn: bigint) {
    this.applied = appliedLsn;
  }

  get appliedLsn(): bigint {
    return this.applied;
  }

  get inflight(): number {
    return this.pending.length - this.head;
  }

  begin(lsn: bigint): void {
    const last = this.head < this.pending.length ? this.pending[this.pending.length - 1]! : this.applied;
    assert(lsn > last, () => `watermark: LSN ${lsn} begun after ${last}`);
    this.pending.push(lsn);
  }

  end(lsn: bigint): void {
    if (this.head < this.pending.length && this.pending[this.head] === lsn) {
      // The oldest in flight ended (the common case, a write done in the step that began it):
      // no trip through the set, whose BigInt hashing was a visible share of a 4k write.
      this.applied = lsn;
      this.head += 1;
    } else {
      this.ended.add(lsn);
    }
    while (this.ended.size > 0 && this.head < this.pending.length && this.ended.has(this.pending[this.head]!)) {
      const done = this.pending[this.head]!;
      this.ended.delete(done);
      this.applied = done;
      this.head += 1;
    }
    if (this.head === this.pending.length) {
      this.pending.length = 0; // nothing in flight: start the queue over
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.pending.length) {
      this.pending.splice(0, this.head);
      this.head = 0;
    }
  }

  // A change begun and ended in one synchronous step (Group.changeNow).
  passed(lsn: bigint): void {
    if (this.head < this.pending.length) {
      this.begin(lsn);
      this.end(lsn);
      return;
    }
    assert(lsn > this.applied, () => `watermark: LSN ${lsn} passed after ${this.applied}`);
    this.applied = lsn;
  }

  // Records that were appended to the log but never begun here (e.g. operations run inline).
  skipTo(lsn: bigint): void {
    assert(this.inflight === 0, "watermark: skip with writes in flight");
    if (lsn > this.applied) this.applied = lsn;
  }
}
