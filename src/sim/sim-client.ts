// The simulated users of the primary: writers (as NBD clients would: stamped writes and zeroes,
// some with FUA, never two in flight on one sector), a flusher (FLUSH), and an operator who
// creates, deletes and restores snapshots through the node's own snapshot API (NodeSnapshots:
// checks, then Group.operate). Each tells the model what it was told: acknowledged, durable.
// A request to an incarnation that crashes is never answered: the client gives up on it.

import { OperatingError } from "../errors.js";
import type { Random } from "./random.js";
import { sectorBytes, stampedData, type VolumeLayout } from "./sector-stamp.js";
import type { Cause, SimModel } from "./sim-model.js";
import type { PrimaryIncarnation, SimPrimary } from "./sim-primary.js";
import type { SimWorld } from "./sim-world.js";

export interface ClientSettings {
  readonly writers: number;
  readonly thinkMsMax: number;
  readonly sectorsMax: number; // one write's length at most
  readonly fuaProbability: number;
  readonly zeroProbability: number;
  readonly flushEveryMsMax: number;
  readonly operationEveryMsMax: number; // 0: no operations
  readonly restoreProbability: number;
}

interface Acked {
  readonly cause: Cause;
  readonly sequence: number;
}

const snapshotsPerVolumeMax = 4;

export class SimClient {
  private running = false;
  private readonly busy: Uint8Array;
  private nextStamp = 1;
  private ackSequence = 0;
  private readonly unflushed = new Map<number, Acked[]>(); // by volume id
  private nextSnapshot = 1;
  private tasks: Promise<void>[] = [];
  operationInFlight = false;
  readonly stats = { writes: 0, acked: 0, failed: 0, abandoned: 0, flushes: 0, operations: 0, operationsFailed: 0 };
  readonly errors = new Map<string, number>(); // error code → count, for the summary

  constructor(
    private readonly world: SimWorld,
    private readonly random: Random,
    private readonly settings: ClientSettings,
    private readonly layout: VolumeLayout,
    private readonly model: SimModel,
    private readonly primary: SimPrimary,
    private readonly scan: () => void,
    private readonly trace: (event: string) => void,
  ) {
    this.busy = new Uint8Array(layout.sectors);
  }

  start(): void {
    this.running = true;
    for (let writer = 0; writer < this.settings.writers; writer++) this.tasks.push(this.loop(this.settings.thinkMsMax, () => this.writeOnce()));
    this.tasks.push(this.loop(this.settings.flushEveryMsMax, () => this.flushOnce()));
    if (this.settings.operationEveryMsMax > 0) this.tasks.push(this.loop(this.settings.operationEveryMsMax, () => this.operateOnce()));
  }

  // Issues nothing more; resolves once every request it made was answered or abandoned.
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.tasks);
    this.tasks = [];
  }

  private async loop(pauseMsMax: number, once: () => Promise<void>): Promise<void> {
    while (this.running) {
      await this.world.delay(this.world.harness, this.random.below(pauseMsMax * 1000) / 1000);
      if (!this.running) return;
      const incarnation = this.primary.up;
      if (incarnation !== null) await once();
    }
  }

  // The request's outcome, or "abandoned" when the incarnation died first.
  private async answer<T>(incarnation: PrimaryIncarnation, request: Promise<T>): Promise<{ value: T } | { error: unknown } | "abandoned"> {
    const outcome = request.then((value) => ({ value }), (error: unknown) => ({ error }));
    return Promise.race([outcome, incarnation.owner.died.then(() => "abandoned" as const)]);
  }

  private countError(error: unknown): void {
    const code = error instanceof OperatingError ? error.code : (error as Error).message.slice(0, 40);
    this.errors.set(code, (this.errors.get(code) ?? 0) + 1);
  }

  private async writeOnce(): Promise<void> {
    const incarnation = this.primary.up!;
    const random = this.random;
    const volume = this.layout.volumes[random.below(this.layout.volumes.length)]!;
    const sectors = 1 + (random.chance(0.1) ? random.below(Math.min(volume.sectors, this.settings.sectorsMax * 4)) : random.below(this.settings.sectorsMax));
    const first = random.below(volume.sectors - sectors + 1);
    for (let index = 0; index < sectors; index++) if (this.busy[volume.firstSector + first + index] === 1) return;
    this.busy.fill(1, volume.firstSector + first, volume.firstSector + first + sectors);
    const stamp = this.nextStamp++;
    const zero = random.chance(this.settings.zeroProbability);
    const fua = random.chance(this.settings.fuaProbability);
    const offset = first * sectorBytes;
    const length = sectors * sectorBytes;
    const target = incarnation.volumes.find((candidate) => candidate.id === volume.id)!;
    const cause = zero ? this.model.zeroIssued(volume.id, offset, length, `zero#${stamp}`) : this.model.writeIssued(stamp, `write#${stamp}`);
    this.stats.writes += 1;
    const request = zero ? incarnation.group.zero(target, offset, length, random.chance(0.5), fua) : incarnation.group.write(target, offset, stampedData(stamp, volume.firstSector + first, sectors), fua);
    const outcome = await this.answer(incarnation, request);
    this.scan();
    if (outcome === "abandoned") this.stats.abandoned += 1;
    else if ("error" in outcome) {
      this.stats.failed += 1;
      this.countError(outcome.error);
    } else {
      this.stats.acked += 1;
      cause.acked = true;
      if (fua) cause.durable = true;
      else this.unflushedOf(volume.id).push({ cause, sequence: ++this.ackSequence });
    }
    if (zero) this.model.zeroFinished(volume.id, offset, length);
    this.busy.fill(0, volume.firstSector + first, volume.firstSector + first + sectors);
  }

  private unflushedOf(volumeId: number): Acked[] {
    let list = this.unflushed.get(volumeId);
    if (list === undefined) {
      list = [];
      this.unflushed.set(volumeId, list);
    }
    return list;
  }

  // FLUSH: every write acknowledged before it was issued is durable once it answers.
  private async flushOnce(): Promise<void> {
    const incarnation = this.primary.up!;
    const volume = incarnation.volumes[this.random.below(incarnation.volumes.length)]!;
    const sequence = this.ackSequence;
    const outcome = await this.answer(incarnation, incarnation.group.flush(volume));
    if (outcome === "abandoned" || "error" in outcome) return;
    this.stats.flushes += 1;
    const list = this.unflushedOf(volume.id);
    let kept = 0;
    for (const acked of list) {
      if (acked.sequence <= sequence) acked.cause.durable = true;
      else list[kept++] = acked;
    }
    list.length = kept;
  }

  // ---- The operator ----

  private async operateOnce(): Promise<void> {
    const incarnation = this.primary.up!;
    const random = this.random;
    const volume = this.layout.volumes[random.below(this.layout.volumes.length)]!;
    const snapshots = incarnation.snapshots;
    const existing = snapshots.list(volume.name).map((info) => info.snapshot).filter((name) => !name.startsWith("~"));
    const name = `s${this.nextSnapshot++}`;
    let label: string;
    let request: () => Promise<unknown>;
    if (existing.length > 0 && random.chance(this.settings.restoreProbability)) {
      const from = existing[random.below(existing.length)]!;
      label = `restore ${volume.name}@${from}`;
      request = () => snapshots.restore(`${volume.name}@${from}`);
    } else if (existing.length >= snapshotsPerVolumeMax || (existing.length > 0 && random.chance(0.3))) {
      const doomed = existing[random.below(existing.length)]!;
      const recursive = snapshots.list(volume.name).some((info) => info.parent === `${volume.name}@${doomed}`);
      label = `delete ${volume.name}@${doomed}${recursive ? " recursive" : ""}`;
      request = () => snapshots.delete(`${volume.name}@${doomed}`, { recursive, force: false });
    } else if (random.chance(0.15)) {
      label = `group snapshot ${name}`;
      request = () => snapshots.createGroupSnapshot(incarnation.group.name, name);
    } else {
      const from = existing.length > 0 && random.chance(0.3) ? existing[random.below(existing.length)]! : null;
      label = `create ${volume.name}@${name}${from === null ? "" : ` from ${from}`}`;
      request = () => snapshots.create({ source: from === null ? volume.name : `${volume.name}@${from}`, name, writable: false });
    }
    this.scan(); // the records before it are the model's already: the next one is this operation's
    const cause = this.model.operationIssued(label);
    this.operationInFlight = true;
    this.trace(`operator ${label}`);
    const outcome = await this.answer(incarnation, Promise.resolve().then(request));
    this.scan();
    this.model.operationFinished();
    this.operationInFlight = false;
    this.stats.operations += 1;
    if (outcome === "abandoned") return;
    if ("error" in outcome) {
      this.stats.operationsFailed += 1;
      this.countError(outcome.error);
      this.trace(`operator ${label}: ${outcome.error instanceof OperatingError ? outcome.error.code : "error"}`);
      return;
    }
    cause.acked = true;
    cause.durable = true; // an operation's record is durable before it is performed; a restore syncs the volume
  }
}
