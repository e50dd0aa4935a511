// A group on simulated disks (its log and, for activity-map, its activity map), with no
// volumes yet: the start of the group-level tests.

import { ActivityMap, activitySlotSize } from "../../src/group/activity-map.js";
import { Group, type Durability } from "../../src/group/group.js";
import { GroupLog } from "../../src/log/group-log.js";
import { silentLogger } from "../../src/logger.js";
import { SimDisk } from "../../src/sim/sim-disk.js";
import { smallLimits } from "../log/helpers.js";

export const simGroupLogSize = 512 * 1024;

// logDisk: the log's disk, when the test injects faults into it.
export async function simGroup(durability: Durability, logDisk = new SimDisk("log", simGroupLogSize)): Promise<Group> {
  const log = await GroupLog.create(logDisk, { sizeBytes: simGroupLogSize, groupId: "g", limits: smallLimits });
  let group!: Group;
  const activity = durability === "activity-map" ? (await ActivityMap.open(new SimDisk("activity", activitySlotSize * 2), (volumeId) => group.coolLsn(volumeId), () => group.syncAll())).map : null;
  group = new Group("g", log, durability, activity, silentLogger);
  return group;
}
