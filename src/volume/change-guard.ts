// What a volume's changes must pass before they touch its image, when something (its snapshot
// store, src/snapshot/) still needs the data they overwrite. The volume knows nothing of
// snapshots; whoever changes it (group/apply-change.ts) asks its guard.
//
//   reserve()   before the change gets its LSN: synchronous, and it refuses the change (a typed
//               error, e.g. SNAPSHOT_STORE_FULL) while nothing is logged or written yet.
//   preserve()  just before the image write: copies what must be kept, durably.
//   release()   after the image write (or when the change failed): returns what was unused.

export interface ChangeTicket {
  preserve(): Promise<void>;
  release(): void;
}

export interface ChangeGuard {
  // null: nothing in the range needs preserving.
  reserve(offset: number, length: number): ChangeTicket | null;
  // Changes with a smaller LSN are durable in the image already (an operation synced them, and
  // may have overwritten them since, e.g. a restore): redo must not apply them again.
  readonly durableThroughLsn: bigint;
}

// Part of a volume's content that lives elsewhere for a while (a restore in the background: the
// snapshot's chunks not yet copied back). The volume knows nothing of snapshots.
export interface ReadOverlay {
  // Synchronous: whether [offset, offset + length) touches what the overlay holds.
  covers(offset: number, length: number): boolean;
  // The range's content (the overlay's pieces, and the image's for the rest).
  read(target: Buffer, offset: number): Promise<void>;
  // The overlay's pieces in the range, to report as data in allocation queries.
  dataExtents(offset: number, length: number): { offset: number; length: number }[];
}
