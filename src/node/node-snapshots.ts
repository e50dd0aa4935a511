// The node's snapshots: one snapshot store per volume of a primary group (opened when the
// volume has one, created by its first snapshot), their NBD exports `volume@snapshot`, and the
// operator's operations. Each operation runs at one point of the group's write order: the group
// is quiet (new changes wait, changes in flight finish), the store is exclusive (snapshot
// exports' I/O in flight finishes), the operation runs, everything resumes.
//
//   <dataDir>/snapshots/<volumeId>/store   the slots (preserved and written chunks)
//   <dataDir>/snapshots/<volumeId>/meta/   the metadata (LMDB)
//
// Until operations travel in the replication stream, the ones that change a volume's content
// (restore) are refused on a group with links: done locally they would leave the secondaries
// with an image the primary never had.

import { existsSync, promises as fsp } from "node:fs";
import { join } from "node:path";
import { OperatingError } from "../errors.js";
import type { BlockFileOpener } from "../io/block-file.js";
import type { Logger } from "../logger.js";
import type { Group } from "../group/group.js";
import { SnapshotStore, type DiffResult, type SnapshotInfo } from "../snapshot/snapshot-store.js";
import type { Volume } from "../volume/volume.js";
import { SnapshotExport } from "./snapshot-export.js";

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
  snapshotVolume(name: string): SnapshotVolume; // VOLUME_NOT_FOUND / ROLE_CONFLICT
  linkCount(group: string): number;
  // Resizes the volume while its group is already quiet (restore to a snapshot of another size).
  resizeQuiet(name: string, size: number): Promise<void>;
}

export interface ImageName {
  readonly volume: string;
  readonly snapshot: string | null;
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
  private readonly exports = new Map<string, SnapshotExport>(); // by volume@snapshot

  constructor(
    private readonly host: SnapshotHost,
    private readonly dataDir: string,
    private readonly files: BlockFileOpener,
    private readonly nowMs: () => number,
    private readonly logger: Logger,
  ) {}

  private directory(volume: Volume): string {
    return join(this.dataDir, "snapshots", String(volume.id));
  }

  // At start: a volume that has a store gets it back (before redo, which must preserve too).
  async openVolume(volume: Volume, settings: SnapshotSettings): Promise<SnapshotStore | null> {
    if (!existsSync(this.directory(volume))) return null;
    return this.openStore(volume, settings);
  }

  private async openStore(volume: Volume, settings: SnapshotSettings): Promise<SnapshotStore> {
    const directory = this.directory(volume);
    await fsp.mkdir(join(directory, "meta"), { recursive: true, mode: 0o700 });
    const file = await this.files.open(join(directory, "store"), { create: 0 });
    const store = await SnapshotStore.open(volume, file, join(directory, "meta"), { chunkSize: settings.chunkSize, storeSizeMax: settings.storeSize, nowMs: this.nowMs });
    this.stores.set(volume.name, store);
    return store;
  }

  store(volumeName: string): SnapshotStore | null {
    return this.stores.get(volumeName) ?? null;
  }

  // A start after a restore was cut short finishes it before anything is served.
  async finishInterruptedRestores(group: Group): Promise<void> {
    for (const volume of group.volumeList()) {
      const store = this.stores.get(volume.name);
      const snapshot = store?.interruptedRestore ?? null;
      if (store === undefined || snapshot === null) continue;
      if (!store.has(snapshot)) continue;
      this.logger.warn({ volume: volume.name, snapshot }, "a restore was interrupted; finishing it");
      try {
        await this.restore(`${volume.name}@${snapshot}`);
      } catch (error) {
        // the volume is served as it is; status shows the restore as interrupted until one succeeds
        this.logger.error({ volume: volume.name, snapshot, err: error }, "finishing the interrupted restore failed; run `snapshot restore` again");
      }
    }
  }

  // ---- Exports ----

  lookupExport(name: string): SnapshotExport | undefined {
    const existing = this.exports.get(name);
    if (existing !== undefined) return existing;
    const at = name.indexOf("@");
    if (at <= 0) return undefined;
    const store = this.stores.get(name.slice(0, at));
    const snapshot = name.slice(at + 1);
    if (store === undefined || !store.has(snapshot)) return undefined;
    const created = new SnapshotExport(store, name.slice(0, at), snapshot);
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

  // ---- Operations ----

  private target(name: ImageName): { entry: SnapshotVolume; store: SnapshotStore | null } {
    const entry = this.host.snapshotVolume(name.volume);
    return { entry, store: this.stores.get(name.volume) ?? null };
  }

  private existing(text: string): { image: ImageName & { snapshot: string }; entry: SnapshotVolume; store: SnapshotStore } {
    const image = parseImageName(text);
    if (image.snapshot === null) throw new OperatingError("REQUEST_INVALID", `"${text}" is a volume; name a snapshot as VOLUME@SNAPSHOT`);
    const { entry, store } = this.target(image);
    if (store === null || !store.has(image.snapshot)) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: text });
    return { image: image as ImageName & { snapshot: string }, entry, store };
  }

  // Runs an operation at one point of the group's write order; returns its pause.
  private async atOnePoint<T>(entry: SnapshotVolume, store: SnapshotStore, action: () => Promise<T>): Promise<{ result: T; pauseMs: number }> {
    return entry.group.quiesce(() => store.exclusive(action));
  }

  async create(request: { source: string; name: string; writable: boolean }): Promise<SnapshotInfo & { pauseMs: number }> {
    const source = parseImageName(request.source);
    const { entry } = this.target(source);
    let store = this.stores.get(source.volume) ?? null;
    if (source.snapshot !== null && (store === null || !store.has(source.snapshot))) throw new OperatingError("SNAPSHOT_NOT_FOUND", { snapshot: request.source });
    if (store?.has(request.name)) throw new OperatingError("SNAPSHOT_EXISTS", { snapshot: `${source.volume}@${request.name}` });
    store ??= await this.openStore(entry.volume, entry.settings);
    const opened = store;
    const { result, pauseMs } = await this.atOnePoint(entry, opened, async () => {
      // write-ahead: redo after a crash starts after this point, so it never re-preserves
      await entry.group.checkpoint();
      return opened.create({ name: request.name, from: source.snapshot, writable: request.writable, lsn: entry.group.log.headLsn });
    });
    this.logger.info({ snapshot: result.name, source: request.source, writable: request.writable, lsn: result.createdLsn, pauseMs }, "snapshot created");
    return { ...result, pauseMs };
  }

  list(volumeName?: string): SnapshotInfo[] {
    if (volumeName !== undefined) {
      this.host.snapshotVolume(volumeName);
      return this.stores.get(volumeName)?.list() ?? [];
    }
    return [...this.stores.values()].flatMap((store) => store.list());
  }

  async delete(text: string, options: { recursive: boolean; force: boolean }): Promise<{ deleted: string[]; pauseMs: number }> {
    const { image, entry, store } = this.existing(text);
    const doomed = [image.snapshot, ...(options.recursive ? this.descendants(store, image.snapshot) : [])];
    for (const snapshot of doomed) {
      const connections = this.connections(image.volume, snapshot);
      if (connections > 0 && !options.force) throw new OperatingError("VOLUME_BUSY", `${image.volume}@${snapshot} has ${connections} NBD connection(s); disconnect them or use --force`);
    }
    const { result, pauseMs } = await this.atOnePoint(entry, store, () => store.delete(image.snapshot, options.recursive));
    for (const snapshot of result) this.exports.delete(`${image.volume}@${snapshot}`);
    const deleted = result.map((snapshot) => `${image.volume}@${snapshot}`);
    this.logger.info({ deleted, pauseMs }, "snapshot deleted");
    return { deleted, pauseMs };
  }

  private descendants(store: SnapshotStore, snapshot: string): string[] {
    return store.children(snapshot).flatMap((child) => [child.name, ...this.descendants(store, child.name)]);
  }

  async refresh(text: string, fromVolume: boolean): Promise<SnapshotInfo & { pauseMs: number }> {
    const { image, entry, store } = this.existing(text);
    const { result, pauseMs } = await this.atOnePoint(entry, store, async () => {
      await entry.group.checkpoint();
      return store.refresh(image.snapshot, fromVolume);
    });
    this.exports.delete(text); // its size may have changed: the next connection sees the new one
    this.logger.info({ snapshot: text, fromVolume, pauseMs }, "snapshot refreshed");
    return { ...result, pauseMs };
  }

  async restore(text: string, into?: string): Promise<{ snapshot: string; volume: string; bytesWritten: number; chunks: number; pauseMs: number }> {
    const { image, entry, store } = this.existing(text);
    if (into !== undefined && into !== image.volume) throw new OperatingError("SNAPSHOT_CROSS_VOLUME", { snapshot: text, volume: into });
    const links = this.host.linkCount(entry.group.name);
    if (links > 0) {
      throw new OperatingError("NOT_SUPPORTED", `restore of ${image.volume}: group ${entry.group.name} has ${links} link(s); a restore cannot reach the secondaries in write order until operations travel in the replication stream`);
    }
    const { result, pauseMs } = await this.atOnePoint(entry, store, async () => {
      await entry.group.checkpoint(); // write-ahead: no redo of older records over the restored image
      return store.restore(image.snapshot, async (size) => {
        await store.beforeShrink(size);
        await this.host.resizeQuiet(image.volume, size);
      });
    });
    this.logger.info({ snapshot: text, volume: image.volume, ...result, pauseMs }, "volume restored");
    return { snapshot: text, volume: image.volume, ...result, pauseMs };
  }

  diff(a: string, b: string): DiffResult & { a: string; b: string; chunkSize: number } {
    const first = parseImageName(a);
    const second = parseImageName(b);
    if (first.volume !== second.volume) throw new OperatingError("SNAPSHOT_CROSS_VOLUME", `${a} and ${b} belong to different volumes`);
    const { store } = this.target(first);
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
    await fsp.rm(this.directory(volume), { recursive: true, force: true });
  }

  async close(): Promise<void> {
    for (const [name, store] of this.stores) {
      await store.close().catch((error: unknown) => this.logger.error({ volume: name, err: error }, "closing the snapshot store failed"));
    }
    this.stores.clear();
  }
}
