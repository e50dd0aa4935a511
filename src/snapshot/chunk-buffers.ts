// Chunk-sized buffers for copies into the store, reused: a burst of copy-on-write after a
// snapshot would otherwise allocate (and the collector reclaim) a chunk per chunk preserved.
// At most snapshotChunkBuffersMax are kept; more in use at once are allocated and dropped.

import { snapshotChunkBuffersMax } from "../constants.js";

export class ChunkBuffers {
  private readonly free: Buffer[] = [];

  constructor(private readonly chunkSize: number) {}

  // Contents are whatever the last user left: callers fill what they read.
  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.chunkSize);
  }

  give(buffer: Buffer): void {
    if (this.free.length < snapshotChunkBuffersMax) this.free.push(buffer);
  }
}
