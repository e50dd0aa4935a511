// A primary and one secondary on this machine, linked over loopback: what the replication
// rows measure. Each node is its own `lockstep serve` with its own data dir (the secondary's
// replica image lives in its data dir); the link is set up with the operator's two steps,
// `link add` on the primary and `link accept` on the secondary.
//
// Waiting for the secondary is timed from the bench through the admin API (GET /v1/links on
// the primary, GET /v1/status on the secondary, POST /v1/drain: what the CLI's `link list`,
// `status` and `drain` send), polled every 50 ms, so that the ~0.5 s start of a CLI process
// does not enter a figure of a few seconds.
//
// The nudge. A primary learns that a resync has been applied only from an ack that arrives
// after it sent `resyncEnd` and that carries appliedLsn ≥ the resync's end; the secondary acks
// only when one of its LSNs moves. When nothing is written after a resync, the secondary is
// consistent but the primary keeps saying `consistent: false` (and `drain` and `link
// progress` wait) until the next write. The bench detects that state — the secondary says
// consistent and not resyncing, the primary has sent every dirty byte, for a second — and
// then writes one 4 KiB block at offset 0 through the primary's NBD export: the write's ack
// completes the resync. Every nudge is counted and reported; when the bug is gone the count
// is 0 and nothing changes. (The block's content does not matter: the images hold random data.)
//
// A link that drops disconnectsMax times while the bench waits for the secondary is not
// going to get there (a resync refused with `protocolError: lsn` is restarted from scratch,
// forever): the wait throws LinkFlappingError, with the link's last error, instead of
// running into its timeout while the link resends the same regions.

import { join } from "node:path";
import { LockstepNode, type Durability } from "./lockstep-node.js";
import { commandCheck, sleep } from "./process-tree.js";
import type { TargetContext } from "./target.js";
import { volumeName } from "./target-lockstep.js";

const pollIntervalMs = 50;
const stuckMsMin = 1_000; // secondary consistent, primary not, for this long: nudge
const disconnectsMax = 3; // while waiting for the secondary: a link dropped this often is not going to get there
const nudgeTimeoutMs = 30_000;
export const peerName = "site-b";

export type LinkMode = "async" | "sync";

/** What `link list --json` says of a link (the fields the bench reads). */
export interface LinkView {
  readonly state: string;
  readonly paused: boolean;
  readonly consistent: boolean;
  readonly headLsn: string;
  readonly appliedLsn: string;
  readonly lagBytes: number;
  readonly lagRecords: string;
  readonly lagSeconds: number | null;
  readonly bitmap: { readonly coveredLsn: string; readonly dirtyBytes: number } | null;
  readonly resync: { readonly totalBytes: number; readonly sentBytes: number; readonly bytesPerSecond: number } | null;
  readonly lastError: string | null;
  readonly stats: {
    readonly connects: number; readonly disconnects: number; readonly regionBytesSent: number; readonly recordBytesSent: number;
    readonly overflows: number; readonly resyncsCompleted: number;
  };
}

/** The link kept dropping while the bench waited for the secondary: the wait is given up. */
export class LinkFlappingError extends Error {
  constructor(readonly link: LinkView, disconnects: number) {
    super(`the link dropped ${disconnects} times while the bench waited for the secondary; last error: ${link.lastError ?? "none"}; ` +
      `region bytes sent since the primary started ${link.stats.regionBytesSent}, bitmap ${JSON.stringify(link.bitmap)}, head ${link.headLsn}, applied ${link.appliedLsn}`);
  }
}

/** What the secondary's `status --json` says of its replica group. */
export interface ReplicaView {
  readonly connected: boolean;
  readonly consistent: boolean;
  readonly resyncing: boolean;
  readonly appliedLsn: string;
  readonly stats: { readonly resyncs: number };
}

/** A replicated target's link after a fio job. */
export interface LinkCatchUp {
  readonly stateAtEnd: string;
  readonly lagBytesAtEnd: number; // the primary's estimate of log bytes the secondary has not applied
  readonly lagRecordsAtEnd: number;
  readonly lagSecondsAtEnd: number | null;
  readonly overflows: number; // during the job: switches to the bitmap
  readonly drainSeconds: number | null; // POST /v1/drain (`lockstep drain`) right after fio exits; null: failed
  readonly caughtUpSeconds: number | null; // when the secondary was seen to have applied everything
  readonly nudges: number;
  readonly error: string | null; // why the drain did not finish
}

export interface NodePairOptions {
  readonly groupName: string;
  readonly logSize: string;
  readonly durability: Durability;
}

export class NodePair {
  private nudgesDone = 0;
  private overflowsCounted = 0; // link overflows already reported by catchUp

  private constructor(
    readonly primary: LockstepNode,
    readonly secondary: LockstepNode,
    readonly secondaryAddress: string,
    private readonly workDir: string,
    private readonly groupName: string,
  ) {}

  /** Starts the secondary (listening for links on a port of its choosing), then the primary. */
  static async start(context: TargetContext, options: NodePairOptions): Promise<NodePair> {
    const group = { name: options.groupName, logSize: options.logSize, durability: options.durability };
    const secondary = await LockstepNode.start(context, join(context.workDir, "secondary"), {
      name: peerName, group: { ...group, role: "secondary" }, replicationListen: true,
    });
    let primary: LockstepNode;
    try {
      primary = await LockstepNode.start(context, join(context.workDir, "primary"), {
        name: "site-a", group: { ...group, role: "primary" }, replicationListen: false,
      });
    } catch (error) {
      await secondary.stop();
      throw error;
    }
    const pair = (address: string) => new NodePair(primary, secondary, address, context.workDir, options.groupName);
    try {
      const status = await secondary.api<{ replication: { listen: string | null } }>("GET", "/v1/status");
      if (status.replication.listen === null) throw new Error("the secondary does not listen for links");
      return pair(status.replication.listen);
    } catch (error) {
      await pair("").stop();
      throw error;
    }
  }

  get nudges(): number {
    return this.nudgesDone;
  }

  /** `link add` on the primary (to the secondary's address, or a relay in front of it), `link accept` on the secondary. */
  async linkAdd(mode: LinkMode, address = this.secondaryAddress): Promise<void> {
    const credentialPath = join(this.workDir, `${peerName}.link`);
    await this.primary.cli(["link", "add", this.groupName, peerName, address, "--mode", mode, "--credential-out", credentialPath]);
    await this.secondary.cli(["link", "accept", "--file", credentialPath]);
  }

  /**
   * linkAdd, then the initial sync as an operator waits for it: the secondary consistent, the
   * primary saying so, and `link progress` satisfied. Returns the seconds from `link add`
   * until the secondary was consistent.
   */
  async linkUp(mode: LinkMode, timeoutMs: number, address = this.secondaryAddress): Promise<number> {
    const startMs = performance.now();
    await this.linkAdd(mode, address);
    const consistentMs = await this.replicaConsistentWait(0, 0n, startMs, timeoutMs);
    await this.primaryConsistentWait(timeoutMs);
    await this.primary.cli(["link", "progress", this.groupName, peerName, "--timeout", "1m"]); // what an operator waits on: must say consistent now
    return consistentMs / 1000;
  }

  async link(): Promise<LinkView> {
    const { links } = await this.primary.api<{ links: Array<LinkView & { group: string; peer: string }> }>("GET", "/v1/links");
    const view = links.find((candidate) => candidate.group === this.groupName && candidate.peer === peerName);
    if (view === undefined) throw new Error(`the primary has no link ${this.groupName} → ${peerName}`);
    return view;
  }

  async replica(): Promise<ReplicaView> {
    const status = await this.secondary.api<{ groups: Array<ReplicaView & { name: string; role: string }> }>("GET", "/v1/status");
    const view = status.groups.find((group) => group.name === this.groupName && group.role === "secondary");
    if (view === undefined) throw new Error(`the secondary has no replica of group ${this.groupName}`);
    return view;
  }

  linkVerb(verb: "pause" | "resume"): Promise<unknown> {
    return this.primary.api("POST", `/v1/groups/${this.groupName}/links/${peerName}/${verb}`);
  }

  /**
   * Polls until the secondary is consistent, has begun more than resyncsBefore resyncs and
   * applied minLsn; returns the ms since startMs. Throws LinkFlappingError when the link drops
   * disconnectsMax times meanwhile.
   */
  async replicaConsistentWait(resyncsBefore: number, minLsn: bigint, startMs: number, timeoutMs: number): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    const disconnectsBefore = (await this.link()).stats.disconnects;
    for (;;) {
      const replica = await this.replica();
      if (replicaCaughtUp(replica, resyncsBefore, minLsn)) return performance.now() - startMs;
      const link = await this.link();
      if (link.stats.disconnects - disconnectsBefore >= disconnectsMax) throw new LinkFlappingError(link, link.stats.disconnects - disconnectsBefore);
      if (performance.now() > deadline) throw new Error(`the secondary is not consistent after ${timeoutMs} ms: ${JSON.stringify(replica)}`);
      await sleep(pollIntervalMs);
    }
  }

  /**
   * Polls until the primary calls the link consistent and streaming, nudging when it is stuck
   * (see the header). Throws LinkFlappingError when the link drops disconnectsMax times meanwhile.
   */
  async primaryConsistentWait(timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    const disconnectsBefore = (await this.link()).stats.disconnects;
    let stuckSinceMs: number | null = null;
    for (;;) {
      const link = await this.link();
      if (link.consistent && link.state === "streaming") return;
      if (link.stats.disconnects - disconnectsBefore >= disconnectsMax) throw new LinkFlappingError(link, link.stats.disconnects - disconnectsBefore);
      stuckSinceMs = (await this.stuck(link)) ? stuckSinceMs ?? performance.now() : null;
      if (stuckSinceMs !== null && performance.now() - stuckSinceMs >= stuckMsMin) {
        await this.nudge();
        stuckSinceMs = null;
      }
      if (performance.now() > deadline) throw new Error(`the primary does not call the link consistent after ${timeoutMs} ms: ${JSON.stringify(link)}`);
      await sleep(pollIntervalMs);
    }
  }

  // The state of the nudge (header): every dirty byte sent, the secondary consistent.
  private async stuck(link: LinkView): Promise<boolean> {
    if (link.state !== "streaming" || link.resync === null || link.resync.sentBytes < link.resync.totalBytes) return false;
    const replica = await this.replica();
    return replica.connected && replica.consistent && !replica.resyncing;
  }

  /** One 4 KiB write at offset 0 through the primary's export. */
  async nudge(): Promise<void> {
    this.nudgesDone += 1;
    await commandCheck("fio", [
      "--name=nudge", "--ioengine=nbd", `--uri=${this.primary.uri(volumeName)}`, "--rw=write", "--bs=4k", "--size=4k",
      "--offset=0", "--output-format=terse", `--output=${join(this.workDir, "fio-nudge.txt")}`,
    ], { timeoutMs: nudgeTimeoutMs });
  }

  /** After a fio job: the link's lag as the job ended, then a timed drain (nudging if the primary is stuck). */
  async catchUp(timeoutMs: number): Promise<LinkCatchUp> {
    const atEnd = await this.link();
    const startMs = performance.now();
    const nudgesBefore = this.nudgesDone;
    let drained = false;
    const drain = this.primary.api("POST", "/v1/drain", { group: this.groupName, timeoutMs }, timeoutMs + 10_000)
      .finally(() => { drained = true; });
    let caughtUpMs: number | null = null;
    let stuckSinceMs: number | null = null;
    let error: string | null = null;
    while (!drained && error === null) {
      const replica = await this.replica();
      if (caughtUpMs === null && replicaCaughtUp(replica, -1, BigInt(atEnd.headLsn))) caughtUpMs = performance.now() - startMs;
      const link = await this.link();
      if (link.stats.disconnects - atEnd.stats.disconnects >= disconnectsMax) error = new LinkFlappingError(link, link.stats.disconnects - atEnd.stats.disconnects).message;
      stuckSinceMs = (await this.stuck(link)) ? stuckSinceMs ?? performance.now() : null;
      if (!drained && stuckSinceMs !== null && performance.now() - stuckSinceMs >= stuckMsMin) {
        await this.nudge();
        stuckSinceMs = null;
      }
      await Promise.race([drain.catch(() => undefined), sleep(pollIntervalMs)]);
    }
    if (error === null) await drain.catch((failure: unknown) => { error = failure instanceof Error ? failure.message : String(failure); });
    else void drain.catch(() => undefined); // left to time out on the node; the target stops soon
    const drainMs = performance.now() - startMs;
    const overflows = (await this.link()).stats.overflows;
    const overflowsNew = overflows - this.overflowsCounted;
    this.overflowsCounted = overflows;
    return {
      stateAtEnd: atEnd.state,
      lagBytesAtEnd: atEnd.lagBytes,
      lagRecordsAtEnd: Number(atEnd.lagRecords),
      lagSecondsAtEnd: atEnd.lagSeconds,
      overflows: overflowsNew,
      drainSeconds: error === null ? drainMs / 1000 : null,
      caughtUpSeconds: caughtUpMs === null ? null : Math.min(caughtUpMs, drainMs) / 1000,
      nudges: this.nudgesDone - nudgesBefore,
      error,
    };
  }

  stateFiles(): string[] {
    return [...this.primary.stateFiles(), ...this.secondary.stateFiles()];
  }

  /** The primary first (so that it does not reconnect to a stopping peer), then the secondary. */
  async stop(): Promise<void> {
    try {
      await this.primary.stop();
    } finally {
      await this.secondary.stop();
    }
  }
}

function replicaCaughtUp(replica: ReplicaView, resyncsBefore: number, minLsn: bigint): boolean {
  return replica.connected && replica.consistent && !replica.resyncing && replica.stats.resyncs > resyncsBefore && BigInt(replica.appliedLsn) >= minLsn;
}
