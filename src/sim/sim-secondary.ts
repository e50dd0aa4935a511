// The simulated secondary: the project's own Replica (log copy and in-order applier), its
// Volumes, its snapshot stores (NodeSnapshots: the twins) and one ReplicaSession per connection
// from the primary, put together as node/node.ts and node/node-replication.ts do for a
// secondary group, on simulated disks, the world's clock and the simulated network. It
// answers the replica (ReplicaHost) as node/node.ts does.
//
// A bunker would be a third node of this shape with a log and no volumes; the network already
// joins any named endpoints.

import { join } from "node:path";
import type { GroupLogLimits } from "../log/group-log.js";
import { GroupLog } from "../log/group-log.js";
import { isOperationKind, type LogRecord } from "../log/record.js";
import type { Logger } from "../logger.js";
import { type ReplicaHost, Replica } from "../group/replica.js";
import { NodeSnapshots, type SnapshotHost, type SnapshotSettings, type SnapshotVolume, type TwinCatalogResult } from "../node/node-snapshots.js";
import { ReplicaSession, ReplicaSessionSlot } from "../replication/replica-session.js";
import type { VolumeTable } from "../replication/volume-table.js";
import type { CatalogTwin, Twin } from "../replication/twins.js";
import type { Group } from "../group/group.js";
import { Volume } from "../volume/volume.js";
import type { Duplex } from "node:stream";
import type { SimVolumeSpec } from "./sector-stamp.js";
import type { SimNetwork } from "./sim-network.js";
import type { SimStorage } from "./sim-storage.js";
import { SimCrashedWhileStarting, SimOwner, startIncarnation, type SimWorld } from "./sim-world.js";
import { simGroup } from "./sim-primary.js";

export interface SecondarySettings {
  readonly logBytes: number;
  readonly logLimits: Partial<GroupLogLimits>;
  readonly logId: bigint; // of its first, empty log copy (a resync replaces it with the primary's)
  readonly volumes: readonly SimVolumeSpec[];
  readonly snapshots: SnapshotSettings;
}

export interface SecondaryIncarnation {
  readonly owner: SimOwner;
  readonly replica: Replica;
  readonly volumes: readonly Volume[];
  readonly snapshots: NodeSnapshots;
}

export class SimSecondary implements ReplicaHost, SnapshotHost {
  readonly name = "secondary";
  private current: SecondaryIncarnation | null = null;
  private starting: { owner: SimOwner; volumes: readonly Volume[]; snapshots: NodeSnapshots | null; replica: Replica | null } | null = null;
  private session = new ReplicaSessionSlot();
  private readonly retired: NodeSnapshots[] = [];
  incarnations = 0;
  operating = 0; // operation records being performed now (a restore changes the volume over time)
  onOperation: (record: LogRecord, resyncing: boolean) => void = () => {};
  readonly problems: string[] = []; // what the replica asked that it should not have

  constructor(
    private readonly world: SimWorld,
    readonly storage: SimStorage,
    private readonly network: SimNetwork,
    readonly directory: string,
    readonly settings: SecondarySettings,
    private readonly logger: Logger,
  ) {
    world.addDirectory(directory, () => this.starting?.owner ?? this.current?.owner ?? null);
  }

  get up(): SecondaryIncarnation | null {
    return this.current;
  }

  get isStarting(): boolean {
    return this.starting !== null;
  }

  // A session from the primary is open on this incarnation.
  get connected(): boolean {
    return this.session.active;
  }

  // Opens the log copy and the state, the volumes and their stores, redoes the log, starts the
  // applier and listens for the primary. Run inside the world.
  start(fresh: boolean): Promise<SecondaryIncarnation> {
    const owner = new SimOwner(`secondary#${++this.incarnations}`);
    return startIncarnation(owner, () => this.startOn(owner, fresh), () => {
      if (this.starting?.owner === owner && this.starting.snapshots !== null) this.retired.push(this.starting.snapshots);
      if (this.starting?.owner === owner) this.starting = null;
      this.network.died(this.name, true);
    });
  }

  private async startOn(owner: SimOwner, fresh: boolean): Promise<SecondaryIncarnation> {
    const files = this.storage.opener(owner);
    const clock = this.world.clock(owner);
    const nowMs = () => this.world.nowMs;
    const { settings } = this;
    const logger = this.logger.child({ node: owner.name });
    const volumes = settings.volumes.map((spec) => new Volume(spec.id, spec.name, files.file(join(this.directory, `${spec.name}.img`), spec.size), spec.size, nowMs));
    this.starting = { owner, volumes, snapshots: null, replica: null };
    const logFile = files.file(join(this.directory, "group.log"), settings.logBytes);
    const logOptions = { clock, limits: settings.logLimits };
    if (fresh) await (await GroupLog.create(logFile, { ...logOptions, sizeBytes: settings.logBytes, groupId: simGroup, logId: settings.logId })).close();
    const replica = await Replica.open(simGroup, logFile, false, { logger: logger.child({ subsystem: "replica" }), host: this, statePath: join(this.directory, "replica.json"), logSizeBytes: settings.logBytes, logOptions });
    const snapshots = new NodeSnapshots(this, this.directory, files, nowMs, logger.child({ subsystem: "snapshot" }), (ms) => this.world.delay(owner, ms));
    this.starting.snapshots = snapshots;
    this.starting.replica = replica;
    for (const volume of volumes) {
      replica.addVolume(volume);
      await snapshots.openVolume(volume, settings.snapshots, true);
    }
    await replica.recover();
    if (replica.consistent) await snapshots.unprotect(replica.volumeList(), replica.appliedLsn);
    replica.start();
    this.starting = null;
    if (!owner.alive) throw new SimCrashedWhileStarting(owner.name);
    const incarnation: SecondaryIncarnation = { owner, replica, volumes, snapshots };
    this.current = incarnation;
    this.network.listen(this.name, owner, (socket) => void this.accept(incarnation, socket, logger));
    return incarnation;
  }

  // One connection from the primary (node/node-replication.ts onLink): it supersedes the last.
  private async accept(incarnation: SecondaryIncarnation, socket: Duplex, logger: Logger): Promise<void> {
    const reason = await this.session.run(() => {
      if (!incarnation.owner.alive) return null;
      return new ReplicaSession(socket, {
        node: this.name,
        replica: incarnation.replica,
        expected: { group: simGroup, primary: "primary", generation: incarnation.replica.log.generation },
        logger: logger.child({ subsystem: "replica-link" }),
        clock: this.world.clock(incarnation.owner),
      });
    });
    if (reason === null) socket.destroy(); // superseded before it started, or the process is gone
  }

  crash(resetPeers: boolean): void {
    const owner = this.starting?.owner ?? this.current?.owner;
    if (owner === undefined) return;
    owner.kill();
    const snapshots = this.starting?.snapshots ?? this.current?.snapshots;
    if (snapshots !== undefined && snapshots !== null) this.retired.push(snapshots);
    this.current = null;
    this.starting = null;
    this.session.forget();
    this.operating = 0;
    this.network.died(this.name, resetPeers);
  }

  async closeAll(): Promise<void> {
    if (this.current !== null) this.retired.push(this.current.snapshots);
    this.current = null;
    for (const snapshots of this.retired.splice(0)) await snapshots.close().catch(() => undefined);
  }

  private get volumes(): readonly Volume[] {
    return this.current?.volumes ?? this.starting?.volumes ?? [];
  }

  private get snapshots(): NodeSnapshots {
    const snapshots = this.current?.snapshots ?? this.starting?.snapshots;
    if (snapshots === undefined || snapshots === null) throw new Error("simulated secondary: no snapshot stores yet");
    return snapshots;
  }

  // ---- ReplicaHost (node/node.ts) ----

  async applyVolumeTable(_group: string, table: VolumeTable): Promise<void> {
    const mine = this.settings.volumes.map((spec) => `${spec.id}:${spec.name}:${spec.size}`).join(",");
    const theirs = table.volumes.map((volume) => `${volume.volumeId}:${volume.name}:${volume.size}`).join(",");
    if (mine !== theirs) this.problems.push(`volume table ${theirs} differs from the volumes ${mine}`);
  }

  async beforeResync(_group: string, wasConsistent: boolean, appliedLsn: bigint): Promise<void> {
    await this.snapshots.protect(this.volumes, wasConsistent, appliedLsn, this.settings.snapshots);
  }

  async afterResync(_group: string, appliedLsn: bigint): Promise<void> {
    await this.snapshots.unprotect(this.volumes, appliedLsn);
  }

  protectedReader(volume: Volume): ((offset: number, target: Buffer) => Promise<void>) | null {
    return this.snapshots.protectedReader(volume);
  }

  snapshotImage(volume: Volume, snapshot: string): { size: number; read(offset: number, target: Buffer): Promise<void> } | null {
    return this.snapshots.snapshotImage(volume, snapshot);
  }

  async performOperation(group: string, record: LogRecord): Promise<void> {
    if (isOperationKind(record.kind)) this.onOperation(record, (this.current?.replica ?? this.starting?.replica)?.resyncing === true);
    this.operating += 1;
    try {
      await this.snapshots.performRecord(group, record);
    } finally {
      this.operating = Math.max(0, this.operating - 1);
    }
  }

  syncSnapshots(group: string): Promise<void> {
    return this.snapshots.sync(group);
  }

  twinList(volume: Volume): Twin[] {
    return this.snapshots.twinList(volume);
  }

  applyTwinCatalog(group: string, volume: Volume, catalog: readonly CatalogTwin[], lsn: bigint): Promise<TwinCatalogResult> {
    return this.snapshots.applyTwinCatalog(group, volume, this.settings.snapshots, catalog, lsn);
  }

  writeTwin(volume: Volume, snapshot: string, offset: number, data: Buffer | null, length: number): Promise<void> {
    return this.snapshots.writeTwin(volume, snapshot, offset, data, length);
  }

  rebaseSnapshots(group: string, lsn: bigint): Promise<void> {
    return this.snapshots.rebase(group, lsn);
  }

  // ---- SnapshotHost: a secondary's stores take operations only from its applier ----

  snapshotVolume(name: string): SnapshotVolume {
    throw new Error(`simulated secondary: ${name} is a replica's volume`);
  }

  primaryGroup(): Group {
    throw new Error("simulated secondary has no primary group");
  }

  groupVolume(_group: string, volumeId: number): { volume: Volume; settings: SnapshotSettings; replica: boolean } | undefined {
    const volume = this.volumes.find((candidate) => candidate.id === volumeId);
    return volume === undefined ? undefined : { volume, settings: this.settings.snapshots, replica: true };
  }

  linkReport(): { peer: string; mode: string; inBand: boolean }[] {
    return [];
  }

  groupOf(): string {
    return simGroup;
  }

  protection(): { destructive: "apply"; delaySeconds: number } {
    return { destructive: "apply", delaySeconds: 0 };
  }

  async resizeForRestore(): Promise<void> {
    throw new Error("the simulated volumes are never resized");
  }

  async performVolumeOperation(): Promise<unknown> {
    throw new Error("the simulated volumes are never attached, resized or detached");
  }
}
