// The chunks a restore in the background has still to copy into the volume: a bitmap in pages
// of restorePendingPageBits bits. Only pages with a chunk left are kept (in memory and in the
// metadata's `restore` table, one entry per page), so memory is at most one bit per chunk of
// the volume, and a batch of restored chunks rewrites only the pages it touched.
//
// The metadata is the truth; this is its copy. A chunk restored (its content written and the
// volume synced) is *leaving*: the commit that clears its bit is on its way, and has() still
// says pending until that commit is durable (finishLeaving), so no change to it goes ahead
// before then. Commits of concurrent batches may share a page and land in any order, so each
// writes the page as it is when its transaction runs (pagesNow): every bit cleared there is a
// chunk whose restored content is already durable, and the last one written is the newest.

import { assert } from "../assert.js";
import { restorePendingPageBits } from "../constants.js";

export interface PendingPage {
  readonly page: number;
  readonly bits: Uint8Array | null; // null: no chunk of the page is left (the entry goes)
}

const pageBytes = restorePendingPageBits / 8;

function bitCount(bits: Uint8Array): number {
  let count = 0;
  for (const byte of bits) {
    let value = byte;
    while (value !== 0) {
      value &= value - 1;
      count += 1;
    }
  }
  return count;
}

export class PendingChunks {
  private readonly pages = new Map<number, Uint8Array>();
  private countValue = 0;
  private readonly leaving = new Set<number>(); // restored, their commit on its way

  static fromPages(pages: Iterable<PendingPage>): PendingChunks {
    const pending = new PendingChunks();
    pending.apply(pages);
    return pending;
  }

  get count(): number {
    return this.countValue;
  }

  has(chunk: number): boolean {
    const page = this.pages.get(Math.floor(chunk / restorePendingPageBits));
    if (page === undefined) return false;
    const bit = chunk % restorePendingPageBits;
    return (page[bit >> 3]! & (1 << (bit & 7))) !== 0;
  }

  // Whether any chunk in [first, last] is left.
  anyIn(first: number, last: number): boolean {
    if (this.countValue === 0) return false;
    for (let chunk = first; chunk <= last; chunk += 1) if (this.has(chunk)) return true;
    return false;
  }

  // Adds a chunk (building a new set before its first commit).
  add(chunk: number): void {
    const index = Math.floor(chunk / restorePendingPageBits);
    let page = this.pages.get(index);
    if (page === undefined) {
      page = new Uint8Array(pageBytes);
      this.pages.set(index, page);
    }
    const bit = chunk % restorePendingPageBits;
    if ((page[bit >> 3]! & (1 << (bit & 7))) !== 0) return;
    page[bit >> 3]! |= 1 << (bit & 7);
    this.countValue += 1;
  }

  // Every page, for the commit that records a new set.
  allPages(): PendingPage[] {
    return [...this.pages].map(([page, bits]) => ({ page, bits: Uint8Array.from(bits) }));
  }

  beginLeaving(chunks: readonly number[]): void {
    for (const chunk of chunks) {
      assert(this.has(chunk) && !this.leaving.has(chunk), `chunk ${chunk} is pending and not leaving yet`);
      this.leaving.add(chunk);
    }
  }

  abortLeaving(chunks: readonly number[]): void {
    for (const chunk of chunks) this.leaving.delete(chunk);
  }

  // The pages of `chunks` as they are now without every leaving chunk (copies).
  pagesNow(chunks: readonly number[]): PendingPage[] {
    const indexes = new Set(chunks.map((chunk) => Math.floor(chunk / restorePendingPageBits)));
    const pages: PendingPage[] = [];
    for (const index of indexes) {
      const current = this.pages.get(index);
      if (current === undefined) continue;
      const bits = Uint8Array.from(current);
      for (const chunk of this.leaving) {
        if (Math.floor(chunk / restorePendingPageBits) !== index) continue;
        const bit = chunk % restorePendingPageBits;
        bits[bit >> 3]! &= ~(1 << (bit & 7));
      }
      pages.push({ page: index, bits: bits.some((byte) => byte !== 0) ? bits : null });
    }
    return pages;
  }

  // Their commit is durable: the chunks are no longer pending.
  finishLeaving(chunks: readonly number[]): void {
    for (const chunk of chunks) {
      assert(this.leaving.delete(chunk), `chunk ${chunk} was leaving`);
      const page = this.pages.get(Math.floor(chunk / restorePendingPageBits))!;
      const bit = chunk % restorePendingPageBits;
      page[bit >> 3]! &= ~(1 << (bit & 7));
      this.countValue -= 1;
      if (page.every((byte) => byte === 0)) this.pages.delete(Math.floor(chunk / restorePendingPageBits));
    }
  }

  // Takes committed pages in.
  apply(pages: Iterable<PendingPage>): void {
    for (const { page, bits } of pages) {
      const before = this.pages.get(page);
      if (before !== undefined) this.countValue -= bitCount(before);
      if (bits === null) this.pages.delete(page);
      else {
        assert(bits.length === pageBytes, "a pending page's size");
        this.pages.set(page, Uint8Array.from(bits));
        this.countValue += bitCount(bits);
      }
    }
  }

  // Up to `max` pending chunks at or after `from` (ascending), then from 0 if fewer were found.
  next(from: number, max: number): number[] {
    const found: number[] = [];
    const scan = (start: number, end: number) => {
      const indexes = [...this.pages.keys()].filter((index) => (index + 1) * restorePendingPageBits > start && index * restorePendingPageBits < end).sort((a, b) => a - b);
      for (const index of indexes) {
        const page = this.pages.get(index)!;
        const base = index * restorePendingPageBits;
        for (let byte = 0; byte < pageBytes && found.length < max; byte += 1) {
          if (page[byte] === 0) continue;
          for (let bit = 0; bit < 8 && found.length < max; bit += 1) {
            const chunk = base + byte * 8 + bit;
            if (chunk >= start && chunk < end && (page[byte]! & (1 << bit)) !== 0) found.push(chunk);
          }
        }
        if (found.length >= max) return;
      }
    };
    scan(from, Number.MAX_SAFE_INTEGER);
    if (found.length < max && from > 0) scan(0, from);
    return found;
  }

  get bytes(): number {
    return this.pages.size * pageBytes;
  }
}
