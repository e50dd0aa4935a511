// The layout of a node's directory, and the small files the CLI reads to reach the node.
//
//   <dataDir>/api.json        {"url","pid","nbd":{...}}  written when the node is ready
//   <dataDir>/api.token       bearer token for the admin API (0600), kept across restarts
//   <dataDir>/catalog.json    volumes (src/node/catalog.ts)
//   <dataDir>/groups/<g>/log  the group log (docs/FORMAT.md)
//   <dataDir>/groups/<g>/activity  the activity map (src/group/activity-map.ts)
//   <dataDir>/groups/<g>/links/<peer>.json|.state.json|.bitmap   a primary's links (replication/group-links.ts)
//   <dataDir>/groups/<g>/link.json     a secondary's accepted link credential (node/node-replication.ts)
//   <dataDir>/groups/<g>/replica.json  a secondary's consistency state (group/replica.ts)
//   <dataDir>/volumes/<v>.img images lockstep created (adopted images stay where they are)

import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import { join } from "node:path";
import { apiTokenBytes } from "../constants.js";

export const nodeFiles = {
  api: (dataDir: string) => join(dataDir, "api.json"),
  token: (dataDir: string) => join(dataDir, "api.token"),
  groupDir: (dataDir: string, group: string) => join(dataDir, "groups", group),
  groupLog: (dataDir: string, group: string) => join(dataDir, "groups", group, "log"),
  groupActivity: (dataDir: string, group: string) => join(dataDir, "groups", group, "activity"),
  replicaState: (dataDir: string, group: string) => join(dataDir, "groups", group, "replica.json"),
  volumeImage: (dataDir: string, volume: string) => join(dataDir, "volumes", `${volume}.img`),
} as const;

export interface ApiInfo {
  readonly url: string;
  readonly pid: number;
  readonly nbd: { readonly socket?: string; readonly tcp?: string };
}

export async function readOrCreateToken(dataDir: string): Promise<string> {
  const path = nodeFiles.token(dataDir);
  try {
    const token = (await fsp.readFile(path, "utf8")).trim();
    if (token.length >= 32) return token;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  const token = randomBytes(apiTokenBytes).toString("base64url");
  await fsp.writeFile(path, `${token}\n`, { mode: 0o600 });
  return token;
}

export async function writeApiInfo(dataDir: string, info: ApiInfo): Promise<void> {
  const path = nodeFiles.api(dataDir);
  await fsp.writeFile(`${path}.tmp`, `${JSON.stringify(info)}\n`, { mode: 0o600 });
  await fsp.rename(`${path}.tmp`, path);
}

export async function removeApiInfo(dataDir: string): Promise<void> {
  await fsp.rm(nodeFiles.api(dataDir), { force: true });
}
