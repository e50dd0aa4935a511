// The `in-band-operations` row (target lockstep-operations): what an operation in the
// replication stream costs against re-replicating the data it changed, for snapshot create
// and snapshot restore, on a volume of 4 × --image-size (4 GiB) with --image-size (1 GiB)
// changed.
//
//    1  `snapshot create disk0@s0` (the image both sites hold before the change); the primary's
//       image file is copied to baseline-s0.img: the baseline secondary's image of s0
//    2  fio writes the change: 1 MiB random writes, fio's random map (no extent twice),
//       seeded, over the whole volume, through the primary; then `drain`
//    3  create, in band: `snapshot create disk0@s1` on the primary, then `drain`
//       create, baseline: `snapshot diff disk0@s0 disk0@s1`, then those regions of the
//       primary's disk0@s1 copied into baseline-s0.img (changed-region-copy.ts)
//    4  fio writes the change again (another seed), `drain`; the primary's image file copied
//       to baseline-restore.img (the baseline secondary's image before the restore);
//       `snapshot diff disk0@s1 disk0`: the regions the restore will change
//    5  restore, in band: `snapshot restore disk0@s1` on the primary, then `drain`
//       restore, baseline: those regions of the primary's disk0@s1 copied into
//       baseline-restore.img
//    6  outside every timing: sha256 of the primary's disk0@s1 against the secondary's twin
//       disk0@s1, baseline-s0.img after step 3, both volumes and baseline-restore.img after 5
//
// Figures of each side:
//
//   bytes on the wire   in band: the link's bytes both ways (TLS records: the operation's
//                       record, the secondary's acks, any heartbeat) from the request until
//                       the drain returned, counted by a relay in front of the secondary
//                       (byte-relay.ts). Baseline: nbdcopy's NBD bytes both ways, counted the
//                       same way. The node's own figures (the record's size it reports, the
//                       link's recordBytesSent) are kept beside.
//   time until the      in band: from the request until `drain` (POST /v1/drain, issued when
//   secondary matches   the answer came) returned: the secondary applied the operation and the
//                       primary had finished it. Baseline: the same operation on the primary
//                       (the in-band request's time: the local part is the same, the record
//                       it logs is a few hundred bytes) + the diff + the copy with its flush.
//   write pause         what the node reports for the operation (pauseMs). The baseline runs
//                       the same local operation, so the same pause; its copy pauses nothing.
//
// Requests go to the admin API (what `lockstep snapshot …` sends), not through a CLI
// process, whose ~0.5 s start would swamp a create. Every timed step follows a page cache
// reset of every file of both nodes and of the baseline's copies.

import { rmSync } from "node:fs";
import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import { countsSince, type ByteRelay, type RelayCounts } from "./byte-relay.js";
import { RegionCopier, type Region, type RegionCopyResult } from "./changed-region-copy.js";
import type { NodePair } from "./node-pair.js";
import { pageCacheReset, type CacheResetResult } from "./page-cache.js";
import { commandCheck } from "./process-tree.js";
import type { SnapshotBench } from "./snapshot-bench.js";
import type { TargetContext } from "./target.js";
import { groupName, volumeName } from "./target-lockstep.js";

const mebibyte = 1024 ** 2;
const drainTimeoutMs = 600_000;
const hashTimeoutMs = 900_000;
const writeBlockSize = "1M";
const seeds = { change: 31, changeAgain: 32 } as const;
const snapshotBefore = "s0";
const snapshotAfter = "s1";

export interface OperationsSetup {
  readonly context: TargetContext;
  readonly pair: NodePair;
  readonly linkRelay: ByteRelay;
  readonly linkMode: string;
  readonly imagePath: string; // the primary's volume image (adopted)
  readonly volumeBytes: number;
  readonly changeBytes: number;
  readonly bench: SnapshotBench; // on the primary: fio writes, timed API requests
}

/** The in-band operation: one request to the primary, then drain. */
export interface InBandFigures {
  readonly lsn: string;
  readonly requestSeconds: number; // the API request on the primary
  readonly matchedSeconds: number; // the request's start → drain returned
  readonly pauseMs: number;
  readonly recordBytes: number; // the operation's record, as the node reports it for the link
  readonly recordBytesSent: number; // the link's stats.recordBytesSent over the same window
  readonly wire: RelayCounts & { readonly bytes: number };
  readonly bytesWritten: number | null; // a restore: what it wrote back into the primary's volume
}

export interface BaselineFigures {
  readonly localSeconds: number; // the operation on the primary: the in-band request's time
  readonly diffSeconds: number; // `snapshot diff` (API)
  readonly copy: RegionCopyResult;
  readonly matchedSeconds: number; // local + diff + copy
}

export interface OperationComparison {
  readonly operation: "create" | "restore";
  readonly command: string; // the operator's command of the in-band side
  readonly changedBytes: number; // what the diff found
  readonly inBand: InBandFigures;
  readonly baseline: BaselineFigures;
  readonly checks: string[]; // outside the timing
  readonly mismatches: number;
}

export interface OperationsRowResult {
  readonly row: string;
  readonly volumeBytes: number;
  readonly changeBytes: number;
  readonly linkMode: string;
  readonly comparisons: OperationComparison[];
  readonly cacheResets: CacheResetResult[]; // one before every timed step
  readonly observations: string[];
}

interface OperationAnswer {
  readonly lsn: string;
  readonly pauseMs: number;
  readonly recordBytes: number;
  readonly links: ReadonlyArray<{ readonly peer: string; readonly bytes: number; readonly inBand: boolean }>;
  readonly bytesWritten?: number;
}

interface DiffAnswer {
  readonly regions: Region[];
  readonly totalBytes: number;
  readonly truncated: boolean;
}

const mib = (bytes: number) => `${(bytes / mebibyte).toFixed(1)} MiB`;
const image = (snapshot: string | null) => (snapshot === null ? volumeName : `${volumeName}@${snapshot}`);

/** sha256 of an NBD export (read with nbdcopy) or of a file. */
async function sha256(source: { uri: string } | { path: string }): Promise<string> {
  const stdout = "uri" in source
    ? await commandCheck("bash", ["-o", "pipefail", "-c", 'nbdcopy -- "$1" - | sha256sum', "sha256", source.uri], { timeoutMs: hashTimeoutMs })
    : await commandCheck("sha256sum", [source.path], { timeoutMs: hashTimeoutMs });
  return stdout.trim().split(/\s+/)[0] ?? "";
}

class OperationsRun {
  readonly observations: string[] = [];
  readonly cacheResets: CacheResetResult[] = [];

  constructor(private readonly setup: OperationsSetup) {}

  private get primary() {
    return this.setup.pair.primary;
  }

  private progress(message: string): void {
    this.setup.bench.progress(`in-band-operations: ${message}`);
  }

  async cacheReset(extraFiles: readonly string[]): Promise<void> {
    const { context, pair, imagePath } = this.setup;
    this.cacheResets.push(await pageCacheReset(imagePath, [...pair.stateFiles(), ...extraFiles], context.cacheReset, context.fincoreAvailable));
  }

  async drain(): Promise<void> {
    await this.primary.api("POST", "/v1/drain", { group: groupName, timeoutMs: drainTimeoutMs }, drainTimeoutMs + 10_000);
  }

  /** fio's seeded 1 MiB random writes through the primary, then the link's catch-up. */
  async write(label: string, randomSeed: number): Promise<void> {
    const { bench, pair, volumeBytes, changeBytes } = this.setup;
    const seconds = await bench.fioWrite({ name: `change-${randomSeed}`, volume: volumeName, blockSize: writeBlockSize, spanBytes: volumeBytes, bytes: changeBytes, randomSeed });
    const catchUp = await pair.catchUp(drainTimeoutMs);
    const text = `${label}: ${mib(changeBytes)} of ${writeBlockSize} random writes (seed ${randomSeed}) in ${seconds.toFixed(1)} s, ` +
      `link ${mib(catchUp.lagBytesAtEnd)} behind at the end, drained in ${catchUp.drainSeconds?.toFixed(2) ?? "-"} s`;
    this.progress(text);
    this.observations.push(text);
    if (catchUp.error !== null) throw new Error(`drain after the ${label} failed: ${catchUp.error}`);
    if (catchUp.overflows > 0 || catchUp.nudges > 0) this.observations.push(`${label}: the link overflowed ${catchUp.overflows} time(s), ${catchUp.nudges} nudge write(s)`);
  }

  async snapshot(name: string): Promise<void> {
    await this.primary.api("POST", "/v1/snapshots", { image: image(name) });
    await this.drain();
  }

  async diff(a: string, b: string): Promise<{ diff: DiffAnswer; seconds: number }> {
    const { value, seconds } = await this.setup.bench.apiTimed<DiffAnswer>("GET", `/v1/snapshots-diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    if (value.truncated) throw new Error(`snapshot diff ${a} ${b}: more regions than one answer holds`);
    return { diff: value, seconds };
  }

  /** The page cache reset, the request, then drain; the link's bytes over that window. */
  async inBand(extraFiles: readonly string[], request: () => Promise<OperationAnswer>): Promise<InBandFigures> {
    const { pair, linkRelay } = this.setup;
    await this.cacheReset(extraFiles);
    const linkBefore = await pair.link();
    const wireBefore = linkRelay.counts();
    const startMs = performance.now();
    const answer = await request();
    const answeredMs = performance.now();
    await this.drain();
    const matchedMs = performance.now();
    const wire = countsSince(wireBefore, linkRelay.counts());
    const linkAfter = await pair.link();
    return {
      lsn: answer.lsn,
      requestSeconds: (answeredMs - startMs) / 1000,
      matchedSeconds: (matchedMs - startMs) / 1000,
      pauseMs: answer.pauseMs,
      recordBytes: answer.links.find((link) => link.inBand)?.bytes ?? answer.recordBytes,
      recordBytesSent: linkAfter.stats.recordBytesSent - linkBefore.stats.recordBytesSent,
      wire,
      bytesWritten: answer.bytesWritten ?? null,
    };
  }

  /** The page cache reset, then the changed regions of the primary's snapshotAfter copied into destinationPath. */
  async copy(name: string, destinationPath: string, regions: readonly Region[], extraFiles: readonly string[]): Promise<RegionCopyResult> {
    const { context, volumeBytes } = this.setup;
    const copier = await RegionCopier.start(context.workDir, name, destinationPath, volumeBytes);
    try {
      await this.cacheReset(extraFiles);
      return await copier.copy(regions, this.primary.socketPath, image(snapshotAfter));
    } finally {
      await copier.stop();
    }
  }

  /** Each image's sha256 against the expected one; a line per check. */
  async check(expected: string, images: ReadonlyArray<readonly [string, { uri: string } | { path: string }]>): Promise<{ lines: string[]; mismatches: number }> {
    const lines: string[] = [];
    let mismatches = 0;
    for (const [label, source] of images) {
      const hash = await sha256(source);
      if (hash !== expected) mismatches += 1;
      lines.push(`${label}: ${hash === expected ? "equal" : `DIFFERENT (${hash.slice(0, 16)})`}`);
    }
    return { lines, mismatches };
  }

  async create(baselineImagePath: string): Promise<{ comparison: OperationComparison; expected: string }> {
    const { pair } = this.setup;
    const inBand = await this.inBand([baselineImagePath], async () => {
      const answer = await this.primary.api<{ snapshot: OperationAnswer }>("POST", "/v1/snapshots", { image: image(snapshotAfter) });
      return answer.snapshot;
    });
    this.progress(`create in band: ${inBand.wire.bytes} bytes on the wire, secondary matched after ${inBand.matchedSeconds.toFixed(3)} s, paused ${inBand.pauseMs} ms`);
    await this.cacheReset([baselineImagePath]);
    const { diff, seconds: diffSeconds } = await this.diff(image(snapshotBefore), image(snapshotAfter));
    const copy = await this.copy("create", baselineImagePath, diff.regions, [baselineImagePath]);
    const baseline = { localSeconds: inBand.requestSeconds, diffSeconds, copy, matchedSeconds: inBand.requestSeconds + diffSeconds + copy.seconds };
    this.progress(`create baseline: ${copy.wire.bytes} bytes on the wire, ${baseline.matchedSeconds.toFixed(2)} s`);
    const expected = await sha256({ uri: this.primary.uri(image(snapshotAfter)) });
    const checks = await this.check(expected, [
      [`the secondary's twin ${image(snapshotAfter)} = the primary's (sha256)`, { uri: pair.secondary.uri(image(snapshotAfter)) }],
      [`baseline: the copy of ${image(snapshotBefore)} after the region copy = the primary's ${image(snapshotAfter)} (sha256)`, { path: baselineImagePath }],
    ]);
    const comparison: OperationComparison = {
      operation: "create", command: `lockstep snapshot create ${image(snapshotAfter)}`, changedBytes: diff.totalBytes,
      inBand, baseline, checks: checks.lines, mismatches: checks.mismatches,
    };
    return { comparison, expected };
  }

  async restore(baselineImagePath: string, expected: string): Promise<OperationComparison> {
    const { pair } = this.setup;
    await this.cacheReset([baselineImagePath]);
    const { diff, seconds: diffSeconds } = await this.diff(image(snapshotAfter), image(null)); // the regions the restore will write back
    const inBand = await this.inBand([baselineImagePath], () =>
      this.primary.api<OperationAnswer>("POST", `/v1/snapshots/${encodeURIComponent(image(snapshotAfter))}/restore`, {}, drainTimeoutMs));
    this.progress(`restore in band: ${inBand.wire.bytes} bytes on the wire, secondary matched after ${inBand.matchedSeconds.toFixed(2)} s, paused ${inBand.pauseMs} ms`);
    const copy = await this.copy("restore", baselineImagePath, diff.regions, [baselineImagePath]);
    const baseline = { localSeconds: inBand.requestSeconds, diffSeconds, copy, matchedSeconds: inBand.requestSeconds + diffSeconds + copy.seconds };
    this.progress(`restore baseline: ${copy.wire.bytes} bytes on the wire, ${baseline.matchedSeconds.toFixed(2)} s`);
    const checks = await this.check(expected, [
      [`the primary's ${volumeName} after the restore = its ${image(snapshotAfter)} (sha256)`, { uri: this.primary.uri(volumeName) }],
      [`the secondary's ${volumeName} = the primary's ${image(snapshotAfter)} (sha256)`, { uri: pair.secondary.uri(volumeName) }],
      [`baseline: the copy of the pre-restore ${volumeName} after the region copy = the primary's ${image(snapshotAfter)} (sha256)`, { path: baselineImagePath }],
    ]);
    return {
      operation: "restore", command: `lockstep snapshot restore ${image(snapshotAfter)}`, changedBytes: diff.totalBytes,
      inBand, baseline, checks: checks.lines, mismatches: checks.mismatches,
    };
  }
}

export async function operationsMeasure(setup: OperationsSetup, rowName: string): Promise<OperationsRowResult> {
  const run = new OperationsRun(setup);
  const workDir = setup.context.workDir;
  await run.snapshot(snapshotBefore);
  const baselineBeforePath = join(workDir, "baseline-s0.img");
  await copyFile(setup.imagePath, baselineBeforePath); // the node is idle: its image is s0 (async: the link's relay runs in this process)
  await run.write("the change", seeds.change);
  const created = await run.create(baselineBeforePath);
  rmSync(baselineBeforePath, { force: true });
  await run.write("the change after s1", seeds.changeAgain);
  const baselineRestorePath = join(workDir, "baseline-restore.img");
  await copyFile(setup.imagePath, baselineRestorePath); // the volume before the restore
  const restored = await run.restore(baselineRestorePath, created.expected);
  rmSync(baselineRestorePath, { force: true });
  return {
    row: rowName,
    volumeBytes: setup.volumeBytes,
    changeBytes: setup.changeBytes,
    linkMode: setup.linkMode,
    comparisons: [created.comparison, restored],
    cacheResets: run.cacheResets,
    observations: run.observations,
  };
}
