// The links of one primary group: what the group asks of replication (how far the log may be
// released, whether a write waits for sync peers) answered over all of its links, and the
// operator's view of them (add, pause, resume, remove, drain, verify, status).
//
// Link definitions live in <group dir>/links/<peer>.json (the primary's half of the link's
// credential included, so the file is 0600), each link's progress and bitmap beside it.

import { promises as fsp } from "node:fs";
import { join } from "node:path";
import { linksPerGroupMax, logShipCacheBytesMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { readFileBounded, writeFileAtomic } from "../io/atomic-file.js";
import { scheduleIo } from "../io/io-scheduler.js";
import type { Group, GroupReplication } from "../group/group.js";
import { type LinkCredential, linkCredentialParse, linkCredentialSerialize } from "./link-credential.js";
import { type LinkEnvironment, type LinkSettings, type LinkVerifyReport, PrimaryLink } from "./primary-link.js";

const linkFileBytesMax = 64 * 1024;

export class GroupLinks implements GroupReplication {
  private readonly links = new Map<string, PrimaryLink>();
  private adding = 0; // links being added (needsData)

  private constructor(
    readonly group: Group,
    private readonly directory: string,
    private readonly environment: LinkEnvironment,
  ) {}

  // Loads every link of the group (not started: start() once the group has recovered).
  static async open(group: Group, directory: string, environment: LinkEnvironment): Promise<GroupLinks> {
    const links = new GroupLinks(group, directory, environment);
    await scheduleIo(directory, () => fsp.mkdir(directory, { recursive: true, mode: 0o700 }));
    for (const name of (await scheduleIo(directory, () => fsp.readdir(directory))).filter((entry) => entry.endsWith(".json") && !entry.endsWith(".state.json")).sort()) {
      const path = join(directory, name);
      const bytes = await readFileBounded(path, linkFileBytesMax, (size) => new OperatingError("CONFIG_INVALID", `${path}: ${size} bytes is too large for a link file`));
      if (bytes === null) continue;
      const settings = settingsParse(bytes.toString("utf8"), path);
      links.links.set(settings.peer, await PrimaryLink.open(group, settings, links.filesOf(settings.peer), environment));
    }
    return links;
  }

  private filesOf(peer: string): { settings: string; state: string; bitmap: string } {
    return { settings: join(this.directory, `${peer}.json`), state: join(this.directory, `${peer}.state.json`), bitmap: join(this.directory, `${peer}.bitmap`) };
  }

  get size(): number {
    return this.links.size;
  }

  // GroupReplication: counted from before a new link picks its starting point (inside
  // PrimaryLink.open), so no record it may ship is logged without its data.
  get needsData(): boolean {
    return this.links.size > 0 || this.adding > 0;
  }

  list(): PrimaryLink[] {
    return [...this.links.values()];
  }

  link(peer: string): PrimaryLink {
    const link = this.links.get(peer);
    if (link === undefined) throw new OperatingError("LINK_NOT_FOUND", { group: this.group.name, peer });
    return link;
  }

  start(): void {
    this.useShipCache();
    for (const link of this.links.values()) link.start();
  }

  // Links ship the newest records from memory; a group without links keeps none. Records
  // every streaming link has sent leave the cache at once (GroupLog.shipCacheRelease).
  private useShipCache(): void {
    this.group.log.shipCacheUse(this.links.size > 0 ? logShipCacheBytesMax : 0);
    for (const link of this.links.values()) link.onShipped = () => this.shipped();
  }

  private shipped(): void {
    let lsn: bigint | null = null;
    for (const link of this.links.values()) {
      const sent = link.shippedLsn;
      if (sent !== null && (lsn === null || sent < lsn)) lsn = sent;
    }
    if (lsn !== null) this.group.log.shipCacheRelease(lsn);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.links.values()].map((link) => link.stop()));
  }

  // Adds a link and starts it. The new link's bitmap holds every allocated region: its first
  // connection is an initial sync.
  async add(settings: Omit<LinkSettings, "createdAtMs" | "paused"> & { paused?: boolean }, nowMs: number): Promise<PrimaryLink> {
    if (this.links.has(settings.peer)) throw new OperatingError("LINK_EXISTS", { group: this.group.name, peer: settings.peer });
    if (this.links.size >= linksPerGroupMax) throw new OperatingError("REQUEST_TOO_LARGE", { group: this.group.name, linksMax: linksPerGroupMax });
    const full: LinkSettings = { ...settings, paused: settings.paused ?? false, createdAtMs: nowMs };
    const files = this.filesOf(settings.peer);
    this.adding += 1;
    let link: PrimaryLink;
    try {
      await scheduleIo(files.state, () => fsp.rm(files.state, { force: true }));
      await scheduleIo(files.bitmap, () => fsp.rm(files.bitmap, { force: true }));
      link = await PrimaryLink.open(this.group, full, files, this.environment);
      await writeFileAtomic(files.settings, settingsSerialize(full));
      this.links.set(settings.peer, link);
    } finally {
      this.adding -= 1;
    }
    this.useShipCache();
    link.start();
    return link;
  }

  async setPaused(peer: string, paused: boolean): Promise<void> {
    const settings = await this.link(peer).setPaused(paused);
    await writeFileAtomic(this.filesOf(peer).settings, settingsSerialize(settings));
  }

  async remove(peer: string): Promise<void> {
    const link = this.link(peer);
    await link.stop();
    this.links.delete(peer);
    this.useShipCache();
    const files = this.filesOf(peer);
    for (const path of [files.settings, files.state, files.bitmap]) await fsp.rm(path, { force: true });
    await this.group.checkpoint(); // the log no longer waits for it
  }

  // ---- GroupReplication ----

  async releasable(appliedLsn: bigint, logFill: number): Promise<bigint> {
    let limit = appliedLsn;
    for (const link of this.links.values()) {
      const linkLimit = await link.releaseLimit(appliedLsn, logFill);
      if (linkLimit < limit) limit = linkLimit;
    }
    for (const link of this.links.values()) await link.persistProgress();
    return limit;
  }

  syncWait(lsn: bigint): Promise<void> | null {
    let waits: Promise<void>[] | null = null;
    for (const link of this.links.values()) {
      const wait = link.syncWait(lsn);
      if (wait !== null) (waits ??= []).push(wait);
    }
    if (waits === null) return null;
    return waits.length === 1 ? waits[0]! : Promise.all(waits).then(() => undefined);
  }

  operationLogged(lsn: bigint): void {
    for (const link of this.links.values()) link.operationLogged(lsn);
  }

  volumesChanged(): void {
    for (const link of this.links.values()) link.volumesChanged();
  }

  // ---- Operator ----

  async statusList(): Promise<Record<string, unknown>[]> {
    const result: Record<string, unknown>[] = [];
    for (const link of this.links.values()) result.push(await link.status());
    return result;
  }

  // Waits until every link has applied everything written before the call.
  async drain(msMax: number): Promise<{ lsn: string; links: string[] }> {
    const lsn = this.group.log.headLsn;
    await Promise.all([...this.links.values()].map((link) => link.appliedWait(lsn, msMax)));
    return { lsn: String(lsn), links: [...this.links.keys()] };
  }

  async verify(regionBytes: number): Promise<LinkVerifyReport[]> {
    const reports: LinkVerifyReport[] = [];
    for (const link of this.links.values()) reports.push(await link.verify(regionBytes));
    return reports;
  }
}

function settingsSerialize(settings: LinkSettings): string {
  return `${JSON.stringify({ ...settings, credential: JSON.parse(linkCredentialSerialize(settings.credential)) as unknown }, null, 2)}\n`;
}

function settingsParse(text: string, source: string): LinkSettings {
  try {
    const raw = JSON.parse(text) as LinkSettings & { credential: unknown };
    const credential: LinkCredential = linkCredentialParse(JSON.stringify(raw.credential), source);
    return { ...raw, credential };
  } catch (error) {
    if (error instanceof OperatingError) throw error;
    throw new OperatingError("CONFIG_INVALID", `${source}: not a link file: ${(error as Error).message}`);
  }
}
