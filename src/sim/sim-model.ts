// The model the simulator checks the nodes against, built from what the primary's log says
// (each record as appended: sim-primary.ts reads its ship cache) and what the client was told.
//
// The history tree: one node per record ever appended by any incarnation of the primary, keyed
// by (LSN, checksum), the root being (0, 0). A crash of the primary may lose the tail of its
// log; its next records then chain from the last one that survived, so the history forks. At
// each restart a *rebase* node with the same key stands for the recovered image (in
// activity-map mode the image, not the log, is the truth: it may hold writes whose records were
// lost). A node knows the group's image (one stamp per sector: sector-stamp.ts) and its
// snapshots after the record; a secondary is checked against the node of its applied LSN.
//
// The primary's lineage per sector: the stamps its records put there, in LSN order since the
// last restart, each with what the client was told of it (acknowledged, durable). A sector must
// hold the newest acknowledged stamp or a newer one; after a crash, the newest durable one or a
// newer one.

import { assert } from "../assert.js";
import { decodeOperationSet, isVolumeOperation, type OperationSet } from "../group/operation.js";
import { isOperationKind, isSnapshotChangeKind, type LogRecord, RecordKind } from "../log/record.js";
import { sectorBytes, stampAt, type VolumeLayout } from "./sector-stamp.js";

export interface Cause {
  acked: boolean;
  durable: boolean;
  readonly label: string;
}

export interface SnapshotModel {
  readonly volumeId: number;
  readonly name: string;
  readonly parent: string | null; // the snapshot it was taken of; null: the volume
  readonly stamps: Int32Array; // the volume's sectors, as the snapshot holds them
  readonly createdLsn: bigint;
}

// Keyed by `${volumeId}@${name}`.
export type SnapshotSet = ReadonlyMap<string, SnapshotModel>;

export interface HistoryNode {
  readonly key: string;
  readonly lsn: bigint;
  readonly checksum: number;
  readonly parent: HistoryNode | null;
  readonly depth: number;
  readonly sectors: Int32Array | null; // global sectors the record changed …
  readonly stamps: Int32Array | null; // … to these stamps
  readonly base: Int32Array | null; // a whole image (the root, a rebase)
  readonly snapshots: SnapshotSet;
  readonly what: string;
  cache: Int32Array | null;
}

interface Entry {
  readonly lsn: bigint;
  readonly stamp: number;
  readonly cause: Cause;
}

const settled: Cause = { acked: true, durable: true, label: "base" };
const cacheEvery = 16;

export function snapshotKey(volumeId: number, name: string): string {
  return `${volumeId}@${name}`;
}

function nodeKey(lsn: bigint, checksum: number): string {
  return `${lsn}:${checksum}`;
}

export class SimModel {
  private readonly nodes = new Map<string, HistoryNode[]>();
  private entries: Entry[][];
  private headNode: HistoryNode;
  private readonly writes = new Map<number, Cause>();
  private readonly zeroes = new Map<string, Cause>();
  private operation: Cause | null = null; // the operator's operation in flight, not yet logged
  records = 0;

  constructor(
    readonly layout: VolumeLayout,
    private readonly logId: bigint,
  ) {
    const root: HistoryNode = { key: nodeKey(0n, 0), lsn: 0n, checksum: 0, parent: null, depth: 0, sectors: null, stamps: null, base: new Int32Array(layout.sectors), snapshots: new Map(), what: "root", cache: null };
    this.nodes.set(root.key, [root]);
    this.headNode = root;
    this.entries = Array.from({ length: layout.sectors }, () => [{ lsn: 0n, stamp: 0, cause: settled }]);
  }

  get head(): HistoryNode {
    return this.headNode;
  }

  // ---- What the client and the operator were told ----

  writeIssued(stamp: number, label: string): Cause {
    const cause: Cause = { acked: false, durable: false, label };
    this.writes.set(stamp, cause);
    return cause;
  }

  zeroIssued(volumeId: number, offset: number, length: number, label: string): Cause {
    const cause: Cause = { acked: false, durable: false, label };
    this.zeroes.set(`${volumeId}:${offset}:${length}`, cause);
    return cause;
  }

  zeroFinished(volumeId: number, offset: number, length: number): void {
    this.zeroes.delete(`${volumeId}:${offset}:${length}`);
  }

  operationIssued(label: string): Cause {
    const cause: Cause = { acked: false, durable: false, label };
    this.operation = cause;
    return cause;
  }

  // The operation was answered: if its record was never logged, no record may claim it.
  operationFinished(): void {
    this.operation = null;
  }

  // ---- The primary's records ----

  // One record as the primary appended it, in LSN order; a violation, or null.
  observe(record: LogRecord): string | null {
    const parent = this.headNode;
    if (record.lsn !== parent.lsn + 1n || record.previousChecksum !== parent.checksum) {
      return `log: record ${record.lsn} (previous ${record.previousChecksum}) does not continue ${parent.lsn} (checksum ${parent.checksum})`;
    }
    if (record.generation !== 1n || record.logId !== this.logId) return `log: record ${record.lsn} has generation ${record.generation}, logId ${record.logId}: a second writer`;
    let change: { sectors: Int32Array; stamps: Int32Array; cause: Cause } | null = null;
    let snapshots = parent.snapshots;
    let what: string;
    if (record.kind === RecordKind.write || record.kind === RecordKind.zero || record.kind === RecordKind.trim) {
      const described = this.dataChange(record);
      if (typeof described === "string") return described;
      change = described;
      what = `${record.kind === RecordKind.write ? "write" : "zero"} ${described.cause.label}`;
    } else if (isOperationKind(record.kind)) {
      const set = decodeOperationSet(record.payload, record.lsn);
      const cause = this.operation ?? { acked: false, durable: false, label: `operation ${record.lsn}` };
      this.operation = null;
      const performed = this.performOperations(set, parent, record.lsn);
      if (typeof performed === "string") return `log: operation ${record.lsn}: ${performed}`;
      snapshots = performed.snapshots;
      change = performed.sectors === null ? null : { sectors: performed.sectors, stamps: performed.stamps!, cause };
      what = set.operations.map((operation) => `${operation.op} ${operation.volumeId}${"snapshot" in operation ? `@${operation.snapshot}` : ""}`).join(", ");
    } else if (isSnapshotChangeKind(record.kind)) {
      return `log: record ${record.lsn}: a snapshot change, which the simulated client never makes`;
    } else {
      return `log: record ${record.lsn} of unknown kind ${record.kind}`;
    }
    const node: HistoryNode = {
      key: nodeKey(record.lsn, record.checksum), lsn: record.lsn, checksum: record.checksum, parent, depth: parent.depth + 1,
      sectors: change?.sectors ?? null, stamps: change?.stamps ?? null, base: null, snapshots, what, cache: null,
    };
    this.add(node);
    if (change !== null) for (let index = 0; index < change.sectors.length; index++) this.entries[change.sectors[index]!]!.push({ lsn: record.lsn, stamp: change.stamps[index]!, cause: change.cause });
    this.records += 1;
    return null;
  }

  private add(node: HistoryNode): void {
    const list = this.nodes.get(node.key);
    if (list === undefined) this.nodes.set(node.key, [node]);
    else list.push(node);
    this.headNode = node;
  }

  private dataChange(record: LogRecord): { sectors: Int32Array; stamps: Int32Array; cause: Cause } | string {
    const volume = this.layout.volumes.find((candidate) => candidate.id === record.volumeId);
    if (volume === undefined || record.offset % sectorBytes !== 0 || record.length % sectorBytes !== 0 || record.offset + record.length > volume.size) {
      return `log: record ${record.lsn} names volume ${record.volumeId} range ${record.offset}+${record.length}, which the client never wrote`;
    }
    const count = record.length / sectorBytes;
    const first = volume.firstSector + record.offset / sectorBytes;
    const sectors = Int32Array.from({ length: count }, (_, index) => first + index);
    const stamps = new Int32Array(count);
    if (record.kind !== RecordKind.write) {
      const cause = this.zeroes.get(`${record.volumeId}:${record.offset}:${record.length}`) ?? { acked: false, durable: false, label: `zero ${record.lsn}` };
      return { sectors, stamps, cause };
    }
    const stamp = record.payload.readUInt32LE(0);
    for (let index = 0; index < count; index++) {
      stamps[index] = stampAt(record.payload, index * sectorBytes, first + index);
      if (stamps[index] !== stamp) return `log: record ${record.lsn} carries data no client write had (sector ${index})`;
    }
    const cause = this.writes.get(stamp);
    if (cause === undefined) return `log: record ${record.lsn} carries write ${stamp}, which the client never issued`;
    return { sectors, stamps, cause };
  }

  // An operation set at `lsn`, after `parent`: the snapshots after it, and the sectors a
  // restore changes.
  private performOperations(set: OperationSet, parent: HistoryNode, lsn: bigint): { snapshots: SnapshotSet; sectors: Int32Array | null; stamps: Int32Array | null } | string {
    const before = parent.snapshots;
    const snapshots = new Map(before);
    const changed = new Map<number, number>();
    let image: Int32Array | null = null;
    for (const operation of set.operations) {
      if (isVolumeOperation(operation)) return `${operation.op}: the simulated volumes never change`;
      const volume = this.layout.volume(operation.volumeId);
      const key = snapshotKey(operation.volumeId, operation.snapshot);
      // an unordered set acts at one point: every operation sees the state before the set
      const source = set.order === "unordered" ? before : snapshots;
      switch (operation.op) {
        case "snapshot.create": {
          if (source.has(key)) return `${key} exists`;
          let stamps: Int32Array;
          if (operation.from === null) {
            image ??= this.imageAt(parent);
            stamps = image.slice(volume.firstSector, volume.firstSector + volume.sectors);
          } else {
            const from = source.get(snapshotKey(operation.volumeId, operation.from));
            if (from === undefined) return `${operation.from} does not exist`;
            stamps = from.stamps;
          }
          snapshots.set(key, { volumeId: operation.volumeId, name: operation.snapshot, parent: operation.from, stamps, createdLsn: lsn });
          break;
        }
        case "snapshot.delete": {
          if (!source.has(key)) return `${key} does not exist`;
          const doomed = [operation.snapshot];
          if (operation.recursive) for (let index = 0; index < doomed.length; index++) for (const other of snapshots.values()) if (other.volumeId === operation.volumeId && other.parent === doomed[index]) doomed.push(other.name);
          for (const name of doomed) snapshots.delete(snapshotKey(operation.volumeId, name));
          break;
        }
        case "snapshot.restore": {
          const from = source.get(key);
          if (from === undefined) return `${key} does not exist`;
          for (let index = 0; index < volume.sectors; index++) changed.set(volume.firstSector + index, from.stamps[index]!);
          break;
        }
        default:
          return `${operation.op} is not one the simulated operator issues`;
      }
    }
    if (changed.size === 0) return { snapshots, sectors: null, stamps: null };
    return { snapshots, sectors: Int32Array.from(changed.keys()), stamps: Int32Array.from(changed.values()) };
  }

  // ---- Images ----

  imageAt(node: HistoryNode): Int32Array {
    const chain: HistoryNode[] = [];
    let at = node;
    while (at.cache === null && at.base === null) {
      chain.push(at);
      at = at.parent!;
    }
    const image = Int32Array.from(at.cache ?? at.base!);
    for (let index = chain.length - 1; index >= 0; index--) {
      const step = chain[index]!;
      if (step.sectors !== null) for (let sector = 0; sector < step.sectors.length; sector++) image[step.sectors[sector]!] = step.stamps![sector]!;
      if (step.depth % cacheEvery === 0) step.cache = Int32Array.from(image);
    }
    return image;
  }

  // How a sector came to hold what it holds at `node`: the last few records that changed it.
  sectorStory(node: HistoryNode, sector: number, count = 4): string {
    const steps: string[] = [];
    for (let at: HistoryNode | null = node; at !== null && steps.length < count; at = at.parent) {
      if (at.base !== null) {
        steps.push(`${at.what} at ${at.lsn}: ${at.base[sector]}`);
        break;
      }
      const index = at.sectors?.indexOf(sector) ?? -1;
      if (index >= 0) steps.push(`${at.what} at ${at.lsn}: ${at.stamps![index]}`);
    }
    return steps.join(" ← ");
  }

  nodesAt(lsn: bigint, checksum: number): readonly HistoryNode[] {
    return this.nodes.get(nodeKey(lsn, checksum)) ?? [];
  }

  // The nodes `steps` records before the node of (lsn, checksum): where a secondary whose log
  // head is there stood when it had applied `steps` fewer records.
  ancestorsOf(lsn: bigint, checksum: number, steps: bigint): readonly HistoryNode[] {
    let at: HistoryNode | null | undefined = this.nodesAt(lsn, checksum)[0];
    for (let step = 0n; step < steps && at !== undefined && at !== null; step++) at = at.parent;
    if (at === undefined || at === null) return [];
    return this.nodes.get(at.key) ?? [];
  }

  // ---- The primary's sectors ----

  // Each sector holds a stamp allowed by what the client was told (level "acked": reads see
  // every acknowledged write; "durable": after a crash, every durable one). A violation, or null.
  checkPrimary(actual: Int32Array, level: "acked" | "durable"): string | null {
    for (let sector = 0; sector < this.layout.sectors; sector++) {
      const entries = this.entries[sector]!;
      let from = 0;
      for (let index = entries.length - 1; index > 0; index--) {
        const cause = entries[index]!.cause;
        if (level === "acked" ? cause.acked : cause.durable) {
          from = index;
          break;
        }
      }
      const stamp = actual[sector]!;
      let allowed = false;
      for (let index = from; index < entries.length && !allowed; index++) allowed = entries[index]!.stamp === stamp;
      if (!allowed) {
        const expected = entries.slice(from).map((entry) => `${entry.stamp}@${entry.lsn}${entry.cause.durable ? "d" : entry.cause.acked ? "a" : ""}`).join(" ");
        return `${this.describeSector(sector)} holds ${stamp === -1 ? "garbage" : `stamp ${stamp}`}; allowed (${level}): ${expected}`;
      }
    }
    return null;
  }

  // Entries older than the newest durable one are never allowed again.
  trim(): void {
    for (const entries of this.entries) {
      let last = 0;
      for (let index = entries.length - 1; index > 0; index--) {
        if (entries[index]!.cause.durable) {
          last = index;
          break;
        }
      }
      if (last > 0) entries.splice(0, last);
    }
  }

  describeSector(sector: number): string {
    const volume = this.layout.volumes.find((candidate) => sector >= candidate.firstSector && sector < candidate.firstSector + candidate.sectors)!;
    return `${volume.name} sector ${sector - volume.firstSector} (byte ${(sector - volume.firstSector) * sectorBytes})`;
  }

  // The primary restarted with its log's head at (lsn, checksum) and this image: the recovered
  // image is checked against what was durable, and becomes the base of what follows. `log`: the
  // node it recovered to, whose image the log (and an earlier rebase) says it had then.
  rebase(lsn: bigint, checksum: number, actual: Int32Array): { node: HistoryNode; log: HistoryNode } | string {
    // the node of the recovered head in the history the crashed incarnation was writing
    let log: HistoryNode | null = this.headNode;
    while (log !== null && log.lsn > lsn) log = log.parent;
    if (log === null || log.lsn !== lsn || log.checksum !== checksum) return `recovery: the log's head (${lsn}, checksum ${checksum}) is no record of the history the crashed primary wrote`;
    const lost = this.checkPrimary(actual, "durable");
    if (lost !== null) return `recovery lost a durable write: ${lost}`;
    const node: HistoryNode = { key: log.key, lsn, checksum, parent: log.parent, depth: log.depth, sectors: null, stamps: null, base: Int32Array.from(actual), snapshots: log.snapshots, what: "rebase", cache: null };
    this.add(node);
    this.entries = Array.from({ length: this.layout.sectors }, (_, sector) => [{ lsn, stamp: actual[sector]!, cause: settled }]);
    return { node, log };
  }

  // A summary of how two images differ, for messages.
  static difference(layout: VolumeLayout, expected: Int32Array, actual: Int32Array, describe: (sector: number) => string): string | null {
    assert(expected.length === actual.length && actual.length === layout.sectors, "images of the same layout");
    let count = 0;
    let first = -1;
    for (let sector = 0; sector < expected.length; sector++) {
      if (expected[sector] === actual[sector]) continue;
      if (first < 0) first = sector;
      count += 1;
    }
    if (count === 0) return null;
    return `${count} sector(s) differ; first: ${describe(first)}: expected stamp ${expected[first]}, found ${actual[first]}`;
  }
}
