// The node's snapshots: one snapshot store per volume (opened when the volume has one, created
// by its first snapshot), their NBD exports `volume@snapshot`, and the operations on them.
//
// Every operation is a record in the group's log (group/operation.ts), performed at its LSN:
//
//   primary:    operator ─▶ check (nothing logged if refused) ─▶ Group.operate: writes paused,
//               record appended and durable ─▶ perform here ─▶ writes resume
//   secondary:  the applier reaches the record ─▶ perform here, on the twins (same names)
//   redo:       a record whose LSN is past a store's appliedOperationLsn is performed again
//
// so the snapshot trees are the same on every site and no data crosses a link for them: a
// restore on a secondary copies from its own twin. A secondary's snapshots are read-only
// exports (writes reach them only through the stream).
//
//   <dataDir>/snapshots/<volumeId>/store   the slots (preserved and written chunks)
//   <dataDir>/snapshots/<volumeId>/meta/   the metadata (LMDB)

import { existsSync, promises as fsp } from "node:fs";
import { join } from "node:path";

import { snapshotNameLengthMax, snapshotsPerVolumeMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import type { BlockFileOpener } from "../io/block-file.js";
import { scheduleIo } from "../io/io-scheduler.js";
import type { Logger } from "../logger.js";
import type { FrozenTwins, Group, SnapshotImageView } from "../group/group.js";
import { decodeOperationSet, encodeOperationSet, isVolumeOperation, operationVolumes, type Operation, type OperationSet, type SnapshotOperation, type VolumeOperation } from "../group/operation.js";
import { isSnapshotChangeKind, RecordKind, type LogRecord } from "../log/record.js";
import { decodeSnapshotChange, encodeSnapshotChange } from "../group/snapshot-change.js";
import { checkSnapshotName, SnapshotStore, type DiffResult, type RestoreResult, type SnapshotInfo } from "../snapshot/snapshot-store.js";
import type { Volume } from "../volume/volume.js";
import { SnapshotExport } from "./snapshot-export.js";
import { doomedTwins, type CatalogTwin, type Twin } from "../replication/twins.js";

// A secondary's protective snapshot during a resync: '~' is not allowed in operators' names.
export const protectiveSnapshot = "~resync";
// A primary's frozen copies while it builds a peer's twins (~twin.<build>.<image id>).
const frozenPrefix = "~twin.";

// What a peer did with a catalog.
export interface TwinCatalogResult {
  readonly built: string[];
  readonly kept: string[];
  readonly deleted: string[];
  readonly retained: string[]; // deletions the protection policy refused: kept under ~retained.*
}

export interface SnapshotSettings {
  readonly chunkSize: number;
  readonly storeSize: number;
}

export interface SnapshotVolume {
  readonly volume: Volume;
  readonly group: Group;
  readonly settings: SnapshotSettings;
  readonly connections: number;
}

export interface SnapshotHost {
  snapshotVolume(name: string): SnapshotVolume; // a primary's volume: VOLUME_NOT_FOUND / ROLE_CONFLICT
  primaryGroup(name: string): Group; // GROUP_NOT_FOUND / ROLE_CONFLICT
  // A volume of a group on this node (primary or replica) by id: where operations land.
  groupVolume(group: string, volumeId: number): { volume: Volume; settings: SnapshotSettings; replica: boolean } | undefined;
  // The group's links and whether each carries records logged now in its stream.
  linkReport(group: string): { peer: string; mode: string; inBand: boolean }[];
  groupOf(volumeName: string): string | undefined;
  // A secondary group's protection policy against destructive operations; null on a primary.
  protection(group: string): ProtectionPolicy | null;
  // Resizes a volume whose group is quiet (a restore to a snapshot of another size).
  resizeForRestore(volume: Volume, size: number): Promise<void>;
  // A volume attached, resized or detached: performed on a secondary at its point (a primary
  // made the change before it logged the record, and skips it).
  performVolumeOperation(group: string, operation: VolumeOperation, lsn: bigint): Promise<unknown>;
}

export interface ProtectionPolicy {
  readonly destructive: "apply" | "delay" | "refuse";
  readonly delaySeconds: number;
}

// An operation a secondary's policy holds back, as status shows it.
export interface HeldOperation {
  readonly lsn: string;
  readonly operations: string[];
  readonly untilMs: number;
}

const holdPollMs = 1_000; // a held operation re-checks for shutdown this often

// What an operation cost: its pause at the primary and its bytes on each link.
export interface OperationReport {
  readonly lsn: string;
  readonly pauseMs: number;
  readonly recordBytes: number;
  readonly links: { peer: string; mode: string; bytes: number; inBand: boolean }[];
}

export interface ImageName {
  readonly volume: string;
  readonly snapshot: string | null;
}

// A snapshot's key in the group's snapshot gate (volume ids < 2^20, image ids < 2^32: exact).
function snapshotGateKey(volume: Volume, imageId: number): number {
  return volume.id * 2 ** 32 + imageId;
}

function describeOperation(operation: Operation): string {
  return isVolumeOperation(operation) ? `${operation.op} volume ${operation.volumeId}` : `${operation.op} volume ${operation.volumeId} ${operation.snapshot}`;
}

// A store's snapshots that have (or are) twins: operators' names, not the node's own '~' ones.
function twinsOf(store: SnapshotStore): Twin[] {
  return store
    .names()
    .filter((name) => !name.startsWith("~"))
    .map((name) => {
      const image = store.image(name);
      return { name, parent: image.parent, writable: image.writable, size: image.size, createdLsn: BigInt(image.createdLsn) };
    });
}

// The name a twin the protection policy would not delete is kept under: one no operation can
// give, so the primary may reuse the original.
function retainedName(lsn: bigint, name: string): string {
  return `~retained.${lsn}.${name}`.slice(0, snapshotNameLengthMax);
}

function notFrozen(snapshot: { name: string }): boolean {
  return !snapshot.name.startsWith(frozenPrefix);
}

export function parseImageName(text: string): ImageName {
  const at = text.indexOf("@");
  if (at < 0) return { volume: text, snapshot: null };
  const snapshot = text.slice(at + 1);
  if (at === 0 || snapshot.length === 0 || snapshot.includes("@")) throw new OperatingError("REQUEST_INVALID", `"${text}": an image is VOLUME or VOLUME@SNAPSHOT`);
  return { volume: text.slice(0, at), snapshot };
}

export class NodeSnapshots {
  private readonly stores = new Map<string, SnapshotStore>(); // by volume name
  private readonly readOnly = new Set<string>(); // volumes of replicas: their snapshots are twins
  private readonly exports = new Map<string, SnapshotExport>(); // by volume@snapshot
  private readonly held = new Map<string, HeldOperation>(); // by group: what its policy holds now
  private readonly retained = new Map<string, number>(); // by group: twins kept against a delete
  private stopping = false;
  private freezes = 0; // twin builds so far: names each build's frozen copies

  constructor(
    private readonly host: SnapshotHost,
    private readonly dataDir: string,
    private readonly files: BlockFileOpener,
    private readonly nowMs: () => number,
    private readonly logger: Logger,
    // the pause of a restore's background copier between batches (the simulator's clock there)
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  ) {}

  private directory(volume: Volume): string {
    return join(this.dataDir, "snapshots", String(volume.id));
  }

  // At start: a volume that has a store gets it back (before redo, which must preserve too).
  async openVolume(volume: Volume, settings: SnapshotSettings, replica: boolean): Promise<SnapshotStore | null> {
    if (replica) this.readOnly.add(volume.name);
    if (!existsSync(this.directory(volume))) return null;
    return this.openStore(volume, settings);
  }

  private async openStore(volume: Volume, settings: SnapshotSettings): Promise<SnapshotStore> {
    const directory = this.directory(volume);
    await scheduleIo(directory, () => fsp.mkdir(join(directory, "meta"), { recursive: true, mode: 0o700 }));
    const file = await this.files.open(join(directory, "store"), { create: 0 });
    const store = await SnapshotStore.open(volume, file, join(directory, "meta"), { chunkSize: settings.chunkSize, storeSizeMax: settings.storeSize, nowMs: this.nowMs, sleep: this.sleep });
    this.stores.set(volume.name, store);
    // copies frozen for a twin build that a crash interrupted (the link builds again)
    await store.dropImages(store.names().filter((name) => name.startsWith(frozenPrefix)));
    return store;
  }

  store(volumeName: string): SnapshotStore | null {
    return this.stores.get(volumeName) ?? null;
  }

  // ---- Exports ----

  lookupExport(name: string): SnapshotExport | undefined {
    const existing = this.exports.get(name);
    if (existing !== undefined) return existing;
    const at = name.indexOf("@");
    if (at <= 0) return undefined;
    const volume = name.slice(0, at);
    const store = this.stores.get(volume);
    const snapshot = name.slice(at + 1);
    if (store === undefined || !store.has(snapshot)) return undefined;
    const created = new SnapshotExport(store, volume, snapshot, this.readOnly.has(volume) ? null : (name, offset, data, length, fua) => this.writeSnapshot(volume, store, name, offset, data, length, fua));
    this.exports.set(name, created);
    return created;
  }

  listExports(): { name: string; description: string }[] {
    const found: { name: string; description: string }[] = [];
    for (const [volume, store] of this.stores) {
      for (const snapshot of store.names()) {
        const exported = this.lookupExport(`${volume}@${snapshot}`)!;
        found.push({ name: exported.name, description: exported.description });
      }
    }
    return found;
  }

  private connections(volume: string, snapshot: string): number {
    return this.exports.get(`${volume}@${snapshot}`)?.connections ?? 0;
  }

  // A write (data null: zeroes) to a writable snapshot on the primary: room reserved in the
  // store, then a record in the group's log, then the store (group/group.ts snapshotChange).
  private async writeSnapshot(volumeName: string, store: SnapshotStore, snapshot: string, offset: number, data: Buffer | null, length: number, fua: boolean): Promise<void> {
    const entry = this.host.snapshotVolume(volumeName);
    const { reservation, release } = store.reserveWrite(snapshot, offset, length);
    try {
      const kind = data === null ? RecordKind.snapshotZero : RecordKind.snapshotWrite;
      const gateKey = snapshotGateKey(entry.volume, store.image(snapshot).id);
      await entry.group.snapshotChange(entry.volume, gateKey, kind, offset, length, encodeSnapshotChange(snapshot, data), fua, () => store.write(snapshot, offset, data, length, fua, reservation));
    } finally {
      release();
    }
  }

  // ---- Performing records (primary after logging, secondary applier, redo) ----

  // Performs an operation record (those a store already performed, by LSN, are skipped) or a
  // snapshot change (skipped when an operation since made the store durable past it).
  async performRecord(group: string, record: LogRecord): Promise<void> {
    if (isSnapshotChangeKind(record.kind)) {
      await this.performSnapshotChange(group, record);
      return;
    }
    const set = decodeOperationSet(record.payload, record.lsn);
    const policy = this.host.protection(group);
    const guarded = policy === null || policy.destructive === "apply" ? set : await this.applyProtection(group, set, record, policy);
    if (guarded.operations.length > 0) await this.performSet(group, guarded, record.lsn);
  }

  // A secondary's policy against destructive operations (docs/DESIGN-NOTES.md §8).
  private async applyProtection(group: string, set: OperationSet, record: LogRecord, policy: ProtectionPolicy): Promise<OperationSet> {
    const destructive = set.operations.filter((operation) => operation.op === "snapshot.delete" || operation.op === "snapshot.restore");
    if (destructive.length === 0) return set;
    if (policy.destructive === "delay") {
      await this.hold(group, String(record.lsn), destructive.map(describeOperation), record.timestampMs + policy.delaySeconds * 1000);
      return set;
    }
    const restore = destructive.find((operation) => operation.op === "snapshot.restore");
    if (restore !== undefined) {
      this.held.set(group, { lsn: String(record.lsn), operations: [describeOperation(restore)], untilMs: Infinity });
      throw new OperatingError("OPERATION_REFUSED", { group, lsn: String(record.lsn), operation: describeOperation(restore), what: "a restore cannot be skipped without leaving the primary's image; the applier stops here until the policy allows it" });
    }
    for (const operation of destructive) await this.retainTwin(group, operation, record.lsn);
    return { ...set, operations: set.operations.filter((operation) => operation.op !== "snapshot.delete") };
  }

  // Keeps the twin a refused delete names, under a name no operation can give (so the primary
  // may reuse the name), with the snapshots taken of it.
  private async retainTwin(group: string, operation: SnapshotOperation, lsn: bigint): Promise<void> {
    const target = this.host.groupVolume(group, operation.volumeId);
    const store = target === undefined ? undefined : this.stores.get(target.volume.name);
    if (store === undefined || !store.has(operation.snapshot)) return; // retained before a crash
    const names = [operation.snapshot, ...this.descendants(store, operation.snapshot)];
    for (const name of names) await store.exclusive(() => store.rename(name, retainedName(lsn, name)));
    this.retained.set(group, (this.retained.get(group) ?? 0) + names.length);
    this.logger.warn({ group, lsn: String(lsn), kept: names.map((name) => retainedName(lsn, name)) }, "the protection policy refused a snapshot delete: its twins are kept");
  }

  // Waits until untilMs (status shows what is held), or until the node stops.
  async hold(group: string, lsn: string, operations: string[], untilMs: number): Promise<void> {
    if (this.nowMs() >= untilMs) return;
    this.held.set(group, { lsn, operations, untilMs });
    this.logger.warn({ group, lsn, operations, untilMs }, "the protection policy holds a destructive operation");
    try {
      while (this.nowMs() < untilMs) {
        if (this.stopping) throw new OperatingError("SHUTTING_DOWN", { group, what: "a held operation" });
        await new Promise((resolve) => setTimeout(resolve, Math.min(holdPollMs, untilMs - this.nowMs())));
      }
    } finally {
      this.held.delete(group);
    }
  }

  protectionStatus(group: string): { held: HeldOperation | null; retainedTwins: number } {
    return { held: this.held.get(group) ?? null, retainedTwins: this.retained.get(group) ?? 0 };
  }

  private async performSnapshotChange(groupName: string, record: LogRecord): Promise<void> {
    const withData = record.kind === RecordKind.snapshotWrite;
    const { snapshot, data } = decodeSnapshotChange(record.payload, record.length, withData, record.lsn);
    const target = this.host.groupVolume(groupName, record.volumeId);
    if (target === undefined) return; // the volume was deleted since (redo), like its data records
    const store = this.stores.get(target.volume.name);
    if (store !== undefined && record.lsn < store.appliedOperationLsn && !store.has(snapshot)) return; // redo: deleted (or retained) since
    if (store === undefined || !store.has(snapshot)) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: `${target.volume.name}@${snapshot}`, lsn: String(record.lsn) });
    if (record.lsn < store.durableThroughLsn) return; // redo: durable already, maybe refreshed since
    await store.write(snapshot, record.offset, data, record.length, false);
  }

  // The snapshots of a volume that have twins (not the protective one), as verify reads them.
  snapshotImages(volume: Volume): SnapshotImageView[] {
    const store = this.stores.get(volume.name);
    if (store === undefined) return [];
    return store.names().filter((name) => name !== protectiveSnapshot).map((name) => {
      const image = store.image(name);
      return { name, size: image.size, gateKey: snapshotGateKey(volume, image.id), read: (offset: number, target: Buffer) => store.read(name, offset, target) };
    });
  }

  // A twin to hash on a secondary.
  snapshotImage(volume: Volume, snapshot: string): { size: number; read(offset: number, target: Buffer): Promise<void> } | null {
    const store = this.stores.get(volume.name);
    if (store === undefined || !store.has(snapshot)) return null;
    return { size: store.image(snapshot).size, read: (offset, target) => store.read(snapshot, offset, target) };
  }

  // Makes every snapshot change of the group's volumes durable.
  async sync(group: string): Promise<void> {
    const stores: SnapshotStore[] = [];
    for (const [volume, store] of this.stores) if (this.host.groupOf(volume) === group) stores.push(store);
    await Promise.all(stores.map((store) => store.flush()));
  }

  private async performSet(group: string, set: OperationSet, lsn: bigint): Promise<unknown[]> {
    if (set.order === "unordered") return Promise.all(set.operations.map((operation) => this.performOne(group, operation, lsn)));
    const results: unknown[] = [];
    for (const operation of set.operations) results.push(await this.performOne(group, operation, lsn));
    return results;
  }

  private async performOne(groupName: string, operation: Operation, lsn: bigint): Promise<unknown> {
    if (isVolumeOperation(operation)) return this.host.performVolumeOperation(groupName, operation, lsn);
    const target = this.host.groupVolume(groupName, operation.volumeId);
    if (target === undefined) {
      // only redo meets this: the volume was deleted after the operation (a live primary checks
      // first, and a secondary creates volumes at their exact point in the stream)
      this.logger.warn({ group: groupName, volumeId: operation.volumeId, lsn: String(lsn), op: operation.op }, "an operation on a volume that no longer exists: skipped");
      return { skipped: true };
    }
    let store = this.stores.get(target.volume.name) ?? null;
    if (store === null) {
      if (operation.op !== "snapshot.create") throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: `${target.volume.name}@${operation.snapshot}`, lsn: String(lsn) });
      store = await this.openStore(target.volume, target.settings);
    }
    if (store.appliedOperationLsn >= lsn) return { skipped: true }; // redo: performed before the crash
    const opened = store;
    const volume = target.volume;
    return opened.exclusive(async () => {
      switch (operation.op) {
        case "snapshot.create":
          return opened.create({ name: operation.snapshot, from: operation.from, writable: operation.writable, lsn });
        case "snapshot.delete": {
          const deleted = await opened.delete(operation.snapshot, operation.recursive, lsn);
          for (const snapshot of deleted) this.exports.delete(`${volume.name}@${snapshot}`);
          return deleted.map((snapshot) => `${volume.name}@${snapshot}`);
        }
        case "snapshot.refresh": {
          const refreshed = await opened.refresh(operation.snapshot, operation.fromVolume, lsn);
          this.exports.delete(refreshed.name); // its size may have changed: the next connection sees it
          return refreshed;
        }
        case "snapshot.restore":
          return opened.restore(operation.snapshot, lsn, async (size) => {
            await opened.beforeShrink(size);
            await this.host.resizeForRestore(volume, size);
          });
        case "snapshot.sync":
          return opened.sync(operation.from, operation.snapshot, lsn);
      }
    });
  }

  // ---- The protective snapshot of a secondary's volume during a resync ----

  // Before a resync makes the volumes inconsistent: a local snapshot of each (not a twin: no
  // operation record names it, and its name is one no operator can give). The image it keeps is
  // the one the replica had through appliedLsn, a prefix of the primary's write order. A
  // replica that was not consistent keeps the protective snapshot it already has, if any.
  async protect(volumes: readonly Volume[], wasConsistent: boolean, appliedLsn: bigint, settings: SnapshotSettings): Promise<void> {
    if (!wasConsistent || appliedLsn === 0n) return; // nothing consistent to keep (or an empty image)
    for (const volume of volumes) {
      const store = this.stores.get(volume.name) ?? (await this.openStore(volume, settings));
      // one left by a crash before the replica said it was inconsistent is older: refresh it
      if (store.has(protectiveSnapshot)) await store.exclusive(() => store.refresh(protectiveSnapshot, true, appliedLsn));
      else await store.exclusive(() => store.create({ name: protectiveSnapshot, from: null, writable: false, lsn: appliedLsn, internal: true }));
      this.logger.info({ volume: volume.name, appliedLsn: String(appliedLsn) }, "protective snapshot taken: it serves readers until the resync completes");
    }
  }

  async unprotect(volumes: readonly Volume[], appliedLsn: bigint): Promise<void> {
    for (const volume of volumes) {
      const store = this.stores.get(volume.name);
      if (store === undefined || !store.has(protectiveSnapshot)) continue;
      await store.exclusive(() => store.delete(protectiveSnapshot, false, appliedLsn));
      this.exports.delete(`${volume.name}@${protectiveSnapshot}`);
      this.logger.info({ volume: volume.name }, "resync complete: protective snapshot removed");
    }
  }

  protectedVolumes(volumes: readonly Volume[]): string[] {
    return volumes.filter((volume) => this.stores.get(volume.name)?.has(protectiveSnapshot)).map((volume) => volume.name);
  }

  protectedReader(volume: Volume): ((offset: number, target: Buffer) => Promise<void>) | null {
    const store = this.stores.get(volume.name);
    if (store === undefined || !store.has(protectiveSnapshot)) return null;
    return (offset, target) => store.read(protectiveSnapshot, offset, target);
  }

  // A replica's log copy restarts at lsn + 1 on another history: its stores forget the LSNs of
  // the old one (SnapshotStore.rebase).
  async rebase(group: string, lsn: bigint): Promise<void> {
    for (const [volume, store] of this.stores) if (this.host.groupOf(volume) === group) await store.exclusive(() => store.rebase(lsn));
  }

  // ---- Twins when the exact point was lost (docs/DESIGN-NOTES.md §8) ----

  // Primary, with the group quiet: the volume's snapshots and a frozen copy of every image, so
  // that a link can build a peer's twins from them as they were at this point.
  async freezeTwins(volume: Volume): Promise<FrozenTwins> {
    const store = this.stores.get(volume.name);
    if (store === undefined) return { catalog: [], diffRegions: () => [], read: () => Promise.reject(new OperatingError("SNAPSHOT_NOT_FOUND", { volume: volume.name })), release: async () => undefined };
    const build = (this.freezes += 1);
    const catalog = twinsOf(store);
    const copyOf = new Map<string | null, string>([[null, `${frozenPrefix}${build}.v`]]);
    for (const twin of catalog) copyOf.set(twin.name, `${frozenPrefix}${build}.${store.image(twin.name).id}`);
    await store.exclusive(() => store.freezeImages([...copyOf].map(([source, name]) => ({ name, source }))));
    const copy = (image: string | null): string => copyOf.get(image)!;
    return {
      catalog,
      diffRegions: (snapshot, base) => store.diffRegions(copy(snapshot), copy(base)),
      read: (snapshot, offset, target) => store.read(copy(snapshot), offset, target),
      release: () => store.exclusive(() => store.dropImages([...copyOf.values()])),
    };
  }

  // Secondary, in its applier at the point: the twins of a volume (not its own local images).
  twinList(volume: Volume): Twin[] {
    const store = this.stores.get(volume.name);
    return store === undefined ? [] : twinsOf(store);
  }

  // Secondary, in its applier at the point: deletes the twins the primary has no snapshot of
  // (its policy may keep them as ~retained.*), then builds every twin the catalog flags, parents
  // first, each on its base as the peer has it now; the regions follow (writeTwin).
  async applyTwinCatalog(group: string, volume: Volume, settings: SnapshotSettings, catalog: readonly CatalogTwin[], lsn: bigint): Promise<TwinCatalogResult> {
    const existing = this.stores.get(volume.name);
    if (existing === undefined && catalog.length === 0) return { built: [], kept: [], deleted: [], retained: [] };
    const store = existing ?? (await this.openStore(volume, settings));
    const policy = this.host.protection(group);
    const keep = policy !== null && policy.destructive !== "apply";
    const deleted: string[] = [];
    const retained: string[] = [];
    await store.exclusive(async () => {
      for (const name of doomedTwins(twinsOf(store), catalog)) {
        this.exports.delete(`${volume.name}@${name}`);
        if (keep) {
          const kept = retainedName(lsn, name);
          await store.rename(name, kept);
          retained.push(kept);
        } else {
          await store.delete(name, false, store.appliedOperationLsn > lsn ? store.appliedOperationLsn : lsn);
          deleted.push(name);
        }
      }
      for (const twin of catalog) {
        if (!twin.build) {
          if (!store.has(twin.name)) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: `${volume.name}@${twin.name}`, lsn: String(lsn), what: "the primary counted on this twin being kept" });
          continue;
        }
        await store.buildTwin(twin, lsn);
        this.exports.delete(`${volume.name}@${twin.name}`); // its size may have changed
      }
    });
    if (retained.length > 0) this.retained.set(group, (this.retained.get(group) ?? 0) + retained.length);
    const built = catalog.filter((twin) => twin.build).map((twin) => twin.name);
    return { built, kept: catalog.filter((twin) => !twin.build).map((twin) => twin.name), deleted, retained };
  }

  // Secondary: a region of a twin being built.
  async writeTwin(volume: Volume, snapshot: string, offset: number, data: Buffer | null, length: number): Promise<void> {
    const store = this.stores.get(volume.name);
    if (store === undefined || !store.has(snapshot)) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: `${volume.name}@${snapshot}`, what: "a region for a twin the catalog did not build" });
    const size = store.image(snapshot).size;
    if (offset >= size) return;
    const clipped = Math.min(length, size - offset);
    await store.writeTwin(snapshot, offset, data === null ? null : data.subarray(0, clipped), clipped);
  }

  // ---- The operator's operations (primary) ----

  // Logs the set at one point of the group's write order and performs it. check() runs with
  // the group quiet, before anything is logged: a refusal leaves no trace on any site.
  private async submit<T>(group: Group, set: OperationSet, check: () => void): Promise<{ results: T[]; report: OperationReport }> {
    const volumes = operationVolumes(set);
    for (const operation of set.operations) {
      if (operation.op !== "snapshot.create") continue;
      const target = this.host.groupVolume(group.name, operation.volumeId)!;
      if (!this.stores.has(target.volume.name)) await this.openStore(target.volume, target.settings);
    }
    // Flushed while writes still flow, the volumes have little left to sync inside the pause.
    await Promise.all(group.volumeList().filter((volume) => volumes.includes(volume.id)).map((volume) => volume.flush()));
    const outcome = await group.operate(encodeOperationSet(set), volumes.length === 1 ? volumes[0]! : 0, check, (lsn) => this.performSet(group.name, set, lsn));
    const links = this.host.linkReport(group.name).map((link) => ({ ...link, bytes: link.inBand ? outcome.recordBytes : 0 }));
    return { results: outcome.result as T[], report: { lsn: String(outcome.lsn), pauseMs: outcome.pauseMs, recordBytes: outcome.recordBytes, links } };
  }

  private existing(text: string): { image: ImageName & { snapshot: string }; entry: SnapshotVolume; store: SnapshotStore } {
    const image = parseImageName(text);
    if (image.snapshot === null) throw new OperatingError("REQUEST_INVALID", `"${text}" is a volume; name a snapshot as VOLUME@SNAPSHOT`);
    const entry = this.host.snapshotVolume(image.volume);
    const store = this.stores.get(image.volume);
    if (store === undefined || !store.has(image.snapshot)) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: text });
    return { image: image as ImageName & { snapshot: string }, entry, store };
  }

  private checkCreate(volume: string, name: string, from: string | null): void {
    checkSnapshotName(name);
    const store = this.stores.get(volume);
    if (store?.has(name)) throw new OperatingError("SNAPSHOT_EXISTS", { snapshot: `${volume}@${name}` });
    if (from !== null && !store?.has(from)) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: `${volume}@${from}` });
    if ((store?.snapshotCount ?? 0) >= snapshotsPerVolumeMax) throw new OperatingError("REQUEST_TOO_LARGE", { volume, snapshotsMax: snapshotsPerVolumeMax });
  }

  async create(request: { source: string; name: string; writable: boolean }): Promise<SnapshotInfo & OperationReport> {
    const source = parseImageName(request.source);
    const entry = this.host.snapshotVolume(source.volume);
    this.checkCreate(source.volume, request.name, source.snapshot);
    const set: OperationSet = { version: 1, order: "ordered", operations: [{ op: "snapshot.create", volumeId: entry.volume.id, snapshot: request.name, from: source.snapshot, writable: request.writable }] };
    const { results, report } = await this.submit<SnapshotInfo>(entry.group, set, () => this.checkCreate(source.volume, request.name, source.snapshot));
    this.logger.info({ snapshot: results[0]!.name, source: request.source, writable: request.writable, lsn: report.lsn, pauseMs: report.pauseMs }, "snapshot created");
    return { ...results[0]!, ...report };
  }

  // One snapshot of every volume of the group, all at one point of its write order.
  async createGroupSnapshot(groupName: string, name: string): Promise<{ snapshots: SnapshotInfo[] } & OperationReport> {
    const group = this.host.primaryGroup(groupName);
    const volumes = group.volumeList();
    if (volumes.length === 0) throw new OperatingError("REQUEST_INVALID", `group ${groupName} has no volumes`);
    const check = () => {
      for (const volume of volumes) this.checkCreate(volume.name, name, null);
    };
    check();
    const set: OperationSet = { version: 1, order: "unordered", operations: volumes.map((volume) => ({ op: "snapshot.create" as const, volumeId: volume.id, snapshot: name, from: null, writable: false })) };
    const { results, report } = await this.submit<SnapshotInfo>(group, set, check);
    this.logger.info({ group: groupName, snapshot: name, volumes: volumes.length, lsn: report.lsn, pauseMs: report.pauseMs }, "group snapshot created");
    return { snapshots: results, ...report };
  }

  list(volumeName?: string): SnapshotInfo[] {
    if (volumeName !== undefined) {
      if (!this.stores.has(volumeName)) this.host.snapshotVolume(volumeName); // VOLUME_NOT_FOUND
      return this.stores.get(volumeName)?.list().filter(notFrozen) ?? [];
    }
    return [...this.stores.values()].flatMap((store) => store.list().filter(notFrozen));
  }

  async delete(text: string, options: { recursive: boolean; force: boolean }): Promise<{ deleted: string[] } & OperationReport> {
    const { image, entry } = this.existing(text);
    const check = () => {
      const { store } = this.existing(text);
      const children = store.children(image.snapshot);
      if (children.length > 0 && !options.recursive) throw new OperatingError("SNAPSHOT_HAS_CHILDREN", { snapshot: text, children: children.map((child) => child.name).join(",") });
      for (const snapshot of [image.snapshot, ...(options.recursive ? this.descendants(store, image.snapshot) : [])]) {
        const connections = this.connections(image.volume, snapshot);
        if (connections > 0 && !options.force) throw new OperatingError("VOLUME_BUSY", `${image.volume}@${snapshot} has ${connections} NBD connection(s); disconnect them or use --force`);
      }
    };
    check();
    const set: OperationSet = { version: 1, order: "ordered", operations: [{ op: "snapshot.delete", volumeId: entry.volume.id, snapshot: image.snapshot, recursive: options.recursive }] };
    const { results, report } = await this.submit<string[]>(entry.group, set, check);
    this.logger.info({ deleted: results[0], lsn: report.lsn, pauseMs: report.pauseMs }, "snapshot deleted");
    return { deleted: results[0]!, ...report };
  }

  private descendants(store: SnapshotStore, snapshot: string): string[] {
    return store.children(snapshot).flatMap((child) => [child.name, ...this.descendants(store, child.name)]);
  }

  async refresh(text: string, fromVolume: boolean): Promise<SnapshotInfo & OperationReport> {
    const { image, entry } = this.existing(text);
    const check = () => {
      const { store } = this.existing(text);
      const parent = store.image(image.snapshot).parent;
      if (!fromVolume && parent !== null && this.descendants(store, image.snapshot).includes(parent)) throw new OperatingError("REQUEST_INVALID", `${text} cannot be refreshed from its own descendant`);
    };
    check();
    const set: OperationSet = { version: 1, order: "ordered", operations: [{ op: "snapshot.refresh", volumeId: entry.volume.id, snapshot: image.snapshot, fromVolume }] };
    const { results, report } = await this.submit<SnapshotInfo>(entry.group, set, check);
    this.logger.info({ snapshot: text, fromVolume, lsn: report.lsn, pauseMs: report.pauseMs }, "snapshot refreshed");
    return { ...results[0]!, ...report };
  }

  // The pause covers only metadata work: the differing chunks are copied in the background
  // afterwards (SnapshotStore.restore), while the volume already reads as the snapshot.
  async restore(text: string, into?: string): Promise<{ snapshot: string; volume: string } & RestoreResult & OperationReport> {
    const { image, entry } = this.existing(text);
    if (into !== undefined && into !== image.volume) throw new OperatingError("SNAPSHOT_CROSS_VOLUME", { snapshot: text, volume: into });
    const set: OperationSet = { version: 1, order: "ordered", operations: [{ op: "snapshot.restore", volumeId: entry.volume.id, snapshot: image.snapshot }] };
    const { results, report } = await this.submit<RestoreResult>(entry.group, set, () => void this.existing(text));
    this.logger.info({ snapshot: text, volume: image.volume, ...results[0], lsn: report.lsn, pauseMs: report.pauseMs }, "volume restored (the differing chunks are copied in the background)");
    return { snapshot: text, volume: image.volume, ...results[0]!, ...report };
  }

  // Makes image `to` equal to image `from` (both of one volume): to the volume, a restore;
  // to a writable snapshot, a sync of its differing chunks. Either way one operation record,
  // performed by every secondary on its own twins.
  async syncImages(from: string, to: string): Promise<{ from: string; to: string; bytesWritten: number; chunks: number } & OperationReport> {
    const source = parseImageName(from);
    const target = parseImageName(to);
    if (source.volume !== target.volume) throw new OperatingError("SNAPSHOT_CROSS_VOLUME", `${from} and ${to} belong to different volumes`);
    if (target.snapshot === null) {
      if (source.snapshot === null) throw new OperatingError("REQUEST_INVALID", "a volume is always equal to itself");
      const restored = await this.restore(from);
      return { from, to, bytesWritten: restored.bytesWritten, chunks: restored.chunks, lsn: restored.lsn, pauseMs: restored.pauseMs, recordBytes: restored.recordBytes, links: restored.links };
    }
    const { entry } = this.existing(to);
    const check = () => {
      const { store } = this.existing(to);
      if (!store.image(target.snapshot!).writable) throw new OperatingError("REQUEST_INVALID", `${to} is read-only: a sync writes into the volume or a writable snapshot`);
      if (source.snapshot !== null) this.existing(from);
    };
    check();
    const set: OperationSet = { version: 1, order: "ordered", operations: [{ op: "snapshot.sync", volumeId: entry.volume.id, snapshot: target.snapshot, from: source.snapshot }] };
    const { results, report } = await this.submit<{ bytesWritten: number; chunks: number }>(entry.group, set, check);
    this.logger.info({ from, to, ...results[0], lsn: report.lsn, pauseMs: report.pauseMs }, "snapshot synced");
    return { from, to, ...results[0]!, ...report };
  }

  diff(a: string, b: string): DiffResult & { a: string; b: string; chunkSize: number } {
    const first = parseImageName(a);
    const second = parseImageName(b);
    if (first.volume !== second.volume) throw new OperatingError("SNAPSHOT_CROSS_VOLUME", `${a} and ${b} belong to different volumes`);
    if (!this.stores.has(first.volume)) this.host.snapshotVolume(first.volume); // VOLUME_NOT_FOUND
    const store = this.stores.get(first.volume) ?? null;
    for (const image of [first, second]) {
      if (image.snapshot !== null && (store === null || !store.has(image.snapshot))) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: `${image.volume}@${image.snapshot}` });
    }
    if (store === null) return { a, b, chunkSize: 0, regions: [], totalBytes: 0, truncated: false }; // the volume against itself
    return { a, b, chunkSize: store.chunkSize, ...store.diff(first.snapshot, second.snapshot) };
  }

  // Before a volume shrinks (the caller has its group quiet).
  async beforeShrink(volumeName: string, size: number): Promise<void> {
    const store = this.stores.get(volumeName);
    if (store !== undefined) await store.exclusive(() => store.beforeShrink(size));
  }

  snapshotCount(volumeName: string): number {
    return this.stores.get(volumeName)?.snapshotCount ?? 0;
  }

  usage(volumeName: string): ReturnType<SnapshotStore["usage"]> | null {
    return this.stores.get(volumeName)?.usage() ?? null;
  }

  // The volume is being deleted: its store goes with it.
  async removeVolume(volume: Volume): Promise<void> {
    const store = this.stores.get(volume.name);
    if (store !== undefined) {
      for (const name of [...this.exports.keys()]) if (name.startsWith(`${volume.name}@`)) this.exports.delete(name);
      this.stores.delete(volume.name);
      await store.close();
    }
    this.readOnly.delete(volume.name);
    await fsp.rm(this.directory(volume), { recursive: true, force: true });
  }

  async close(): Promise<void> {
    this.stopping = true;
    for (const [name, store] of this.stores) {
      await store.close().catch((error: unknown) => this.logger.error({ volume: name, err: error }, "closing the snapshot store failed"));
    }
    this.stores.clear();
  }
}


