// The node's YAML configuration, validated with a schema. A bad config produces ONE line that
// names the key and the problem (e.g. `groups[0].logSize: must be at least 64MiB`).
//
//   node:   { name, dataDir }                      identity and the node's own directory
//   api:    { listen: "127.0.0.1:0" }              admin HTTP API, loopback only
//   nbd:    { socket?: path, listen?: "host:port",  where clients connect (at least one)
//             pollMicros }                          how long the event loop polls after a reply (0: never)
//   replication: { listen?: "host:port" }          where this node's secondary groups accept their primaries' links
//   groups: [{ name, role, logSize, durability, snapshots: { chunkSize, storeSize },
//             protection: { destructive: apply|delay|refuse, delaySeconds } }]   (protection: secondaries)
//           role: primary (takes writes) | secondary (a replica)
//   log:    { level }
//
// Relative paths are relative to the config file's directory.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { groupsPerNodeMax, logSizeDefault, nbdPollMicrosDefault, nbdPollMicrosMax, logSizeMax, logSizeMin, snapshotChunkSizeDefault, snapshotChunkSizeMax, snapshotChunkSizeMin, snapshotStoreSizeDefault, snapshotStoreSizeMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { formatSize, parseSize } from "../units.js";
import { isName, nameLengthMax, nameRuleText } from "../names.js";

const name = z.string().refine((value) => isName(value), `must be 1-${nameLengthMax} ${nameRuleText}`);

const hostPort = z.string().transform((text, context) => {
  const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : -1;
  if (!match || port > 65535) {
    context.addIssue({ code: "custom", message: `"${text}" is not host:port` });
    return z.NEVER;
  }
  return { host: match[1]!.replace(/^\[|\]$/g, ""), port };
});

const loopbackHostPort = hostPort.refine(
  (address) => address.host === "localhost" || address.host === "::1" || address.host.startsWith("127."),
  "the admin API listens on loopback only (127.0.0.0/8, ::1 or localhost)",
);

const size = (min: number, max: number) =>
  z.union([z.string(), z.number()]).transform((value, context) => {
    try {
      const bytes = parseSize(value);
      if (bytes < min || bytes > max) {
        context.addIssue({ code: "custom", message: `must be between ${formatSize(min)} and ${formatSize(max)}` });
        return z.NEVER;
      }
      return bytes;
    } catch (error) {
      context.addIssue({ code: "custom", message: (error as Error).message });
      return z.NEVER;
    }
  });

const snapshotsSchema = z
  .object({
    // the copy-on-write unit of a volume's store; fixed when the volume's first snapshot is taken
    chunkSize: size(snapshotChunkSizeMin, snapshotChunkSizeMax).refine((bytes) => Number.isInteger(Math.log2(bytes)), "must be a power of two").default(snapshotChunkSizeDefault),
    // per volume: what its snapshots may keep (preserved and written chunks)
    storeSize: size(snapshotChunkSizeMax, snapshotStoreSizeMax).default(snapshotStoreSizeDefault),
  })
  .strict();

// A secondary's own protection against destructive operations arriving in-band (a snapshot
// delete, a restore, a volume shrink): apply them (a faithful replica, the default), delay them
// (the applier holds at the operation for delaySeconds after the primary logged it, so an
// operator can act first), or refuse them (a deleted snapshot's twin is kept under another
// name; a restore or shrink stops the applier at its LSN until the policy changes).
const protectionSchema = z
  .object({
    destructive: z.enum(["apply", "delay", "refuse"]).default("apply"),
    delaySeconds: z.number().int().min(0).max(30 * 24 * 3600).default(0),
  })
  .strict();

const groupSchema = z
  .object({
    name,
    role: z.enum(["primary", "secondary"]).default("primary"),
    logSize: size(logSizeMin, logSizeMax).default(logSizeDefault),
    durability: z.enum(["activity-map", "write-ahead"]).default("activity-map"),
    snapshots: snapshotsSchema.default({ chunkSize: snapshotChunkSizeDefault, storeSize: snapshotStoreSizeDefault }),
    protection: protectionSchema.default({ destructive: "apply", delaySeconds: 0 }),
  })
  .strict();

export const configSchema = z
  .object({
    node: z.object({ name, dataDir: z.string().min(1) }).strict(),
    api: z.object({ listen: loopbackHostPort.default({ host: "127.0.0.1", port: 0 }) }).strict().default({ listen: { host: "127.0.0.1", port: 0 } }),
    nbd: z
      .object({
        socket: z.string().min(1).optional(),
        listen: hostPort.optional(),
        pollMicros: z.number().int().min(0).max(nbdPollMicrosMax).default(nbdPollMicrosDefault),
      })
      .strict()
      .refine((nbd) => nbd.socket !== undefined || nbd.listen !== undefined, "set socket, listen, or both"),
    replication: z.object({ listen: hostPort.optional() }).strict().default({}),
    groups: z
      .array(groupSchema)
      .min(1)
      .max(groupsPerNodeMax)
      .refine((groups) => new Set(groups.map((group) => group.name)).size === groups.length, "group names must be unique"),
    log: z.object({ level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info") }).strict().default({ level: "info" }),
  })
  .strict()
  .refine((config) => config.replication.listen !== undefined || config.groups.every((group) => group.role === "primary"), {
    message: "a node with a secondary group needs replication.listen (where its primary connects)",
    path: ["replication", "listen"],
  });

export type NodeConfig = z.infer<typeof configSchema>;
export type GroupConfig = NodeConfig["groups"][number];

function issuePath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((text, part) => (typeof part === "number" ? `${text}[${part}]` : text ? `${text}.${String(part)}` : String(part)), "");
}

export function parseConfig(text: string, baseDir: string, source = "config"): NodeConfig {
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    throw new OperatingError("CONFIG_INVALID", `${source}: not valid YAML: ${(error as Error).message.split("\n")[0]}`);
  }
  const result = configSchema.safeParse(raw ?? {});
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const where = issuePath(issue.path) || "(top level)";
    throw new OperatingError("CONFIG_INVALID", `${source}: ${where}: ${issue.message}`);
  }
  const config = result.data;
  config.node.dataDir = resolve(baseDir, config.node.dataDir);
  if (config.nbd.socket !== undefined) config.nbd.socket = resolve(baseDir, config.nbd.socket);
  return config;
}

export function loadConfig(path: string): NodeConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new OperatingError("CONFIG_INVALID", `${path}: cannot read: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
  return parseConfig(text, dirname(resolve(path)), path);
}
