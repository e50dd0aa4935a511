// The simulated primary: the project's own Group, GroupLog, ActivityMap, Volumes, snapshot stores
// (NodeSnapshots) and links (GroupLinks, PrimaryLink), put together as node/node.ts does for a
// primary group, on simulated disks, the world's clock and the simulated network. What a node
// does besides (catalog, NBD, admin API, TLS) is not here.
//
// An incarnation lives from start() to crash(); the disks (sim-storage.ts) and the node's
// directory (link state, bitmap, snapshot metadata in LMDB) outlive it.

import { join } from "node:path";
import { logShipCacheBytesMax } from "../constants.js";
import { ActivityMap, activitySlotSize, type ActivityExtent, type ActivityShape } from "../group/activity-map.js";
import { Group, type Durability, type RecoveryReport } from "../group/group.js";
import type { GroupLogLimits } from "../log/group-log.js";
import { GroupLog } from "../log/group-log.js";
import type { LogRecord } from "../log/record.js";
import type { Logger } from "../logger.js";
import { NodeSnapshots, type SnapshotHost, type SnapshotSettings, type SnapshotVolume } from "../node/node-snapshots.js";
import { GroupLinks } from "../replication/group-links.js";
import type { LinkCredential } from "../replication/link-credential.js";
import type { LinkMode, OverflowPolicy, PrimaryLink } from "../replication/primary-link.js";
import { Volume } from "../volume/volume.js";
import type { SimVolumeSpec } from "./sector-stamp.js";
import type { SimNetwork } from "./sim-network.js";
import type { SimStorage } from "./sim-storage.js";
import { SimCrashedWhileStarting, SimOwner, startIncarnation, type SimWorld } from "./sim-world.js";

export const simGroup = "g";

export interface PrimarySettings {
  readonly durability: Durability;
  readonly activity: ActivityShape;
  readonly logBytes: number;
  readonly logLimits: Partial<GroupLogLimits>;
  readonly logId: bigint;
  readonly volumes: readonly SimVolumeSpec[];
  readonly snapshots: SnapshotSettings;
  readonly link: { readonly mode: LinkMode; readonly intervalMs: number; readonly overflow: OverflowPolicy };
  readonly credential: LinkCredential;
}

export interface PrimaryIncarnation {
  readonly owner: SimOwner;
  readonly group: Group;
  readonly volumes: readonly Volume[];
  readonly snapshots: NodeSnapshots;
  readonly links: GroupLinks;
  readonly report: RecoveryReport;
  // Where the recovered image may differ from the log: the hot extents of this recovery and of
  // earlier ones that crashed after handing theirs to the links (the map forgot them then).
  readonly mayDiffer: readonly ActivityExtent[];
}

export class SimPrimary implements SnapshotHost {
  readonly name = "primary";
  private current: PrimaryIncarnation | null = null;
  private starting: SimOwner | null = null;
  private readonly retired: NodeSnapshots[] = []; // stores of dead incarnations: their LMDB handles close at the end
  incarnations = 0;
  private scannedLsn = 0n; // the records of the current incarnation read so far (newRecords())
  private startingVolumes: readonly Volume[] = [];
  private startingSnapshots: NodeSnapshots | null = null;
  private handedOff: ActivityExtent[] = []; // recovered extents handed to the links, not yet checked
  private readonly maps: ActivityMap[] = []; // every incarnation's (activityStats())

  constructor(
    private readonly world: SimWorld,
    readonly storage: SimStorage,
    private readonly network: SimNetwork,
    readonly directory: string,
    readonly settings: PrimarySettings,
    private readonly logger: Logger,
  ) {
    world.addDirectory(directory, () => this.starting ?? this.current?.owner ?? null);
  }

  get up(): PrimaryIncarnation | null {
    return this.current;
  }

  get isStarting(): boolean {
    return this.starting !== null;
  }

  private get logPath(): string {
    return join(this.directory, "group.log");
  }

  get link(): PrimaryLink | null {
    return this.current?.links.list()[0] ?? null;
  }

  // Starts an incarnation: log (created or recovered), activity map, group, volumes and their
  // stores, links; recovery; then the links. Run inside the world (it waits for virtual time).
  start(fresh: boolean): Promise<PrimaryIncarnation> {
    const owner = new SimOwner(`primary#${++this.incarnations}`);
    this.starting = owner;
    return startIncarnation(owner, () => this.startOn(owner, fresh), () => {
      if (this.starting === owner) this.starting = null;
      this.retire();
      this.network.died(this.name, true);
    });
  }

  private async startOn(owner: SimOwner, fresh: boolean): Promise<PrimaryIncarnation> {
    const files = this.storage.opener(owner);
    const clock = this.world.clock(owner);
    const nowMs = () => this.world.nowMs;
    const { settings } = this;
    const logFile = files.file(this.logPath, settings.logBytes);
    const log = fresh
      ? await GroupLog.create(logFile, { sizeBytes: settings.logBytes, groupId: simGroup, logId: settings.logId, clock, limits: settings.logLimits })
      : await GroupLog.open(logFile, { groupId: simGroup, clock, limits: settings.logLimits });
    log.shipCacheUse(logShipCacheBytesMax); // the model reads every appended record from it
    this.scannedLsn = log.headLsn;
    log.shipCacheHold(this.scannedLsn + 1n);
    let group!: Group;
    let activity: ActivityMap | null = null;
    let recovered: ActivityExtent[] = [];
    if (settings.durability === "activity-map") {
      const opened = await ActivityMap.open(files.file(join(this.directory, "activity"), activitySlotSize * 2), (volumeId) => group.coolLsn(volumeId), () => group.syncAll(), settings.activity);
      activity = opened.map;
      this.maps.push(activity);
      recovered = opened.recovered;
    }
    const logger = this.logger.child({ node: owner.name });
    group = new Group(simGroup, log, settings.durability, activity, logger, { nowMs });
    const snapshots = new NodeSnapshots(this, this.directory, files, nowMs, logger.child({ subsystem: "snapshot" }), (ms) => this.world.delay(owner, ms));
    this.startingSnapshots = snapshots;
    group.operations = {
      perform: (record) => snapshots.performRecord(simGroup, record),
      sync: () => snapshots.sync(simGroup),
      snapshotImages: (volume) => snapshots.snapshotImages(volume),
      freezeTwins: (volume) => snapshots.freezeTwins(volume),
    };
    const volumes = settings.volumes.map((spec) => new Volume(spec.id, spec.name, files.file(join(this.directory, `${spec.name}.img`), spec.size), spec.size, nowMs));
    this.startingVolumes = volumes;
    for (const volume of volumes) {
      group.addVolume(volume);
      await snapshots.openVolume(volume, settings.snapshots, false);
    }
    const links = await GroupLinks.open(group, join(this.directory, "links"), {
      node: this.name,
      logger: logger.child({ subsystem: "link" }),
      clock,
      connect: () => this.network.connect(this.name, owner, "secondary"),
    });
    group.replication = links;
    const report = await group.recover(recovered);
    for (const link of links.list()) await link.markRegions(report.recoveredActivityExtents);
    this.handedOff.push(...report.recoveredActivityExtents);
    await group.recoveredHandedOff();
    links.start();
    if (links.size === 0) {
      const { link } = settings;
      await links.add({ peer: "secondary", address: { host: "secondary", port: 1 }, mode: link.mode, intervalMs: link.intervalMs, overflow: link.overflow, credential: settings.credential }, nowMs());
    }
    this.starting = null;
    this.startingSnapshots = null;
    if (!owner.alive) throw new SimCrashedWhileStarting(owner.name);
    const incarnation: PrimaryIncarnation = { owner, group, volumes, snapshots, links, report, mayDiffer: this.handedOff.splice(0) };
    this.current = incarnation;
    return incarnation;
  }

  // The activity maps' persists and cooled extents over every incarnation.
  activityStats(): { activityPersists: number; extentsCooled: number } {
    let activityPersists = 0;
    let extentsCooled = 0;
    for (const map of this.maps) {
      activityPersists += map.stats.persists;
      extentsCooled += map.stats.cooled;
    }
    return { activityPersists, extentsCooled };
  }

  // The records appended since the last call (in LSN order), from the log's ship cache.
  newRecords(): { records: LogRecord[]; missing: bigint | null } {
    const log = this.current?.group.log;
    if (log === undefined) return { records: [], missing: null };
    const records: LogRecord[] = [];
    for (let lsn = this.scannedLsn + 1n; lsn <= log.headLsn; lsn++) {
      const record = log.recent(lsn);
      if (record === undefined) return { records, missing: lsn };
      records.push(record);
    }
    this.scannedLsn = log.headLsn;
    log.shipCacheHold(this.scannedLsn + 1n);
    return { records, missing: null };
  }

  // kill -9 or a power cut: the incarnation stops at once, and never acts again.
  crash(resetPeers: boolean): void {
    const owner = this.starting ?? this.current?.owner;
    if (owner === undefined) return;
    owner.kill();
    this.retire();
    this.current = null;
    this.starting = null;
    this.network.died(this.name, resetPeers);
  }

  // The stores of the incarnation that dies: their LMDB handles are closed at the end of the run.
  private retire(): void {
    const snapshots = this.current?.snapshots ?? this.startingSnapshots;
    if (snapshots !== null) this.retired.push(snapshots);
    this.startingSnapshots = null;
  }

  // Closes the LMDB handles of every incarnation (the end of a run; the world is gone).
  async closeAll(): Promise<void> {
    this.retire();
    this.current = null;
    for (const snapshots of this.retired.splice(0)) await snapshots.close().catch(() => undefined);
  }

  // ---- SnapshotHost (node/node.ts keeps these for a primary group) ----

  private volume(name: string): Volume {
    const volume = this.current?.volumes.find((candidate) => candidate.name === name);
    if (volume === undefined) throw new Error(`simulated primary: no volume ${name} (down?)`);
    return volume;
  }

  snapshotVolume(name: string): SnapshotVolume {
    return { volume: this.volume(name), group: this.current!.group, settings: this.settings.snapshots, connections: 0 };
  }

  primaryGroup(): Group {
    if (this.current === null) throw new Error("simulated primary is down");
    return this.current.group;
  }

  groupVolume(_group: string, volumeId: number): { volume: Volume; settings: SnapshotSettings; replica: boolean } | undefined {
    // while starting (redo) the incarnation is not published yet
    const volume = (this.current?.volumes ?? this.startingVolumes).find((candidate) => candidate.id === volumeId);
    return volume === undefined ? undefined : { volume, settings: this.settings.snapshots, replica: false };
  }

  linkReport(): { peer: string; mode: string; inBand: boolean }[] {
    return (this.current?.links.list() ?? []).map((link) => ({ peer: link.peer, mode: link.mode, inBand: link.carriesInBand }));
  }

  groupOf(): string {
    return simGroup;
  }

  protection(): null {
    return null;
  }

  async resizeForRestore(): Promise<void> {
    throw new Error("the simulated volumes are never resized");
  }

  // The primary made the change before logging it (and the simulated volumes never change).
  async performVolumeOperation(): Promise<unknown> {
    return { skipped: true };
  }
}
