// Serves one snapshot over NBD as the export `volume@snapshot`: reads resolve chunk by chunk
// through the volume's snapshot store; a writable snapshot takes writes, trims and zeroes into
// its own chunks (never its origin's or its siblings'), each one a record in the group's log; a
// read-only one (and every twin on a secondary) is refused at the NBD edge (EPERM) by its flags.

import { OperatingError } from "../errors.js";
import type { Extent } from "../io/block-file.js";
import type { NbdExport, NbdExportFlags, WriteOptions, ZeroOptions } from "../nbd/export.js";
import type { SnapshotStore } from "../snapshot/snapshot-store.js";

// How a write reaches a writable snapshot: through its group's log (the primary), so that
// its twins get it in write order. data null: zeroes.
export type SnapshotWriter = (snapshot: string, offset: number, data: Buffer | null, length: number, fua: boolean) => Promise<void>;

export class SnapshotExport implements NbdExport {
  readonly flags: NbdExportFlags;
  connections = 0;

  constructor(
    private readonly store: SnapshotStore,
    readonly volumeName: string,
    readonly snapshot: string,
    private readonly writer: SnapshotWriter | null, // null: a secondary's twin, which changes only through the stream
  ) {
    const writable = store.image(snapshot).writable && writer !== null;
    this.flags = {
      readOnly: !writable,
      canTrim: writable,
      canZero: writable,
      canFastZero: false,
      canCache: true,
      canMultiConn: true, // FLUSH syncs the whole store, which covers every connection's writes
    };
  }

  get name(): string {
    return `${this.volumeName}@${this.snapshot}`;
  }

  get description(): string {
    const image = this.store.image(this.snapshot);
    return `${image.writable ? "writable" : "read-only"} snapshot ${this.snapshot} of volume ${this.volumeName}${this.writer === null ? " (a twin: read-only here)" : ""}`;
  }

  size(): number {
    return this.store.has(this.snapshot) ? this.store.image(this.snapshot).size : 0;
  }

  read(offset: number, target: Buffer): Promise<void> {
    return this.store.read(this.snapshot, offset, target);
  }

  private change(offset: number, data: Buffer | null, length: number, fua: boolean): Promise<void> {
    if (this.writer === null) return Promise.reject(new OperatingError("READ_ONLY", { export: this.name }));
    return this.writer(this.snapshot, offset, data, length, fua);
  }

  write(offset: number, data: Buffer, options: WriteOptions): Promise<void> {
    return this.change(offset, data, data.length, options.fua);
  }

  flush(): Promise<void> {
    return this.store.flush();
  }

  trim(offset: number, length: number, options: WriteOptions): Promise<void> {
    return this.change(offset, null, length, options.fua);
  }

  async zero(offset: number, length: number, options: ZeroOptions): Promise<void> {
    if (options.fastZero) throw new OperatingError("NOT_SUPPORTED", { what: "fast zero", export: this.name });
    await this.change(offset, null, length, options.fua);
  }

  async cache(): Promise<void> {
    // a hint; the store's chunks are read on demand
  }

  allocation(offset: number, length: number, extentsMax: number): Promise<Extent[] | null> {
    return this.store.allocation(this.snapshot, offset, length, extentsMax);
  }

  attach(): void {
    this.connections += 1;
  }

  detach(): void {
    this.connections -= 1;
  }
}
