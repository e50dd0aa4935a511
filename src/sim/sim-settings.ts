// What one seed simulates: sizes, modes, latencies, the client's load and the fault rates, all
// drawn from the seed, so that seeds cover quiet and hostile worlds alike.

import type { Durability } from "../group/group.js";
import type { GroupLogLimits } from "../log/group-log.js";
import type { LinkMode, OverflowPolicy } from "../replication/primary-link.js";
import type { NetworkSettings } from "./sim-network.js";
import type { DiskLatency } from "./sim-storage.js";
import type { ClientSettings } from "./sim-client.js";
import type { SimVolumeSpec } from "./sector-stamp.js";
import { Random } from "./random.js";
import { activityShapeDefault, type ActivityShape } from "../group/activity-map.js";

const KiB = 1024;

// Probabilities per step of the safety phase.
export interface FaultRates {
  readonly crashPrimary: number;
  readonly crashSecondary: number;
  readonly reset: number;
  readonly partition: number;
  readonly corruption: number;
  readonly diskError: number;
}

export interface SimSettings {
  readonly seed: number;
  readonly steps: number;
  readonly stepMsMax: number;
  readonly durability: Durability;
  // The activity map's shape: the real one (512 extents of 4 MiB kept hot: the small simulated
  // volumes never cool), unless `npm run sim -- --activity-keep N` asks for N extents of
  // simActivityExtentSize, so that the map cools and re-marks all the time.
  readonly activity: ActivityShape;
  readonly link: { readonly mode: LinkMode; readonly intervalMs: number; readonly overflow: OverflowPolicy };
  readonly volumes: readonly SimVolumeSpec[];
  readonly primaryLogBytes: number;
  readonly secondaryLogBytes: number;
  readonly logLimits: Partial<GroupLogLimits>;
  readonly snapshots: { readonly chunkSize: number; readonly storeSize: number };
  readonly disk: DiskLatency;
  readonly network: NetworkSettings;
  readonly faults: FaultRates;
  readonly downMsMax: number; // a crashed node restarts within this
  readonly partitionMsMax: number;
  readonly corruptionMsMax: number;
  readonly client: ClientSettings;
  readonly healingMsMax: number; // virtual time the replicas get to converge once faults stop
}

function pick<T>(random: Random, choices: readonly T[]): T {
  return choices[random.below(choices.length)]!;
}

// A rate that is zero in some seeds and up to `max` in others.
function rate(random: Random, max: number): number {
  return random.chance(0.2) ? 0 : (random.below(1000) / 1000) * max;
}

// With --activity-keep: a 512 KiB volume has 32 extents, a write of the simulated client spans
// up to 4.
export const simActivityExtentSize = 16 * KiB;

export function drawSettings(seed: number, steps: number, activityKeep?: number): SimSettings {
  const random = new Random(seed ^ 0x5eed_5e77);
  const volumeCount = 1 + random.below(2);
  const volumes = Array.from({ length: volumeCount }, (_, index) => ({ id: index + 1, name: `disk${index}`, size: pick(random, [128, 256, 512]) * KiB }));
  return {
    seed,
    steps,
    stepMsMax: pick(random, [20, 50, 100]),
    durability: random.chance(0.5) ? "activity-map" : "write-ahead",
    activity: activityKeep === undefined ? activityShapeDefault : { keep: activityKeep, extentSize: simActivityExtentSize },
    link: { mode: pick(random, ["async", "async", "sync", "periodic"] as const), intervalMs: pick(random, [100, 300, 1000]), overflow: random.chance(0.85) ? "bitmap" : "stall" },
    volumes,
    primaryLogBytes: 8 * KiB + pick(random, [256, 512, 2048]) * KiB,
    secondaryLogBytes: 8 * KiB + pick(random, [512, 2048]) * KiB,
    logLimits: { sizeMin: 0, segmentBytesMin: 4 * KiB, readChunkBytes: 16 * KiB },
    snapshots: { chunkSize: pick(random, [4, 8, 16]) * KiB, storeSize: 8 * 1024 * KiB },
    disk: { writeMsMax: pick(random, [0.05, 0.3, 1]), syncMsMax: pick(random, [0.2, 1, 4]) },
    network: { latencyMsMax: pick(random, [0.2, 2, 10, 40]), corruptionProbability: pick(random, [0.01, 0.05, 0.2]) },
    faults: {
      crashPrimary: rate(random, 0.03),
      crashSecondary: rate(random, 0.03),
      reset: rate(random, 0.04),
      partition: rate(random, 0.02),
      corruption: rate(random, 0.02),
      diskError: rate(random, 0.01),
    },
    downMsMax: pick(random, [200, 2_000]),
    partitionMsMax: pick(random, [500, 3_000, 15_000]),
    corruptionMsMax: 500,
    client: {
      writers: 1 + random.below(4),
      thinkMsMax: pick(random, [2, 10, 30]),
      sectorsMax: pick(random, [8, 32]),
      fuaProbability: pick(random, [0, 0.1, 0.3]),
      zeroProbability: pick(random, [0, 0.05]),
      flushEveryMsMax: pick(random, [20, 200]),
      operationEveryMsMax: random.chance(0.15) ? 0 : pick(random, [100, 400, 1500]),
      restoreProbability: pick(random, [0.1, 0.25]),
    },
    healingMsMax: 180_000,
  };
}

export function describeSettings(settings: SimSettings): string {
  const { faults, client } = settings;
  return [
    `${settings.durability}${settings.durability === "activity-map" ? ` (keep ${settings.activity.keep} × ${settings.activity.extentSize / KiB} KiB)` : ""}, ${settings.link.mode} link (overflow ${settings.link.overflow})`,
    `volumes ${settings.volumes.map((volume) => `${volume.name}=${volume.size / KiB}KiB`).join(" ")}`,
    `logs ${settings.primaryLogBytes / KiB}/${settings.secondaryLogBytes / KiB} KiB, chunk ${settings.snapshots.chunkSize / KiB} KiB`,
    `disk ≤${settings.disk.writeMsMax}/${settings.disk.syncMsMax} ms, net ≤${settings.network.latencyMsMax} ms`,
    `client ${client.writers} writers ≤${client.thinkMsMax} ms, fua ${client.fuaProbability}, operations ${client.operationEveryMsMax > 0 ? `every ≤${client.operationEveryMsMax} ms` : "none"}`,
    `faults/step crash ${faults.crashPrimary.toFixed(3)}/${faults.crashSecondary.toFixed(3)} reset ${faults.reset.toFixed(3)} partition ${faults.partition.toFixed(3)} corrupt ${faults.corruption.toFixed(3)} disk ${faults.diskError.toFixed(3)}`,
  ].join("; ");
}
