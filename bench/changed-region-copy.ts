// The baseline of the operations row (operations-in-band.ts): what a replication product
// without in-band operations must do to give the secondary the image an operation made on
// the primary — re-replicate the changed data. Here the changed regions (Lockstep's own
// `snapshot diff`, metadata only) are read from the primary's export of the new image and
// written, over plain NBD on TCP (no TLS), into the secondary side's copy of the old image,
// then flushed there.
//
//   primary side    lockstep ──unix──► nbdkit nbd plugin + extentlist filter ──► nbdcopy
//                   (the regions listed as data, everything else a hole)
//   the wire        nbdcopy ──TCP──► ByteRelay (counts) ──unix──► nbdkit file plugin
//   secondary side  the copy of the old image (a raw file)
//
// nbdcopy --destination-is-zero skips what the source calls a hole (it neither reads nor
// writes it), so it copies the listed regions and leaves every other byte of the destination
// as it was. It treats a whole request as data when any of it is, so its request size must
// divide every region: requestSizeFor picks the largest power of two that does. The
// destination server is nbdkit's file plugin with its defaults, as in the nbdkit target:
// a fast receiver in C with no log and no TLS, which favours the baseline.

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ByteRelay, countsSince, type RelayCounts } from "./byte-relay.js";
import { nbdExportWait } from "./nbd-export-wait.js";
import { childStart, childStop, commandCheck, type ChildHandle } from "./process-tree.js";

const requestSizeMax = 1024 ** 2;
const requestSizeMin = 4096; // nbdcopy's smallest
const serveTimeoutMs = 20_000;
const copyTimeoutMs = 900_000;
const closedWaitMs = 5_000;

export interface Region {
  readonly offset: number;
  readonly length: number;
}

export interface RegionCopyResult {
  readonly seconds: number; // nbdcopy's process: start, connect, copy, flush, exit
  readonly wire: RelayCounts & { readonly bytes: number };
  readonly regionBytes: number;
  readonly regions: number;
  readonly requestSize: number;
}

/** The largest power of two (at most 1 MiB) that divides every offset and length. */
export function requestSizeFor(regions: readonly Region[]): number {
  let size = requestSizeMax;
  for (const region of regions) {
    while (size > 1 && (region.offset % size !== 0 || region.length % size !== 0)) size /= 2;
  }
  if (size < requestSizeMin) throw new Error(`the regions are aligned to ${size} bytes only; nbdcopy's requests are at least ${requestSizeMin}`);
  return size;
}

/** The secondary side's receiver (nbdkit on its copy of the image, behind a counting relay) and the copy into it. */
export class RegionCopier {
  private constructor(
    private readonly workDir: string,
    private readonly server: ChildHandle,
    private readonly relay: ByteRelay,
    readonly destinationPath: string,
  ) {}

  static async start(workDir: string, name: string, destinationPath: string, sizeBytes: number): Promise<RegionCopier> {
    const socketPath = join(workDir, `${name}.sock`);
    const server = childStart("nbdkit", ["--exit-with-parent", "-f", "-U", socketPath, "file", destinationPath], { logPath: join(workDir, `${name}-nbdkit.log`) });
    try {
      await nbdExportWait(`nbd+unix:///?socket=${socketPath}`, socketPath, server, sizeBytes, serveTimeoutMs);
      return new RegionCopier(workDir, server, await ByteRelay.start({ path: socketPath }), destinationPath);
    } catch (error) {
      await childStop(server);
      throw error;
    }
  }

  /** The command the copy runs, as the docs print it. */
  static describe(): string {
    return "nbdcopy --destination-is-zero --flush --request-size=N [ nbdkit -r --filter=extentlist nbd socket=PRIMARY export=IMAGE extentlist=REGIONS ] " +
      "nbd://RELAY → nbdkit file COPY";
  }

  /** Copies the regions of the primary's export sourceExport (on its unix socket) into the destination, timed. */
  async copy(regions: readonly Region[], sourceSocket: string, sourceExport: string): Promise<RegionCopyResult> {
    const listPath = join(this.workDir, "regions.txt");
    writeFileSync(listPath, regions.map((region) => `${region.offset} ${region.length}\n`).join(""));
    const requestSize = requestSizeFor(regions);
    const args = [
      "--destination-is-zero", "--flush", `--request-size=${requestSize}`, "--",
      "[", "nbdkit", "--exit-with-parent", "-r", "--filter=extentlist", "nbd", `socket=${sourceSocket}`, `export=${sourceExport}`, `extentlist=${listPath}`, "]",
      `nbd://${this.relay.address}`,
    ];
    const before = this.relay.counts();
    const startMs = performance.now();
    await commandCheck("nbdcopy", args, { timeoutMs: copyTimeoutMs });
    const seconds = (performance.now() - startMs) / 1000;
    await this.relay.closedWait(closedWaitMs); // the disconnect's bytes, counted after nbdcopy exited
    return {
      seconds,
      wire: countsSince(before, this.relay.counts()),
      regionBytes: regions.reduce((sum, region) => sum + region.length, 0),
      regions: regions.length,
      requestSize,
    };
  }

  async stop(): Promise<void> {
    try {
      await this.relay.close();
    } finally {
      await childStop(this.server);
    }
  }
}
