// An async reader of a log's records in LSN order, from disk: recovery replay by the group,
// and the replication stream later. It reads only records the log has already written (handed
// to the OS); next() returns null when it has caught up, and the owner may wait for
// log.written(cursor.nextLsn) and call next() again.
//
// Records can disappear under a slow reader: once released and their space reused. The cursor
// then fails with OUT_OF_RANGE (the reader must fall back, e.g. to a bitmap resync), never with
// a wrong record. A record that fails its checks while still inside the log is LOG_CORRUPT.

import { assert } from "../assert.js";
import { OperatingError } from "../errors.js";
import type { BlockFile } from "../io/block-file.js";
import type { TailPoint } from "./log-space.js";
import type { LogRecord } from "./record.js";
import { RecordScanner, type ScanLayout } from "./record-scanner.js";

// What a cursor needs from its log.
export interface CursorSource {
  readonly file: BlockFile;
  readonly layout: ScanLayout;
  readonly readChunkBytes: number;
  writtenLsn(): bigint;
  diskTailLsn(): bigint; // the oldest LSN whose record is still on disk
}

export class LogCursor implements AsyncIterable<LogRecord> {
  private readonly scanner: RecordScanner;
  private reading = false;

  // `start` is a point at or before fromLsn where a record (or wrap marker) begins.
  constructor(
    private readonly source: CursorSource,
    private readonly fromLsn: bigint,
    start: TailPoint,
  ) {
    assert(start.lsn <= fromLsn, "cursor start after fromLsn");
    this.scanner = new RecordScanner(
      source.file,
      source.layout,
      source.readChunkBytes,
      () => source.writtenLsn(),
      start.position,
      start.lsn,
      start.previousChecksum,
    );
  }

  // The LSN next() returns next.
  get nextLsn(): bigint {
    return this.scanner.expectedLsn > this.fromLsn ? this.scanner.expectedLsn : this.fromLsn;
  }

  // The next record, or null when every written record has been returned. Not reentrant.
  async next(): Promise<LogRecord | null> {
    assert(!this.reading, "LogCursor.next() called while a call is running");
    this.reading = true;
    try {
      while (this.scanner.expectedLsn <= this.source.writtenLsn()) {
        const record = await this.step();
        if (record !== null && record.lsn >= this.fromLsn) return record;
      }
      return null;
    } finally {
      this.reading = false;
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<LogRecord> {
    for (;;) {
      const record = await this.next();
      if (record === null) return;
      yield record;
    }
  }

  private async step(): Promise<LogRecord | null> {
    const expected = this.scanner.expectedLsn;
    this.checkStillOnDisk(expected);
    const step = await this.scanner.next();
    if (step.kind === "record") {
      // The bytes were read before the check: they may come from space reused meanwhile.
      // The checks make that a stop, not a wrong record; but be sure anyway.
      this.checkStillOnDisk(expected);
      return step.record;
    }
    if (step.kind === "wrap") return null;
    this.checkStillOnDisk(expected);
    throw new OperatingError("LOG_CORRUPT", { reason: step.reason, lsn: expected, position: step.position }, { cause: step.error });
  }

  private checkStillOnDisk(lsn: bigint): void {
    const tailLsn = this.source.diskTailLsn();
    if (lsn < tailLsn) {
      throw new OperatingError("OUT_OF_RANGE", { what: "log cursor", lsn, tailLsn, reason: "released" });
    }
  }
}
