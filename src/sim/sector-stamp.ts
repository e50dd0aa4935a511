// Every sector the simulated client writes is stamped: its content is a pure function of the
// write's id and the sector's place, so any image can be read back as one stamp per sector
// (0: zeroes; -1: bytes no write ever produced). The group's volumes share one sector space:
// volume i's sectors follow volume i-1's.
//
//   word 0: stamp (the write's id)   word 1: global sector index   words 2..127: a mix of both

import { assert } from "../assert.js";

export const sectorBytes = 512;
const wordsPerSector = sectorBytes / 4;

export interface SimVolumeSpec {
  readonly id: number;
  readonly name: string;
  readonly size: number; // bytes, a multiple of sectorBytes
}

export interface LaidOutVolume extends SimVolumeSpec {
  readonly firstSector: number;
  readonly sectors: number;
}

export class VolumeLayout {
  readonly volumes: readonly LaidOutVolume[];
  readonly sectors: number;

  constructor(specs: readonly SimVolumeSpec[]) {
    let next = 0;
    this.volumes = specs.map((spec) => {
      assert(spec.size % sectorBytes === 0, "volume sizes are whole sectors");
      const laid = { ...spec, firstSector: next, sectors: spec.size / sectorBytes };
      next += laid.sectors;
      return laid;
    });
    this.sectors = next;
  }

  volume(id: number): LaidOutVolume {
    const found = this.volumes.find((volume) => volume.id === id);
    assert(found !== undefined, `no simulated volume ${id}`);
    return found;
  }
}

function word(stamp: number, sector: number, index: number): number {
  return (Math.imul(stamp, 0x9e3779b1) + Math.imul(sector, 40503) + index) >>> 0;
}

export function sectorFill(target: Buffer, at: number, stamp: number, sector: number): void {
  assert(stamp > 0, "a stamp is positive");
  target.writeUInt32LE(stamp, at);
  target.writeUInt32LE(sector, at + 4);
  for (let index = 2; index < wordsPerSector; index++) target.writeUInt32LE(word(stamp, sector, index), at + index * 4);
}

// The data of a write with this stamp at the given global sectors.
export function stampedData(stamp: number, firstSector: number, sectors: number): Buffer {
  const data = Buffer.allocUnsafe(sectors * sectorBytes);
  for (let index = 0; index < sectors; index++) sectorFill(data, index * sectorBytes, stamp, firstSector + index);
  return data;
}

// The stamp of the sector at data[at], expected to be global sector `sector`.
export function stampAt(data: Buffer, at: number, sector: number): number {
  const stamp = data.readUInt32LE(at);
  if (stamp === 0) {
    for (let index = 1; index < wordsPerSector; index++) if (data.readUInt32LE(at + index * 4) !== 0) return -1;
    return 0;
  }
  if (data.readUInt32LE(at + 4) !== sector || stamp > 0x7fff_ffff) return -1;
  for (let index = 2; index < wordsPerSector; index++) if (data.readUInt32LE(at + index * 4) !== word(stamp, sector, index)) return -1;
  return stamp;
}

// Reads an image (a volume's bytes) into stamps[firstSector …].
export function stampsOf(image: Buffer, firstSector: number, stamps: Int32Array): void {
  for (let index = 0; index * sectorBytes < image.length; index++) stamps[firstSector + index] = stampAt(image, index * sectorBytes, firstSector + index);
}
