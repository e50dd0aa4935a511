// The volume table message (docs/PROTOCOL.md §4.7): which volumes the group has on the primary,
// by id (log records name volumes by id), with their names and sizes. The primary sends it
// after `accept` and again whenever the table changes, at its place in the stream: a replica
// applies it after every record with an LSN ≤ atLsn and before any record after it, so a
// volume exists, at its size, before the first record that writes to it is applied.
//
//   volumeTable (16 + Σ(13 + nameLength) bytes)
//   0 atLsn u64 │ 8 count u32 │ 12 reserved u32
//   16 + …: volumeId u32 │ size u64 │ nameLength u8 │ name
//
// Volumes are in increasing id order; ids and names are unique; sizes are multiples of 512
// bytes, 1 … volumeSizeMax. A volume missing from the table no longer exists on the primary.

import { assert } from "../assert.js";
import { sectorSize, volumeIdMax, volumeNameLengthMax, volumeSizeMax, volumesPerGroupMax } from "../constants.js";
import { FrameError } from "./frame-error.js";
import { PayloadReader, PayloadWriter } from "./payload-codec.js";

export const volumeTableHeaderSize = 16;
export const volumeTableSizeMin = volumeTableHeaderSize;
export const volumeTableSizeMax = volumeTableHeaderSize + volumesPerGroupMax * (13 + volumeNameLengthMax);

export interface VolumeTableEntry {
  readonly volumeId: number;
  readonly name: string;
  readonly size: number;
}

export interface VolumeTable {
  readonly kind: "volumeTable";
  readonly atLsn: bigint; // the table holds after every record ≤ atLsn
  readonly volumes: readonly VolumeTableEntry[];
}

function entryProblem(entry: VolumeTableEntry, previous: VolumeTableEntry | undefined): string | null {
  if (!Number.isInteger(entry.volumeId) || entry.volumeId < 1 || entry.volumeId > volumeIdMax) return "volumeId";
  if (previous !== undefined && previous.volumeId >= entry.volumeId) return "order";
  if (!Number.isSafeInteger(entry.size) || entry.size <= 0 || entry.size % sectorSize !== 0 || entry.size > volumeSizeMax) return "size";
  return null;
}

export function volumeTableEncode(table: VolumeTable): Buffer {
  assert(table.volumes.length <= volumesPerGroupMax, "volume table too long");
  const size = table.volumes.reduce((sum, entry) => sum + 13 + Buffer.byteLength(entry.name), volumeTableHeaderSize);
  const writer = new PayloadWriter(size).u64(table.atLsn).u32(table.volumes.length).u32(0);
  table.volumes.forEach((entry, index) => {
    assert(entryProblem(entry, table.volumes[index - 1]) === null, `volume table entry ${index} invalid`);
    writer.u32(entry.volumeId).u64(entry.size).name(entry.name);
  });
  return writer.done();
}

export function volumeTableDecode(payload: Buffer): VolumeTable {
  const reader = new PayloadReader(payload);
  const atLsn = reader.u64();
  const count = reader.u32();
  reader.zero32("reserved");
  if (count > volumesPerGroupMax) throw new FrameError("field", { field: "count", value: count });
  const volumes: VolumeTableEntry[] = [];
  const names = new Set<string>();
  for (let index = 0; index < count; index++) {
    const entry = { volumeId: reader.u32(), size: reader.u64Number("size"), name: reader.name("name") };
    const problem = entryProblem(entry, volumes[index - 1]) ?? (names.has(entry.name) ? "name" : null);
    if (problem !== null) throw new FrameError("field", { field: problem, index });
    names.add(entry.name);
    volumes.push(entry);
  }
  reader.end();
  return { kind: "volumeTable", atLsn, volumes };
}
