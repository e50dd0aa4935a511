// A bounded cache of one fact per chunk of a volume: "this chunk was already preserved (or
// written) since the newest snapshot, so a change to it copies nothing". The truth is the
// chunk's birth epoch in the metadata; this only saves the lookup on the hot write path.
//
// Pages of snapshotFreshPageBits bits, created on first use; at most snapshotFreshPagesMax of
// them (the oldest page is dropped first), so memory is bounded whatever the volume's size.
// Forgetting a bit is always safe: the next change to that chunk looks its birth up again.

import { snapshotFreshPageBits, snapshotFreshPagesMax } from "../constants.js";

export class FreshChunks {
  private readonly pages = new Map<number, Uint8Array>();

  constructor(private readonly pagesMax = snapshotFreshPagesMax) {}

  has(chunk: number): boolean {
    const page = this.pages.get(Math.floor(chunk / snapshotFreshPageBits));
    if (page === undefined) return false;
    const bit = chunk % snapshotFreshPageBits;
    return (page[bit >> 3]! & (1 << (bit & 7))) !== 0;
  }

  add(chunk: number): void {
    const index = Math.floor(chunk / snapshotFreshPageBits);
    let page = this.pages.get(index);
    if (page === undefined) {
      if (this.pages.size >= this.pagesMax) this.pages.delete(this.pages.keys().next().value!);
      page = new Uint8Array(snapshotFreshPageBits / 8);
      this.pages.set(index, page);
    }
    const bit = chunk % snapshotFreshPageBits;
    page[bit >> 3]! |= 1 << (bit & 7);
  }

  // A new snapshot: no chunk is fresh relative to it.
  clear(): void {
    this.pages.clear();
  }

  get bytes(): number {
    return this.pages.size * (snapshotFreshPageBits / 8);
  }
}
