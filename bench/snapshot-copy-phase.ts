// The copy phase of a snapshot-writes round: right after a snapshot, the first write to each
// chunk copies it into the store first; once fio has touched (nearly) every chunk, writes run
// without copying. The round's IOPS mixes both phases in proportions that depend on how fast
// each went (and a short round may not finish the first); this isolates the copy. Every
// measured round replays the same fio offset sequence (its default seed), so the time from
// fio's start until copyShare of the volume's chunks are preserved is the same work at every
// snapshot count: the same first writes, the same chunks copied.
//
// While fio runs, the node's preservedChunks (GET /v1/status) and the server's CPU are sampled
// every pollIntervalMs into at most samplesMax samples: when full, every other sample is dropped
// and the interval between kept samples doubles, so memory is bounded however long the job.
// The phase ends at the first sample with copyShare of the volume's chunks preserved; its
// figures run from fio's start to that sample (resolution: the interval of kept samples). The
// polls cost the server one status request per interval.

import { processTreeCpuSeconds, sleep } from "./process-tree.js";
import type { SnapshotBench } from "./snapshot-bench.js";

const pollIntervalMs = 100;
const samplesMax = 512;
const copyShare = 0.5; // of the volume's chunks: reached after ~4 % of fio's first pass, even by a slow 5 s round

interface Sample {
  readonly atMs: number;
  readonly preservedChunks: number;
  readonly cpuSeconds: number;
}

export interface CopyPhase {
  readonly seconds: number; // fio's start → copyShare of the volume's chunks preserved
  readonly chunks: number; // preserved by then (the end sample's)
  readonly cpuMsPerChunk: number; // the server's CPU in the phase per chunk preserved (writes that copy nothing included)
  readonly resolutionMs: number; // the interval between kept samples
}

export class CopyPhaseSampler {
  private readonly samples: Sample[] = [];
  private keepEvery = 1; // polls per kept sample
  private polls = 0;
  private origin: Sample | null = null;
  private stopped = false;
  private loop: Promise<void> | null = null;

  constructor(private readonly bench: SnapshotBench, private readonly volume: string, private readonly serverPid: number) {}

  /** fio has started: the origin, then polls until stop(). */
  start(): void {
    this.origin = { atMs: performance.now(), preservedChunks: Number.NaN, cpuSeconds: processTreeCpuSeconds(this.serverPid) };
    this.loop = this.poll();
  }

  private async poll(): Promise<void> {
    while (!this.stopped) {
      const counters = await this.bench.counters(this.volume);
      this.polls += 1;
      if (this.polls % this.keepEvery === 0) this.keep({ atMs: performance.now(), preservedChunks: counters.preservedChunks, cpuSeconds: processTreeCpuSeconds(this.serverPid) });
      await sleep(pollIntervalMs);
    }
  }

  private keep(sample: Sample): void {
    this.samples.push(sample);
    if (this.samples.length < samplesMax) return;
    for (let index = 0; index < samplesMax / 2; index += 1) this.samples[index] = this.samples[2 * index + 1] as Sample;
    this.samples.length = samplesMax / 2;
    this.keepEvery *= 2;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  /** After stop(): the copy phase of a round that began with preservedBefore, on a volume of volumeChunks; null: the round never got there. */
  phase(preservedBefore: number, volumeChunks: number): CopyPhase | null {
    const origin = this.origin;
    if (origin === null) return null;
    const target = preservedBefore + Math.ceil(copyShare * volumeChunks);
    const end = this.samples.find((sample) => sample.preservedChunks >= target);
    if (end === undefined) return null;
    const chunks = end.preservedChunks - preservedBefore;
    return {
      seconds: (end.atMs - origin.atMs) / 1000,
      chunks,
      cpuMsPerChunk: (1000 * (end.cpuSeconds - origin.cpuSeconds)) / chunks,
      resolutionMs: pollIntervalMs * this.keepEvery,
    };
  }
}
