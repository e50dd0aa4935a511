// Wires a volume of a group to the NBD layer: reads go to the volume, every change goes
// through the group's write path (LSN, log, activity map). The NBD layer has already checked
// range, alignment and size, so here they are assumed. A replica's volumes are exported
// read-only through the same class: the NBD layer refuses changes (EPERM) before they get here.

import type { Extent } from "../io/block-file.js";
import type { NbdExport, NbdExportFlags, WriteOptions, ZeroOptions } from "../nbd/export.js";
import { OperatingError } from "../errors.js";
import type { Group } from "../group/group.js";

// The group (primary) or replica (secondary) a volume belongs to, as the export needs it.
export type VolumeOwner = Pick<Group, "name" | "read" | "write" | "flush" | "trim" | "zero">;
import type { Volume } from "../volume/volume.js";

export class VolumeExport implements NbdExport {
  readonly flags: NbdExportFlags;
  connections = 0;

  constructor(
    private readonly group: VolumeOwner,
    private readonly volume: Volume,
    readOnly: boolean,
  ) {
    this.flags = {
      readOnly,
      canTrim: true,
      canZero: true,
      canFastZero: volume.canFastZero,
      canCache: true,
      // FLUSH makes the whole image durable (write-ahead: the whole log), so it covers the
      // writes completed on every connection.
      canMultiConn: true,
    };
  }

  get name(): string {
    return this.volume.name;
  }

  get description(): string {
    return `volume ${this.volume.name} of group ${this.group.name}`;
  }

  size(): number {
    return this.volume.size;
  }

  read(offset: number, target: Buffer): Promise<void> {
    return this.group.read(this.volume, offset, target);
  }

  write(offset: number, data: Buffer, options: WriteOptions): Promise<void> {
    return this.group.write(this.volume, offset, data, options.fua);
  }

  flush(): Promise<void> {
    return this.group.flush(this.volume);
  }

  trim(offset: number, length: number, options: WriteOptions): Promise<void> {
    return this.group.trim(this.volume, offset, length, options.fua);
  }

  async zero(offset: number, length: number, options: ZeroOptions): Promise<void> {
    if (options.fastZero && !this.volume.canFastZero) throw new OperatingError("NOT_SUPPORTED", { what: "fast zero", volume: this.volume.name });
    await this.group.zero(this.volume, offset, length, options.noHole, options.fua);
  }

  async cache(offset: number, length: number): Promise<void> {
    // Prefetch hint: read the range once so it is in the page cache. Bounded by the NBD layer.
    const buffer = Buffer.allocUnsafe(Math.min(length, 1024 * 1024));
    for (let done = 0; done < length; done += buffer.length) {
      const piece = Math.min(buffer.length, length - done);
      await this.volume.read(buffer.subarray(0, piece), offset + done);
    }
  }

  async allocation(offset: number, length: number, extentsMax: number): Promise<Extent[] | null> {
    return this.volume.allocation(offset, length, extentsMax);
  }

  attach(): void {
    this.connections += 1;
  }

  detach(): void {
    this.connections -= 1;
  }
}
