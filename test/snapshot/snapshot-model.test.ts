// Model-based property test of the snapshot store (fast-check): random sequences of writes to
// the volume and to writable snapshots, creates (of the volume and of snapshots), deletes,
// refreshes, restores, syncs of a writable snapshot from another image, resizes and flushes run against the real store (simulated disks for
// the volume and the store file, LMDB for the metadata), and after every step every image
// reads exactly what a plain in-memory model holds.
//
// The crash variant cuts the power at random steps: every unsynced write of both simulated
// disks is kept, dropped or torn at sector boundaries, the store is reopened, and then
//   - every read-only snapshot still reads exactly its model (a snapshot never changes),
//   - every sector of the volume and of each writable snapshot holds either its content at
//     the last flush or something written to it since, never anything else,
// and the model adopts what survived.
//
// A restore leaves the differing chunks pending (SnapshotStore.restore: the volume reads as the
// snapshot at once, the chunks are copied afterwards). The manual variants leave the copy to
// explicit steps (a few chunks at a time, and a crash in the middle of a batch or of a write
// that restores a chunk first); the background variants run the store's own copier alongside
// every other step. Partial reads of the volume cross pending and restored chunks.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import fc from "fast-check";
import { applyChange } from "../../src/group/apply-change.js";
import { RecordKind } from "../../src/log/record.js";
import { Random } from "../../src/sim/random.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { SnapshotStore } from "../../src/snapshot/snapshot-store.js";
import { Volume } from "../../src/volume/volume.js";

const sector = 512;
const chunkSize = 4096;
const volumeSizeInitial = 8 * chunkSize;

type Step =
  | { kind: "write"; target: number; offset: number; sectors: number; fill: number }
  | { kind: "create"; from: number; writable: boolean }
  | { kind: "delete"; target: number; recursive: boolean }
  | { kind: "refresh"; target: number; fromVolume: boolean }
  | { kind: "restore"; target: number }
  | { kind: "sync"; from: number; target: number }
  | { kind: "resize"; chunks: number }
  | { kind: "flush" }
  | { kind: "crash"; seed: number }
  | { kind: "copy"; chunks: number }
  | { kind: "burst"; chunks: number[]; sector: number; fill: number; copy: number }
  | { kind: "read"; offset: number; sectors: number }
  | { kind: "copyCrash"; chunks: number; turns: number; seed: number }
  | { kind: "writeCrash"; offset: number; sectors: number; fill: number; turns: number; seed: number };

const stepArbitrary = (crashes: boolean): fc.Arbitrary<Step> => {
  const write = (targets: fc.Arbitrary<number>) =>
    fc.record({ kind: fc.constant("write" as const), target: targets, offset: fc.nat((volumeSizeInitial / sector) * 2), sectors: fc.integer({ min: 1, max: 20 }), fill: fc.integer({ min: 1, max: 255 }) });
  const steps: fc.WeightedArbitrary<Step>[] = [
    { arbitrary: write(fc.nat(8)), weight: 3 },
    { arbitrary: write(fc.constant(0)), weight: 3 },
    { arbitrary: fc.record({ kind: fc.constant("create" as const), from: fc.nat(8), writable: fc.boolean() }), weight: 2 },
    { arbitrary: fc.record({ kind: fc.constant("delete" as const), target: fc.integer({ min: 1, max: 8 }), recursive: fc.boolean() }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant("refresh" as const), target: fc.integer({ min: 1, max: 8 }), fromVolume: fc.boolean() }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant("restore" as const), target: fc.integer({ min: 1, max: 8 }) }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant("sync" as const), from: fc.nat(8), target: fc.integer({ min: 1, max: 8 }) }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant("resize" as const), chunks: fc.integer({ min: 4, max: 12 }) }), weight: 1 },
    { arbitrary: fc.constant({ kind: "flush" as const }), weight: 1 },
  ];
  steps.push({ arbitrary: fc.record({ kind: fc.constant("copy" as const), chunks: fc.integer({ min: 1, max: 4 }) }), weight: 2 });
  // writes to distinct chunks at once, with a copier batch alongside (their commits interleave)
  steps.push({ arbitrary: fc.record({ kind: fc.constant("burst" as const), chunks: fc.uniqueArray(fc.nat(11), { minLength: 2, maxLength: 6 }), sector: fc.nat(chunkSize / sector - 1), fill: fc.integer({ min: 1, max: 255 }), copy: fc.integer({ min: 0, max: 8 }) }), weight: 2 });
  steps.push({ arbitrary: fc.record({ kind: fc.constant("read" as const), offset: fc.nat((volumeSizeInitial / sector) * 2), sectors: fc.integer({ min: 1, max: 40 }) }), weight: 2 });
  // restores (and snapshots of the volume to restore from) often enough to leave chunks pending
  steps.push({ arbitrary: fc.record({ kind: fc.constant("create" as const), from: fc.constant(0), writable: fc.boolean() }), weight: 2 });
  steps.push({ arbitrary: fc.record({ kind: fc.constant("restore" as const), target: fc.integer({ min: 1, max: 8 }) }), weight: 3 });
  if (crashes) {
    steps.push({ arbitrary: fc.record({ kind: fc.constant("crash" as const), seed: fc.nat() }), weight: 2 });
    steps.push({ arbitrary: fc.record({ kind: fc.constant("copyCrash" as const), chunks: fc.integer({ min: 1, max: 6 }), turns: fc.nat(12), seed: fc.nat() }), weight: 1 });
    steps.push({ arbitrary: fc.record({ kind: fc.constant("writeCrash" as const), offset: fc.nat((volumeSizeInitial / sector) * 2), sectors: fc.integer({ min: 1, max: 20 }), fill: fc.integer({ min: 1, max: 255 }), turns: fc.nat(12), seed: fc.nat() }), weight: 1 });
  }
  return fc.oneof(...steps);
};

interface ModelImage {
  name: string;
  parent: string | null;
  writable: boolean;
  content: Buffer;
  // per sector: the values it may hold after a crash (content at the last flush, and since)
  allowed: Set<number>[] | null;
}

class Harness {
  readonly volumeDisk = new SimDisk("volume", volumeSizeInitial);
  readonly storeDisk = new SimDisk("store", 0);
  readonly dir = mkdtempSync(join(tmpdir(), "lockstep-snapshot-model-"));
  volume!: Volume;
  store!: SnapshotStore;
  volumeModel: ModelImage = { name: "", parent: null, writable: true, content: Buffer.alloc(volumeSizeInitial), allowed: null };
  readonly snapshots = new Map<string, ModelImage>();
  private nextName = 1;
  private lsn = 1n;

  // background: the store's own copier restores pending chunks alongside the steps
  constructor(private readonly background: boolean) {}

  private options() {
    return { chunkSize, storeSizeMax: 1024 * chunkSize, nowMs: () => 0, restoreInBackground: this.background };
  }

  // Operations run as the node runs them: exclusive (the copier waits between batches).
  private exclusive<T>(action: () => Promise<T>): Promise<T> {
    return this.store.exclusive(action);
  }

  nextLsn(): bigint {
    this.lsn += 1n;
    return this.lsn;
  }

  async open(): Promise<void> {
    this.volume = new Volume(1, "vol", this.volumeDisk, this.volumeModel.content.length, () => 0);
    this.store = await SnapshotStore.open(this.volume, this.storeDisk, join(this.dir, "meta"), this.options());
  }

  async close(): Promise<void> {
    await this.store.close();
    rmSync(this.dir, { recursive: true, force: true });
  }

  // target 0: the volume; n: the nth snapshot (by creation), modulo how many exist
  pick(target: number): ModelImage | null {
    const images = [...this.snapshots.values()];
    if (target === 0) return this.volumeModel;
    if (images.length === 0) return null;
    return images[(target - 1) % images.length]!;
  }

  async read(image: ModelImage): Promise<Buffer> {
    const target = Buffer.alloc(image.content.length);
    if (image === this.volumeModel) await this.volume.read(target, 0);
    else await this.store.read(image.name, 0, target);
    return target;
  }

  async check(label: string): Promise<void> {
    for (const image of [this.volumeModel, ...this.snapshots.values()]) {
      const actual = await this.read(image);
      assert.ok(actual.equals(image.content), `${label}: ${image.name || "the volume"} differs from the model`);
    }
  }

  private noteWrite(image: ModelImage, offset: number, length: number, fill: number): void {
    if (image.allowed === null) return;
    for (let at = offset; at < offset + length; at += sector) image.allowed[at / sector]?.add(fill);
  }

  markDurable(): void {
    for (const image of [this.volumeModel, ...this.snapshots.values()]) image.allowed = this.freshAllowed(image);
  }

  freshAllowed(image: ModelImage): Set<number>[] {
    const allowed: Set<number>[] = [];
    for (let at = 0; at < image.content.length; at += sector) allowed.push(new Set([image.content[at]!]));
    return allowed;
  }

  async step(step: Step): Promise<void> {
    switch (step.kind) {
      case "write": {
        const image = this.pick(step.target);
        if (image === null) return;
        const size = image.content.length;
        const offset = (step.offset * sector) % size;
        const length = Math.min(step.sectors * sector, size - offset);
        const data = Buffer.alloc(length, step.fill);
        if (!image.writable) {
          await assert.rejects(this.store.write(image.name, offset, data, length, false), { code: "READ_ONLY" });
          return;
        }
        if (image === this.volumeModel) await applyChange(this.volume, RecordKind.write, 0, offset, length, data, false);
        else await this.store.write(image.name, offset, data, length, false);
        data.copy(image.content, offset);
        this.noteWrite(image, offset, length, step.fill);
        return;
      }
      case "create": {
        const source = this.pick(step.from);
        if (source === null || this.snapshots.size >= 8) return;
        const name = `s${this.nextName++}`;
        await this.exclusive(() => this.store.create({ name, from: source === this.volumeModel ? null : source.name, writable: step.writable, lsn: this.nextLsn() }));
        this.snapshots.set(name, { name, parent: source === this.volumeModel ? null : source.name, writable: step.writable, content: Buffer.from(source.content), allowed: null });
        this.markDurable(); // create syncs the volume and the store
        return;
      }
      case "delete": {
        const image = this.pick(step.target);
        if (image === null || image === this.volumeModel) return;
        const hasChildren = [...this.snapshots.values()].some((other) => other.parent === image.name);
        if (hasChildren && !step.recursive) {
          await assert.rejects(this.exclusive(() => this.store.delete(image.name, false, this.nextLsn())), { code: "SNAPSHOT_HAS_CHILDREN" });
          return;
        }
        const deleted = await this.exclusive(() => this.store.delete(image.name, step.recursive, this.nextLsn()));
        const expected = this.descendants(image.name);
        assert.deepEqual(new Set(deleted), new Set(expected));
        for (const name of expected) this.snapshots.delete(name);
        return;
      }
      case "refresh": {
        const image = this.pick(step.target);
        if (image === null || image === this.volumeModel) return;
        const source = step.fromVolume || image.parent === null ? this.volumeModel : this.snapshots.get(image.parent)!;
        if (source !== this.volumeModel && this.descendants(image.name).includes(source.name)) return;
        await this.exclusive(() => this.store.refresh(image.name, step.fromVolume, this.nextLsn()));
        image.content = Buffer.from(source.content);
        if (step.fromVolume) image.parent = null;
        this.markDurable();
        return;
      }
      case "restore": {
        const image = this.pick(step.target);
        if (image === null || image === this.volumeModel) return;
        await this.exclusive(() =>
          this.store.restore(image.name, this.nextLsn(), async (size) => {
            await this.store.beforeShrink(size);
            await this.volume.resize(size);
          }),
        );
        this.volumeModel.content = Buffer.from(image.content);
        this.markDurable();
        return;
      }
      case "sync": {
        const source = this.pick(step.from);
        const target = this.pick(step.target);
        if (source === null || target === null || target === this.volumeModel || source === target) return;
        if (!target.writable) {
          await assert.rejects(this.exclusive(() => this.store.sync(source === this.volumeModel ? null : source.name, target.name, this.nextLsn())), { code: "REQUEST_INVALID" });
          return;
        }
        await this.exclusive(() => this.store.sync(source === this.volumeModel ? null : source.name, target.name, this.nextLsn()));
        target.content = Buffer.from(source.content);
        for (const image of this.snapshots.values()) image.allowed = this.freshAllowed(image); // the store was synced (the volume was not)
        return;
      }
      case "resize": {
        const size = step.chunks * chunkSize + (step.chunks % 3) * sector;
        await this.exclusive(async () => {
          await this.store.beforeShrink(size);
          await this.volume.resize(size);
        });
        const resized = Buffer.alloc(size);
        this.volumeModel.content.copy(resized, 0, 0, Math.min(size, this.volumeModel.content.length));
        const allowed = this.volumeModel.allowed ?? this.freshAllowed(this.volumeModel);
        this.volumeModel.content = resized;
        // the new size is durable at once (simulated disks journal it); unsynced data is not
        this.volumeModel.allowed = Array.from({ length: size / sector }, (_, index) => allowed[index] ?? new Set([0]));
        return;
      }
      case "flush":
        await Promise.all([this.volume.flush(), this.store.flush()]);
        this.markDurable();
        return;
      case "crash":
        await this.crash(step.seed, null);
        return;
      case "copy":
        await this.store.copyRestoreBatch(step.chunks);
        return;
      case "burst": {
        const size = this.volumeModel.content.length;
        const writes = step.chunks.map((chunk, index) => ({ offset: chunk * chunkSize + step.sector * sector, fill: ((step.fill + index) % 255) + 1 })).filter((write) => write.offset < size);
        await Promise.all([
          ...writes.map((write) => applyChange(this.volume, RecordKind.write, 0, write.offset, sector, Buffer.alloc(sector, write.fill), false)),
          step.copy > 0 ? this.store.copyRestoreBatch(step.copy) : Promise.resolve(0),
        ]);
        for (const write of writes) {
          this.volumeModel.content.fill(write.fill, write.offset, write.offset + sector);
          this.noteWrite(this.volumeModel, write.offset, sector, write.fill);
        }
        return;
      }
      case "read": {
        const size = this.volumeModel.content.length;
        const offset = (step.offset * sector) % size;
        const length = Math.min(step.sectors * sector, size - offset);
        const actual = Buffer.alloc(length);
        await this.volume.read(actual, offset);
        assert.ok(actual.equals(this.volumeModel.content.subarray(offset, offset + length)), `a read of the volume at ${offset}+${length} differs from the model`);
        return;
      }
      case "copyCrash": {
        // a batch of the copier cut by the power after a few turns of the event loop
        const batch = this.store.copyRestoreBatch(step.chunks).catch(() => undefined);
        await this.turns(step.turns);
        await this.crash(step.seed, batch);
        return;
      }
      case "writeCrash": {
        // a write to the volume (restoring pending chunks first) cut by the power
        const size = this.volumeModel.content.length;
        const offset = (step.offset * sector) % size;
        const length = Math.min(step.sectors * sector, size - offset);
        this.volumeModel.allowed ??= this.freshAllowed(this.volumeModel);
        this.noteWrite(this.volumeModel, offset, length, step.fill);
        const write = applyChange(this.volume, RecordKind.write, 0, offset, length, Buffer.alloc(length, step.fill), false).catch(() => undefined);
        await this.turns(step.turns);
        await this.crash(step.seed, write);
        return;
      }
    }
  }

  private async turns(count: number): Promise<void> {
    for (let turn = 0; turn < count; turn += 1) await new Promise((resolve) => setImmediate(resolve));
  }

  // Copies what a restore left pending; afterwards the store reports no restore.
  async finish(): Promise<void> {
    await this.exclusive(() => this.store.completeRestore());
    assert.equal(this.store.usage().restore, null, "a completed restore is no longer reported");
  }

  private descendants(name: string): string[] {
    const found = [name];
    for (const other of this.snapshots.values()) if (other.parent === name) found.push(...this.descendants(other.name));
    return found;
  }

  // inflight: I/O the crash cuts (it fails on the closed disks, or its last real step, an LMDB
  // commit, lands: as after a kill -9, what is committed in the metadata is committed)
  private async crash(seed: number, inflight: Promise<unknown> | null): Promise<void> {
    const random = new Random(seed);
    const volumeSize = this.volume.size;
    this.volumeDisk.crash(random);
    this.storeDisk.crash(random);
    this.volumeDisk.closed = true;
    this.storeDisk.closed = true;
    await inflight;
    await this.store.close().catch(() => undefined);
    this.storeDisk.closed = false;
    this.volumeDisk.closed = false;
    this.volume = new Volume(1, "vol", this.volumeDisk, volumeSize, () => 0);
    this.store = await SnapshotStore.open(this.volume, this.storeDisk, join(this.dir, "meta"), this.options());
    for (const image of [this.volumeModel, ...this.snapshots.values()]) {
      const actual = await this.read(image);
      if (!image.writable) {
        assert.ok(actual.equals(image.content), `after a crash, snapshot ${image.name} changed`);
        continue;
      }
      const allowed = image.allowed ?? this.freshAllowed(image);
      for (let at = 0; at < actual.length; at += sector) {
        const value = actual[at]!;
        assert.ok(actual.subarray(at, at + sector).every((byte) => byte === value), `after a crash, ${image.name || "the volume"} sector ${at / sector} is torn inside`);
        assert.ok(allowed[at / sector]!.has(value) || value === image.content[at], `after a crash, ${image.name || "the volume"} sector ${at / sector} holds ${value}, allowed ${[...allowed[at / sector]!]}`);
      }
      image.content = actual;
    }
    this.markDurable();
  }
}

async function run(steps: Step[], background: boolean): Promise<void> {
  const harness = new Harness(background);
  await harness.open();
  harness.markDurable();
  try {
    for (const [index, step] of steps.entries()) {
      await harness.step(step);
      await harness.check(`after step ${index} (${JSON.stringify(step)})`);
    }
    await harness.finish();
    await harness.check("after the restore completed");
  } finally {
    await harness.close();
  }
}

describe("snapshot store: model-based", () => {
  it("every image equals the model after every step", async () => {
    await fc.assert(fc.asyncProperty(fc.array(stepArbitrary(false), { minLength: 1, maxLength: 60, size: "max" }), (steps) => run(steps, false)), { numRuns: 100 });
  });

  it("with power cuts at random steps, snapshots never change and nothing unflushed turns into garbage", async () => {
    await fc.assert(fc.asyncProperty(fc.array(stepArbitrary(true), { minLength: 1, maxLength: 60, size: "max" }), (steps) => run(steps, false)), { numRuns: 250 });
  });

  it("with the background copier restoring alongside every step", async () => {
    await fc.assert(fc.asyncProperty(fc.array(stepArbitrary(false), { minLength: 1, maxLength: 60, size: "max" }), (steps) => run(steps, true)), { numRuns: 100 });
  });

  it("with the background copier and power cuts", async () => {
    await fc.assert(fc.asyncProperty(fc.array(stepArbitrary(true), { minLength: 1, maxLength: 60, size: "max" }), (steps) => run(steps, true)), { numRuns: 200 });
  });
});
