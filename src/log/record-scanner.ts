// Reads consecutive records of one log from disk, following wrap markers, through a read-ahead
// window (one read yields many records). Shared by the recovery scan and by cursors.
//
// Each step checks, in this order and before reading a payload: the header's structure and
// size (the record must fit before the end of the data area), that it belongs to this log, that
// it carries the expected LSN and links to the previous record's checksum; then the whole
// record's checksum. The first failure ends the scan with its reason; nothing is returned from
// a record that failed a check.
//
// The window is a snapshot. Bytes of a record the log had not yet written when the window was
// read are stale, so the owner says which LSNs were written at read time (stableLsn) and the
// window is read again before a later record is decoded from it.

import { assert } from "../assert.js";
import { sectorSize } from "../constants.js";
import type { BlockFile } from "../io/block-file.js";
import {
  type LogCorruptReason,
  type LogRecord,
  logCorruptReason,
  RecordKind,
  recordCheckExpected,
  recordDecode,
  recordDiskSize,
  recordHeaderDecode,
} from "./record.js";

export interface ScanLayout {
  readonly dataStart: number;
  readonly dataEnd: number;
  readonly logId: bigint;
}

export type ScanStep =
  | { readonly kind: "record"; readonly record: LogRecord; readonly position: number; readonly diskBytes: number }
  | { readonly kind: "wrap"; readonly position: number }
  | { readonly kind: "stop"; readonly reason: LogCorruptReason; readonly position: number; readonly error: Error };

export class RecordScanner {
  private window = Buffer.alloc(0);
  private windowPosition = 0;
  private windowStableLsn = -1n;

  constructor(
    private readonly file: BlockFile,
    private readonly layout: ScanLayout,
    private readonly readChunkBytes: number,
    // The highest LSN whose bytes are on the file now (reads see them).
    private readonly stableLsn: () => bigint,
    public position: number,
    public expectedLsn: bigint,
    public previousChecksum: number,
  ) {
    assert(position >= layout.dataStart && position <= layout.dataEnd && position % sectorSize === 0, "scan position");
  }

  // Reads the next step. After a "record" or "wrap" the scanner has moved past it; after a
  // "stop" it stays where it was (the caller decides what that means).
  async next(): Promise<ScanStep> {
    if (this.position === this.layout.dataEnd) this.position = this.layout.dataStart;
    const position = this.position;
    const expected = { lsn: this.expectedLsn, logId: this.layout.logId, previousChecksum: this.previousChecksum };
    let diskBytes: number;
    let kind: number;
    try {
      const header = recordHeaderDecode(await this.bytes(position, sectorSize));
      recordCheckExpected(header, expected);
      diskBytes = recordDiskSize(header.payloadSize);
      kind = header.kind;
      if (diskBytes > this.layout.dataEnd - position) return this.stop("size", position, new Error("record crosses the end of the data area"));
    } catch (error) {
      return this.stopOn(error, position);
    }
    let record: LogRecord;
    try {
      record = recordDecode(await this.bytes(position, diskBytes), expected);
    } catch (error) {
      return this.stopOn(error, position);
    }
    if (kind === RecordKind.wrap) {
      // A marker at the data start would send the scan in a circle: every record fits there.
      if (position === this.layout.dataStart) return this.stop("field", position, new Error("wrap marker at the data start"));
      this.position = this.layout.dataStart;
      return { kind: "wrap", position };
    }
    this.position = position + diskBytes;
    this.expectedLsn += 1n;
    this.previousChecksum = record.checksum;
    return { kind: "record", record, position, diskBytes };
  }

  private stopOn(error: unknown, position: number): ScanStep {
    const reason = logCorruptReason(error);
    if (reason === null) throw error; // a disk error or a bug: not the end of the log
    return this.stop(reason, position, error as Error);
  }

  private stop(reason: LogCorruptReason, position: number, error: Error): ScanStep {
    return { kind: "stop", reason, position, error };
  }

  // `length` bytes at `position` (which do not cross the end of the data area), from the
  // window when it holds them and is fresh enough, otherwise from a new read.
  private async bytes(position: number, length: number): Promise<Buffer> {
    const start = position - this.windowPosition;
    const fresh = this.expectedLsn <= this.windowStableLsn;
    if (fresh && start >= 0 && start + length <= this.window.length) return this.window.subarray(start, start + length);
    const stableLsn = this.stableLsn();
    const size = Math.max(length, Math.min(this.readChunkBytes, this.layout.dataEnd - position));
    // A new buffer for each read: records already returned keep views of the old one.
    const window = Buffer.allocUnsafe(size);
    await this.file.read(window, position);
    this.window = window;
    this.windowPosition = position;
    this.windowStableLsn = stableLsn;
    return window.subarray(0, length);
  }
}
