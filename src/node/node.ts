// A node: one `lockstep serve` process. It opens its groups (log recovery, redo, activity
// map), its volumes (from the catalog), serves them over NBD, and answers the admin API.
//
// Lifecycle:  starting ──▶ recovering (per group) ──▶ serving ──▶ stopping ──▶ stopped
// Stopping closes the NBD listeners, lets in-flight requests finish (bounded), checkpoints
// every group and closes its log, so the next start replays nothing.

import { existsSync, promises as fsp } from "node:fs";
import { isAbsolute } from "node:path";
import { assert } from "../assert.js";
import { sectorSize, shutdownMsMax, verifyRegionBytes, volumeIdMax, volumeNameLengthMax, volumesPerGroupMax, volumeSizeMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { BlockFile, BlockFileOpener } from "../io/block-file.js";
import type { Logger } from "../logger.js";
import { GroupLog } from "../log/group-log.js";
import type { LogRecord } from "../log/record.js";
import type { NbdExport, NbdExportRegistry } from "../nbd/export.js";
import { NbdServer } from "../nbd/server.js";
import { ActivityMap, activitySlotSize } from "../group/activity-map.js";
import { Group } from "../group/group.js";
import { Volume } from "../volume/volume.js";
import { NodeMetrics } from "../api/metrics.js";
import { Catalog, catalogPath, type VolumeEntry } from "./catalog.js";
import type { GroupConfig, NodeConfig } from "./config.js";
import { nodeFiles, readOrCreateToken, removeApiInfo, writeApiInfo } from "./node-files.js";
import { VolumeExport } from "./volume-export.js";
import { formatSize } from "../units.js";
import { Replica, type ReplicaHost } from "../group/replica.js";
import { encodeOperationSet, type VolumeOperation } from "../group/operation.js";
import type { CatalogTwin, Twin } from "../replication/twins.js";
import type { VolumeTable } from "../replication/volume-table.js";
import { NodeReplication } from "./node-replication.js";
import type { VolumeOwner } from "./volume-export.js";
import { isName, nameRuleText } from "../names.js";
import { NodeSnapshots, type ProtectionPolicy, type SnapshotHost, type SnapshotVolume, type TwinCatalogResult } from "./node-snapshots.js";


function checkVolumeSize(size: number): void {
  if (size <= 0 || size % sectorSize !== 0 || size > volumeSizeMax) {
    throw new OperatingError("REQUEST_INVALID", `size ${size}: a positive multiple of ${sectorSize} bytes, at most ${formatSize(volumeSizeMax)}`);
  }
}

export interface NodeEnvironment {
  readonly files: BlockFileOpener;
  readonly nowMs: () => number;
  readonly logger: Logger;
}

interface VolumeState {
  readonly entry: VolumeEntry;
  readonly volume: Volume;
  readonly group: Group | null; // null: the volume of a replica
  readonly replica: Replica | null;
  readonly export: VolumeExport;
}

export class LockstepNode implements NbdExportRegistry, ReplicaHost, SnapshotHost {
  private readonly groups = new Map<string, Group>();
  private readonly replicas = new Map<string, Replica>();
  readonly replication: NodeReplication;
  readonly snapshots: NodeSnapshots;
  private readonly groupFiles = new Map<string, BlockFile>(); // each group's log file (the log does not own it)
  private readonly volumes = new Map<string, VolumeState>();
  readonly metrics: NodeMetrics;
  readonly nbd: NbdServer;
  readonly startedAtMs: number;
  token = "";
  nbdTcp: { host: string; port: number } | null = null;
  private stopping: Promise<void> | null = null;
  readonly recoveries = new Map<string, { replayedRecords: number; skippedRecords: number; recoveredActivityExtents: number; stoppedBecause: string }>();

  private constructor(
    readonly config: NodeConfig,
    private readonly environment: NodeEnvironment,
    private readonly catalog: Catalog,
  ) {
    this.startedAtMs = environment.nowMs();
    this.metrics = new NodeMetrics(
      {
        groups: () => [...this.groups.values()],
        volumes: () => [...this.volumes.values()].map((state) => ({ name: state.volume.name, errorCount: state.volume.errorCount, size: state.volume.size, snapshots: this.snapshots.usage(state.volume.name) })),
        links: () => this.replication.linkMetrics(),
        replicas: () => [...this.replicas.values()].map((replica) => ({ name: replica.name, appliedLsn: replica.appliedLsn, consistent: replica.consistent, appliedRecords: replica.stats.appliedRecords })),
        nbdPoll: () => this.nbd.pollWindow,
      },
      environment.logger,
    );
    this.nbd = new NbdServer(this, this.metrics, environment.logger, { pollMicros: config.nbd.pollMicros });
    this.replication = new NodeReplication(config.node.name, environment.logger);
    this.snapshots = new NodeSnapshots(this, config.node.dataDir, environment.files, environment.nowMs, environment.logger.child({ subsystem: "snapshot" }));
  }

  get logger(): Logger {
    return this.environment.logger;
  }

  static async start(config: NodeConfig, environment: NodeEnvironment): Promise<LockstepNode> {
    const dataDir = config.node.dataDir;
    await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
    await fsp.mkdir(`${dataDir}/volumes`, { recursive: true, mode: 0o700 });
    const catalog = await Catalog.open(catalogPath(dataDir));
    const node = new LockstepNode(config, environment, catalog);
    node.token = await readOrCreateToken(dataDir);
    for (const entry of catalog.volumes) {
      if (!config.groups.some((group) => group.name === entry.group)) {
        throw new OperatingError("CONFIG_INVALID", `volume ${entry.name} belongs to group ${entry.group}, which the config no longer lists`);
      }
    }
    for (const groupConfig of config.groups) {
      if (groupConfig.role === "secondary") await node.openReplica(groupConfig);
      else await node.openGroup(groupConfig);
    }
    await node.listen();
    return node;
  }

  private async openGroup(groupConfig: GroupConfig): Promise<void> {
    const dataDir = this.config.node.dataDir;
    const logger = this.logger.child({ subsystem: "group" });
    await fsp.mkdir(nodeFiles.groupDir(dataDir, groupConfig.name), { recursive: true, mode: 0o700 });
    const { logFile, fresh } = await this.openLogFile(groupConfig);
    const log = await this.unlessMade(groupConfig, fresh, () => (fresh ? GroupLog.create(logFile, { sizeBytes: groupConfig.logSize, groupId: groupConfig.name }) : GroupLog.open(logFile)));
    let activity: ActivityMap | null = null;
    // eslint-disable-next-line prefer-const
    let group!: Group;
    let recovered: Awaited<ReturnType<typeof ActivityMap.open>>["recovered"] = [];
    if (groupConfig.durability === "activity-map") {
      const file = await this.environment.files.open(nodeFiles.groupActivity(dataDir, groupConfig.name), { create: activitySlotSize * 2 });
      // The group is made just below; the map calls these only once it exists.
      const opened = await ActivityMap.open(file, (volumeId) => group.coolLsn(volumeId), () => group.syncAll());
      activity = opened.map;
      recovered = opened.recovered;
    }
    group = new Group(groupConfig.name, log, groupConfig.durability, activity, logger, { nowMs: this.environment.nowMs });
    group.operations = {
      perform: (record) => this.snapshots.performRecord(groupConfig.name, record),
      sync: () => this.snapshots.sync(groupConfig.name),
      snapshotImages: (volume) => this.snapshots.snapshotImages(volume),
      freezeTwins: (volume) => this.snapshots.freezeTwins(volume),
    };
    this.groups.set(groupConfig.name, group);
    for (const entry of this.catalog.volumes.filter((volume) => volume.group === groupConfig.name)) {
      await this.attachVolume(entry, group);
    }
    await this.replication.openPrimary(group, nodeFiles.groupDir(dataDir, groupConfig.name));
    const report = await group.recover(recovered);
    this.recoveries.set(group.name, {
      replayedRecords: report.replayedRecords,
      skippedRecords: report.skippedRecords,
      recoveredActivityExtents: report.recoveredActivityExtents.length,
      stoppedBecause: report.stoppedBecause,
    });
    if (report.recoveredActivityExtents.length > 0) {
      logger.warn({ extents: report.recoveredActivityExtents.length }, "extents were hot at the crash; they are resynced to every peer");
    }
    await this.replication.startPrimary(group, report.recoveredActivityExtents);
    await group.recoveredHandedOff();
  }

  // A group's log file (primary or replica): made with the configured size if missing, its
  // batches written off the event loop and around the page cache.
  private async openLogFile(groupConfig: GroupConfig): Promise<{ logFile: BlockFile; fresh: boolean }> {
    const logPath = nodeFiles.groupLog(this.config.node.dataDir, groupConfig.name);
    const fresh = !existsSync(logPath);
    const logFile = await this.environment.files.open(logPath, { create: groupConfig.logSize, writesOffLoop: true, bypassCache: true });
    this.groupFiles.set(groupConfig.name, logFile);
    return { logFile, fresh };
  }

  // Makes or opens a group's log; a log file this start created and could not make into a log
  // (the disk without room for it, say) is removed, so that the next start makes it afresh
  // instead of finding a file with no log in it.
  private async unlessMade<T>(groupConfig: GroupConfig, fresh: boolean, make: () => Promise<T>): Promise<T> {
    try {
      return await make();
    } catch (error) {
      if (fresh) {
        await this.groupFiles.get(groupConfig.name)?.close().catch(() => undefined);
        this.groupFiles.delete(groupConfig.name);
        await fsp.rm(nodeFiles.groupLog(this.config.node.dataDir, groupConfig.name), { force: true });
      }
      throw error;
    }
  }

  // A secondary group: its log copy, its volumes (read-only exports), redo, then the applier.
  private async openReplica(groupConfig: GroupConfig): Promise<void> {
    const dataDir = this.config.node.dataDir;
    const groupDir = nodeFiles.groupDir(dataDir, groupConfig.name);
    await fsp.mkdir(groupDir, { recursive: true, mode: 0o700 });
    const { logFile, fresh } = await this.openLogFile(groupConfig);
    const replica = await this.unlessMade(groupConfig, fresh, () => Replica.open(groupConfig.name, logFile, fresh, {
      logger: this.logger.child({ subsystem: "replica", group: groupConfig.name }),
      host: this,
      statePath: nodeFiles.replicaState(dataDir, groupConfig.name),
      logSizeBytes: groupConfig.logSize,
    }));
    this.replicas.set(groupConfig.name, replica);
    for (const entry of this.catalog.volumes.filter((volume) => volume.group === groupConfig.name)) await this.attachVolume(entry, replica);
    const { replayedRecords } = await replica.recover();
    // a protective snapshot left by a crash after its resync completed is no longer needed
    if (replica.consistent) await this.snapshots.unprotect(replica.volumeList(), replica.appliedLsn);
    this.recoveries.set(replica.name, { replayedRecords, skippedRecords: 0, recoveredActivityExtents: 0, stoppedBecause: replica.log.recovery?.stoppedBecause ?? "created" });
    await this.replication.openSecondary(replica, groupDir);
    replica.start();
  }

  private async attachVolume(entry: VolumeEntry, owner: Group | Replica): Promise<VolumeState> {
    const file = await this.environment.files.open(entry.path, {});
    const actual = await file.size();
    if (actual !== entry.size) {
      this.logger.warn({ volume: entry.name, catalog: entry.size, actual }, "image size differs from the catalog; using the catalog size");
      if (actual < entry.size && !file.isBlockDevice) await file.truncate(entry.size);
    }
    const volume = new Volume(entry.id, entry.name, file, entry.size, this.environment.nowMs);
    owner.addVolume(volume);
    const isReplica = owner instanceof Replica;
    await this.snapshots.openVolume(volume, this.groupConfig(entry.group).snapshots, isReplica);
    const state: VolumeState = {
      entry,
      volume,
      group: isReplica ? null : owner,
      replica: isReplica ? owner : null,
      export: new VolumeExport(owner as VolumeOwner, volume, isReplica),
    };
    this.volumes.set(entry.name, state);
    return state;
  }

  private async listen(): Promise<void> {
    const { socket, listen } = this.config.nbd;
    if (socket !== undefined) {
      await fsp.rm(socket, { force: true });
      await this.nbd.listenUnix(socket);
    }
    if (listen !== undefined) this.nbdTcp = await this.nbd.listenTcp(listen.host, listen.port);
    const replicationListen = this.config.replication.listen;
    if (replicationListen !== undefined) await this.replication.listen(replicationListen.host, replicationListen.port);
  }

  async announce(apiUrl: string): Promise<void> {
    await writeApiInfo(this.config.node.dataDir, {
      url: apiUrl,
      pid: process.pid,
      nbd: { socket: this.config.nbd.socket, tcp: this.nbdTcp ? `${this.nbdTcp.host}:${this.nbdTcp.port}` : undefined },
    });
  }

  // ---- NbdExportRegistry ----

  lookup(name: string): NbdExport | undefined {
    return this.volumes.get(name)?.export ?? this.snapshots.lookupExport(name);
  }

  list(): readonly { name: string; description: string }[] {
    const volumes = [...this.volumes.values()].map((state) => ({ name: state.volume.name, description: state.export.description }));
    return [...volumes, ...this.snapshots.listExports()];
  }

  // ---- SnapshotHost ----

  private groupConfig(name: string): GroupConfig {
    const found = this.config.groups.find((group) => group.name === name);
    assert(found !== undefined, `group ${name} is not configured`);
    return found;
  }

  snapshotVolume(name: string): SnapshotVolume {
    const state = this.primaryVolume(name);
    this.checkServing();
    return { volume: state.volume, group: state.group, settings: this.groupConfig(state.group.name).snapshots, connections: state.export.connections };
  }

  primaryGroup(name: string): Group {
    return this.group(name);
  }

  groupVolume(group: string, volumeId: number): { volume: Volume; settings: GroupConfig["snapshots"]; replica: boolean } | undefined {
    for (const state of this.volumes.values()) {
      if (state.entry.id !== volumeId || state.entry.group !== group) continue;
      return { volume: state.volume, settings: this.groupConfig(group).snapshots, replica: state.replica !== null };
    }
    return undefined;
  }

  linkReport(group: string): { peer: string; mode: string; inBand: boolean }[] {
    if (!this.groups.has(group)) return [];
    return this.replication.groupLinks(group).list().map((link) => ({ peer: link.peer, mode: link.mode, inBand: link.carriesInBand }));
  }

  async resizeForRestore(volume: Volume, size: number): Promise<void> {
    const state = this.volumeState(volume.name);
    if (state.group !== null) await this.resizeQuiet(volume.name, size);
    else await this.resizeReplicaVolume(state, size);
  }

  async performOperation(group: string, record: LogRecord): Promise<void> {
    await this.snapshots.performRecord(group, record);
  }

  snapshotImage(volume: Volume, snapshot: string): { size: number; read(offset: number, target: Buffer): Promise<void> } | null {
    return this.snapshots.snapshotImage(volume, snapshot);
  }

  syncSnapshots(group: string): Promise<void> {
    return this.snapshots.sync(group);
  }

  twinList(volume: Volume): Twin[] {
    return this.snapshots.twinList(volume);
  }

  applyTwinCatalog(group: string, volume: Volume, catalog: readonly CatalogTwin[], lsn: bigint): Promise<TwinCatalogResult> {
    return this.snapshots.applyTwinCatalog(group, volume, this.groupConfig(group).snapshots, catalog, lsn);
  }

  writeTwin(volume: Volume, snapshot: string, offset: number, data: Buffer | null, length: number): Promise<void> {
    return this.snapshots.writeTwin(volume, snapshot, offset, data, length);
  }

  rebaseSnapshots(group: string, lsn: bigint): Promise<void> {
    return this.snapshots.rebase(group, lsn);
  }

  protection(group: string): ProtectionPolicy | null {
    if (!this.replicas.has(group)) return null;
    return this.groupConfig(group).protection;
  }

  groupOf(volumeName: string): string | undefined {
    return this.volumes.get(volumeName)?.entry.group;
  }

  // ---- Administration ----

  private group(name: string): Group {
    const group = this.groups.get(name);
    if (group !== undefined) return group;
    if (this.replicas.has(name)) throw new OperatingError("ROLE_CONFLICT", { group: name, what: "the group is a secondary on this node" });
    throw new OperatingError("GROUP_NOT_FOUND", { group: name });
  }

  private volumeState(name: string): VolumeState {
    const state = this.volumes.get(name);
    if (state === undefined) throw new OperatingError("VOLUME_NOT_FOUND", { volume: name });
    return state;
  }

  // A volume of a primary group: the operator may change it (a replica's follow its primary).
  private primaryVolume(name: string): VolumeState & { group: Group } {
    const state = this.volumeState(name);
    if (state.group === null) throw new OperatingError("ROLE_CONFLICT", { volume: name, what: "a secondary's volumes follow its primary; change them there" });
    return state as VolumeState & { group: Group };
  }

  private checkServing(): void {
    if (this.stopping !== null) throw new OperatingError("SHUTTING_DOWN", { node: this.config.node.name });
  }

  async createVolume(request: { name: string; group: string; size?: number; path?: string }): Promise<VolumeEntry> {
    this.checkServing();
    if (!isName(request.name, volumeNameLengthMax)) {
      throw new OperatingError("REQUEST_INVALID", `volume name "${request.name}": 1-${volumeNameLengthMax} ${nameRuleText}`);
    }
    const group = this.group(request.group);
    if (this.volumes.has(request.name)) throw new OperatingError("VOLUME_EXISTS", { volume: request.name });
    if (group.volumeList().length >= volumesPerGroupMax) throw new OperatingError("REQUEST_TOO_LARGE", { group: group.name, volumesMax: volumesPerGroupMax });
    if (this.catalog.nextVolumeId > volumeIdMax) throw new OperatingError("REQUEST_TOO_LARGE", `this node has used all ${volumeIdMax} volume ids`);
    if (request.path !== undefined && !isAbsolute(request.path)) throw new OperatingError("REQUEST_INVALID", `path "${request.path}" must be absolute`);
    const adopt = request.path !== undefined && existsSync(request.path);
    const path = request.path ?? nodeFiles.volumeImage(this.config.node.dataDir, request.name);
    if (this.catalog.volumes.some((volume) => volume.path === path)) throw new OperatingError("VOLUME_BUSY", `${path} already backs another volume`);
    let size = request.size;
    if (adopt) {
      const file = await this.environment.files.open(path, {});
      const actual = await file.size();
      await file.close();
      if (size !== undefined && size !== actual) throw new OperatingError("REQUEST_INVALID", `${path} holds ${actual} bytes, not ${size}; omit --size to adopt it as it is`);
      size = actual;
    }
    if (size === undefined) throw new OperatingError("REQUEST_INVALID", "a new volume needs a size");
    checkVolumeSize(size);
    if (!adopt) await (await this.environment.files.open(path, { create: size })).close();
    let entry!: VolumeEntry;
    await this.catalog.update((draft) => {
      entry = { id: draft.nextVolumeId, name: request.name, group: group.name, path, size: size!, owned: !adopt, createdAtMs: this.environment.nowMs() };
      draft.nextVolumeId += 1;
      draft.volumes.push(entry);
    });
    // attached and recorded at one point: no write to it comes before its record
    const { result: recorded } = await group.quiesce(async () => {
      await this.attachVolume(entry, group);
      this.replication.groupLinks(group.name).volumesChanged();
      return group.recordVolumeChange(encodeOperationSet({ version: 1, order: "ordered", operations: [{ op: "volume.attach", volumeId: entry.id, name: entry.name, size: entry.size }] }), entry.id);
    });
    this.logger.info({ volume: entry.name, group: group.name, size, path, adopted: adopt, lsn: String(recorded.lsn), recordBytes: recorded.recordBytes }, "volume created");
    return entry;
  }

  async resizeVolume(name: string, size: number): Promise<VolumeEntry> {
    this.checkServing();
    const state = this.primaryVolume(name);
    checkVolumeSize(size);
    if (state.volume.file.isBlockDevice) throw new OperatingError("NOT_SUPPORTED", `${state.volume.path} is a block device; resize it with its own tools`);
    const { result: recorded, pauseMs } = await state.group.quiesce(async () => {
      await state.group.checkpoint();
      await this.snapshots.beforeShrink(name, size); // snapshots keep their own size and content
      await this.resizeQuiet(name, size);
      return state.group.recordVolumeChange(encodeOperationSet({ version: 1, order: "ordered", operations: [{ op: "volume.resize", volumeId: state.entry.id, size }] }), state.entry.id);
    });
    this.logger.info({ volume: name, size, pauseMs, lsn: String(recorded.lsn), recordBytes: recorded.recordBytes }, "volume resized");
    return this.catalog.find(name)!;
  }

  // The group is quiet and what snapshots need past a new end is preserved.
  async resizeQuiet(name: string, size: number): Promise<void> {
    const state = this.primaryVolume(name);
    await state.volume.resize(size);
    this.replication.groupLinks(state.group.name).volumesChanged(); // at this exact point of the stream
    await this.catalog.update((draft) => {
      const entry = draft.volumes.find((volume) => volume.id === state.entry.id);
      assert(entry !== undefined, "resize: volume missing from catalog");
      entry.size = size;
    });
    this.volumes.set(name, { ...state, entry: this.catalog.find(name)! });
  }

  async deleteVolume(name: string, options: { force?: boolean } = {}): Promise<void> {
    this.checkServing();
    const state = this.primaryVolume(name);
    if (state.export.connections > 0 && !options.force) {
      throw new OperatingError("VOLUME_BUSY", `volume ${name} has ${state.export.connections} NBD connection(s); disconnect them or use --force`);
    }
    const snapshots = this.snapshots.snapshotCount(name);
    if (snapshots > 0 && !options.force) throw new OperatingError("VOLUME_BUSY", `volume ${name} has ${snapshots} snapshot(s); delete them or use --force`);
    await state.group.removeVolume(state.volume, encodeOperationSet({ version: 1, order: "ordered", operations: [{ op: "volume.detach", volumeId: state.entry.id }] }));
    await this.snapshots.removeVolume(state.volume);
    this.replication.groupLinks(state.group.name).volumesChanged();
    this.volumes.delete(name);
    await this.catalog.update((draft) => {
      draft.volumes = draft.volumes.filter((volume) => volume.id !== state.entry.id);
    });
    await state.volume.close();
    if (state.entry.owned) await fsp.rm(state.entry.path, { force: true });
    this.logger.info({ volume: name, removedImage: state.entry.owned }, "volume deleted");
  }

  // ---- Replication (operator) ----

  async acceptLink(credential: string): Promise<{ group: string; primary: string }> {
    this.checkServing();
    return this.replication.acceptLink(credential, (group) => nodeFiles.groupDir(this.config.node.dataDir, group));
  }

  private primaryGroups(name: string | undefined): Group[] {
    return name === undefined ? [...this.groups.values()] : [this.group(name)];
  }

  // Waits until every link of the groups has applied everything written before the call.
  async drain(groupName: string | undefined, msMax: number): Promise<{ groups: { group: string; lsn: string; links: string[] }[] }> {
    const groups = [];
    for (const group of this.primaryGroups(groupName)) groups.push({ group: group.name, ...(await this.replication.groupLinks(group.name).drain(msMax)) });
    return { groups };
  }

  async verify(groupName: string | undefined): Promise<{ consistent: boolean; groups: { group: string; links: unknown[] }[] }> {
    const groups = [];
    let consistent = true;
    for (const group of this.primaryGroups(groupName)) {
      const links = await this.replication.groupLinks(group.name).verify(verifyRegionBytes);
      if (links.some((link) => link.differingBytes > 0)) consistent = false;
      groups.push({ group: group.name, links });
    }
    return { consistent, groups };
  }

  // Promotion is not built yet (the takeover work); what exists is the refusal that it will
  // start from: a replica in the middle of a resync is not an image the primary ever had.
  async takeover(groupName: string): Promise<never> {
    const replica = this.replicas.get(groupName);
    if (replica === undefined) {
      if (this.groups.has(groupName)) throw new OperatingError("ROLE_CONFLICT", { group: groupName, what: "the group is already primary here" });
      throw new OperatingError("GROUP_NOT_FOUND", { group: groupName });
    }
    replica.checkPromotable();
    throw new OperatingError("NOT_SUPPORTED", { group: groupName, what: "takeover is not built yet; the replica is consistent" });
  }

  // ---- ReplicaHost: a replica's volumes follow its primary's table ----

  // A resync is about to make the replica's volumes inconsistent: protective snapshots keep
  // the last consistent image and serve readers until it completes.
  async beforeResync(group: string, wasConsistent: boolean, appliedLsn: bigint): Promise<void> {
    const replica = this.replicas.get(group);
    assert(replica !== undefined, `resync of ${group}, which is not a replica here`);
    await this.snapshots.protect(replica.volumeList(), wasConsistent, appliedLsn, this.groupConfig(group).snapshots);
    if (!wasConsistent) this.logger.warn({ group }, "resync starting: the replica was not consistent; readers get its protective snapshot if it has one");
  }

  async afterResync(group: string, appliedLsn: bigint): Promise<void> {
    const replica = this.replicas.get(group);
    assert(replica !== undefined, `resync of ${group}, which is not a replica here`);
    await this.snapshots.unprotect(replica.volumeList(), appliedLsn);
  }

  protectedReader(volume: Volume): ((offset: number, target: Buffer) => Promise<void>) | null {
    return this.snapshots.protectedReader(volume);
  }

  async applyVolumeTable(groupName: string, table: VolumeTable): Promise<void> {
    const replica = this.replicas.get(groupName);
    assert(replica !== undefined, `volume table for ${groupName}, which is not a replica here`);
    const wanted = new Map(table.volumes.map((entry) => [entry.volumeId, entry]));
    const mine = [...this.volumes.values()].filter((state) => state.replica === replica);
    for (const state of mine) {
      const entry = wanted.get(state.entry.id);
      if (entry === undefined || entry.name !== state.volume.name) await this.dropReplicaVolume(state);
      else if (entry.size !== state.volume.size) await this.resizeReplicaInStream(groupName, state, entry.size);
    }
    for (const entry of table.volumes) {
      const existing = this.volumes.get(entry.name);
      if (existing?.replica === replica && existing.entry.id === entry.volumeId) continue;
      if (existing !== undefined) {
        this.logger.error({ group: groupName, volume: entry.name }, "the primary's volume has the name of another volume on this node; not replicated");
        continue;
      }
      await this.createReplicaVolume(replica, entry);
    }
  }

  // A volume operation record (group/operation.ts). A primary made the change before it logged
  // the record (its catalog holds it), so redo skips it; a secondary makes it at its point.
  async performVolumeOperation(groupName: string, operation: VolumeOperation, lsn: bigint): Promise<unknown> {
    const replica = this.replicas.get(groupName);
    if (replica === undefined) return { skipped: true };
    const state = [...this.volumes.values()].find((candidate) => candidate.replica === replica && candidate.entry.id === operation.volumeId);
    switch (operation.op) {
      case "volume.attach": {
        if (state !== undefined) return { skipped: true }; // redo
        if (this.volumes.has(operation.name)) {
          this.logger.error({ group: groupName, volume: operation.name, lsn: String(lsn) }, "the primary's volume has the name of another volume on this node; not replicated");
          return { skipped: true };
        }
        await this.createReplicaVolume(replica, { volumeId: operation.volumeId, name: operation.name, size: operation.size });
        return { attached: operation.name };
      }
      case "volume.resize": {
        if (state === undefined || state.volume.size === operation.size) return { skipped: true };
        await this.resizeReplicaInStream(groupName, state, operation.size);
        return { resized: state.volume.name, size: operation.size };
      }
      case "volume.detach":
        if (state === undefined) return { skipped: true };
        await this.dropReplicaVolume(state);
        return { detached: state.volume.name };
    }
  }

  // A replica's volume resized by its primary (a volume table or a volume.resize record): a
  // shrink is subject to the secondary's policy, and the twins keep what they read past the end.
  private async resizeReplicaInStream(group: string, state: VolumeState, size: number): Promise<void> {
    if (size < state.volume.size) await this.protectShrink(group, state.volume.name, size);
    await this.snapshots.beforeShrink(state.volume.name, size); // and a pending restore completes, whichever way
    await this.resizeReplicaVolume(state, size);
  }

  // A shrink destroys the data past the new end: the secondary's policy applies to it too.
  private async protectShrink(group: string, volume: string, size: number): Promise<void> {
    const policy = this.groupConfig(group).protection;
    const what = `shrink ${volume} to ${size} bytes`;
    if (policy.destructive === "refuse") throw new OperatingError("OPERATION_REFUSED", { group, operation: what });
    if (policy.destructive === "delay") await this.snapshots.hold(group, "volume table", [what], this.environment.nowMs() + policy.delaySeconds * 1000);
  }

  private async createReplicaVolume(replica: Replica, table: { volumeId: number; name: string; size: number }): Promise<void> {
    const path = nodeFiles.volumeImage(this.config.node.dataDir, table.name);
    await fsp.rm(path, { force: true }); // an image left by an earlier volume of that name
    await (await this.environment.files.open(path, { create: table.size })).close();
    let entry!: VolumeEntry;
    await this.catalog.update((draft) => {
      entry = { id: table.volumeId, name: table.name, group: replica.name, path, size: table.size, owned: true, createdAtMs: this.environment.nowMs() };
      draft.nextVolumeId = Math.max(draft.nextVolumeId, table.volumeId + 1);
      draft.volumes.push(entry);
    });
    await this.attachVolume(entry, replica);
    this.logger.info({ group: replica.name, volume: table.name, size: table.size }, "replica volume created");
  }

  private async resizeReplicaVolume(state: VolumeState, size: number): Promise<void> {
    await state.volume.resize(size);
    await this.catalog.update((draft) => {
      const entry = draft.volumes.find((volume) => volume.id === state.entry.id && volume.group === state.entry.group);
      assert(entry !== undefined, "resize: volume missing from catalog");
      entry.size = size;
    });
    this.volumes.set(state.volume.name, { ...state, entry: this.catalog.find(state.volume.name)! });
  }

  private async dropReplicaVolume(state: VolumeState): Promise<void> {
    state.replica!.removeVolume(state.volume);
    await this.snapshots.removeVolume(state.volume); // its twins go with it, as on the primary
    this.volumes.delete(state.volume.name);
    await this.catalog.update((draft) => {
      draft.volumes = draft.volumes.filter((volume) => !(volume.id === state.entry.id && volume.group === state.entry.group));
    });
    await state.volume.close();
    if (state.entry.owned) await fsp.rm(state.entry.path, { force: true });
    this.logger.info({ group: state.entry.group, volume: state.volume.name }, "replica volume deleted");
  }

  volumeInfo(state: VolumeState): Record<string, unknown> {
    return {
      name: state.volume.name,
      id: state.entry.id,
      group: (state.group ?? state.replica)!.name,
      size: state.volume.size,
      path: state.volume.path,
      owned: state.entry.owned,
      connections: state.export.connections,
      errors: state.volume.errorCount,
      lastError: state.volume.lastError,
      export: state.volume.name,
      snapshots: state.group === null ? null : this.snapshots.usage(state.volume.name),
    };
  }

  volumeList(): Record<string, unknown>[] {
    return [...this.volumes.values()].map((state) => this.volumeInfo(state));
  }

  async status(): Promise<Record<string, unknown>> {
    const groups: Record<string, unknown>[] = [];
    for (const group of this.groups.values()) groups.push({ ...this.groupStatus(group), links: await this.replication.groupLinks(group.name).statusList() });
    for (const replica of this.replicas.values()) groups.push(this.replicaStatus(replica));
    return {
      node: this.config.node.name,
      pid: process.pid,
      state: this.stopping === null ? "serving" : "stopping",
      uptimeMs: this.environment.nowMs() - this.startedAtMs,
      dataDir: this.config.node.dataDir,
      nbd: { socket: this.config.nbd.socket ?? null, tcp: this.nbdTcp ? `${this.nbdTcp.host}:${this.nbdTcp.port}` : null, connections: this.nbd.connectionCount, poll: { micros: this.nbd.pollWindow.windowMicros, windows: this.nbd.pollWindow.windows, turns: this.nbd.pollWindow.turns } },
      replication: { listen: this.replication.listenAddress === null ? null : `${this.replication.listenAddress.host}:${this.replication.listenAddress.port}` },
      groups,
      volumes: this.volumeList(),
    };
  }

  private logStatus(group: string, log: GroupLog): Record<string, unknown> {
    const usage = log.usage();
    return {
      state: log.health.state,
      failure: log.health.failure,
      sizeBytes: usage.sizeBytes,
      usedBytes: usage.usedBytes,
      usedPercent: Math.round((usage.usedBytes / usage.sizeBytes) * 1000) / 10,
      tailLsn: String(usage.tailLsn),
      headLsn: String(usage.headLsn),
      durableLsn: String(usage.durableLsn),
      batches: usage.batches,
      syncs: usage.syncs,
      // its batches go around the page cache (O_DIRECT; false where the file system refuses it)
      directIo: this.groupFiles.get(group)?.bypassesCache ?? false,
    };
  }

  private groupStatus(group: Group): Record<string, unknown> {
    return {
      name: group.name,
      role: "primary",
      durability: group.durability,
      // writes logged without their data: activity-map with no link (DESIGN-NOTES §1)
      logOmitsData: group.omitsData,
      log: this.logStatus(group.name, group.log),
      inflight: group.inflight,
      // logged changes a disk error kept from the images, being retried (DESIGN-NOTES §3)
      unapplied: group.unappliedList(),
      stats: group.stats,
      recovery: this.recoveries.get(group.name) ?? null,
      volumes: group.volumeList().map((volume) => volume.name),
    };
  }

  private replicaStatus(replica: Replica): Record<string, unknown> {
    return {
      name: replica.name,
      role: "secondary",
      primary: this.replication.acceptedPrimary(replica.name),
      connected: this.replication.sessionActive(replica.name),
      // A resync overwrites regions out of write order: until it ends the volumes are not an
      // image the primary ever had, and the replica refuses to be promoted.
      consistent: replica.consistent,
      resyncing: replica.resyncing,
      // while inconsistent, these volumes' readers get their protective snapshot (the last consistent image)
      protectedVolumes: this.snapshots.protectedVolumes(replica.volumeList()),
      protection: { ...this.groupConfig(replica.name).protection, ...this.snapshots.protectionStatus(replica.name) },
      appliedLsn: String(replica.appliedLsn),
      receivedLsn: String(replica.log.headLsn),
      durableLsn: String(replica.log.durableLsn),
      pendingBytes: replica.pendingBytes,
      failure: replica.health?.message ?? null,
      log: this.logStatus(replica.name, replica.log),
      stats: replica.stats,
      recovery: this.recoveries.get(replica.name) ?? null,
      volumes: replica.volumeList().map((volume) => volume.name),
    };
  }

  // ---- Stop ----

  stop(): Promise<void> {
    this.stopping ??= this.stopOnce();
    return this.stopping;
  }

  private async stopOnce(): Promise<void> {
    this.logger.info("stopping");
    await removeApiInfo(this.config.node.dataDir).catch(() => undefined);
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, shutdownMsMax).unref());
    await Promise.race([this.nbd.close(), deadline]);
    await this.replication.stop();
    for (const replica of this.replicas.values()) {
      await replica.close();
      await this.groupFiles.get(replica.name)?.close();
      for (const volume of replica.volumeList()) await volume.close();
    }
    for (const group of this.groups.values()) {
      await group.close();
      await this.groupFiles.get(group.name)?.close();
      for (const volume of group.volumeList()) await volume.close();
    }
    await this.snapshots.close();
    if (this.config.nbd.socket !== undefined) await fsp.rm(this.config.nbd.socket, { force: true });
    this.logger.info("stopped");
  }
}

