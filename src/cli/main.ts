// The `lockstep` command. `serve` and `demo` run processes; every other command is a thin
// client of one node's admin API. With --json a command prints one JSON document. On failure:
// exit code from src/errors.ts and one line `error CODE: message` on stderr.

import { resolve } from "node:path";
import { Command, CommanderError, Option } from "commander";
import { OperatingError } from "../errors.js";
import { formatSize, parseDuration, parseSize } from "../units.js";
import { linksPerGroupMax } from "../constants.js";
import { callApi, resolveTarget } from "./client.js";
import { demo } from "./demo.js";
import { serve } from "./serve.js";
import { addReplicationCommands } from "./replication-commands.js";
import { addSnapshotCommands } from "./snapshot-commands.js";

interface GlobalOptions {
  node?: string;
  token?: string;
  json?: boolean;
}

function print(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
}

function table(rows: string[][]): string {
  if (rows.length === 0) return "";
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join("  ").trimEnd()).join("\n");
}

interface VolumeView {
  name: string;
  group: string;
  size: number;
  path: string;
  connections: number;
  errors: number;
  lastError: { code: string; message: string } | null;
}

function volumeRows(volumes: VolumeView[]): string {
  if (volumes.length === 0) return "no volumes";
  return table([
    ["NAME", "GROUP", "SIZE", "CONNECTIONS", "ERRORS", "IMAGE"],
    ...volumes.map((volume) => [volume.name, volume.group, formatSize(volume.size), String(volume.connections), String(volume.errors), volume.path]),
  ]);
}

interface LogView {
  state: string;
  failure: { code: string; message: string } | null;
  sizeBytes: number;
  usedBytes: number;
  usedPercent: number;
  headLsn: string;
  durableLsn: string;
  tailLsn: string;
}

interface GroupView {
  name: string;
  role: "primary" | "secondary";
  log: LogView;
  // primary
  durability?: string;
  inflight?: number;
  stats?: { writes: number; stalls: number; logFullErrors: number; checkpoints: number };
  links?: { peer: string; mode: string; state: string; consistent: boolean; appliedLsn: string; lagSeconds: number | null; resync: { percent: number; etaSeconds: number | null } | null }[];
  // secondary
  primary?: string | null;
  connected?: boolean;
  consistent?: boolean;
  appliedLsn?: string;
  failure?: string | null;
}

interface StatusView {
  node: string;
  state: string;
  pid: number;
  uptimeMs: number;
  nbd: { socket: string | null; tcp: string | null; connections: number };
  replication: { listen: string | null };
  groups: GroupView[];
  volumes: VolumeView[];
}

function groupText(group: GroupView): string[] {
  const log = `log ${formatSize(group.log.usedBytes)}/${formatSize(group.log.sizeBytes)} (${group.log.usedPercent}%), LSN tail ${group.log.tailLsn} head ${group.log.headLsn} durable ${group.log.durableLsn}`;
  if (group.role === "secondary") {
    return [
      `group ${group.name}: secondary of ${group.primary ?? "(no link accepted)"}, ${group.connected ? "connected" : "not connected"}, ${group.consistent ? "consistent" : "INCONSISTENT (resync in progress or never synced)"}; applied ${group.appliedLsn}; ${log}` +
        (group.failure ? `; applier FAILED: ${group.failure}` : ""),
    ];
  }
  const lines = [`group ${group.name}: primary, ${group.durability}; ${log}; writes ${group.stats!.writes}, in flight ${group.inflight}, stalls ${group.stats!.stalls}, log-full ${group.stats!.logFullErrors}`];
  for (const link of group.links ?? []) {
    const resync = link.resync === null ? "" : `, resync ${link.resync.percent}% ETA ${link.resync.etaSeconds ?? "?"}s`;
    lines.push(`  link → ${link.peer}: ${link.mode}, ${link.state}, ${link.consistent ? "consistent" : "INCONSISTENT"}, applied ${link.appliedLsn}, lag ${link.lagSeconds === null ? "?" : `${link.lagSeconds.toFixed(1)}s`}${resync}`);
  }
  return lines;
}

function statusText(status: StatusView): string {
  const lines = [
    `node ${status.node} (pid ${status.pid}) ${status.state}, up ${Math.round(status.uptimeMs / 1000)}s`,
    `nbd  socket ${status.nbd.socket ?? "-"}  tcp ${status.nbd.tcp ?? "-"}  connections ${status.nbd.connections}` + (status.replication.listen ? `  replication ${status.replication.listen}` : ""),
  ];
  for (const group of status.groups) lines.push(...groupText(group));
  lines.push(volumeRows(status.volumes));
  for (const group of status.groups) {
    if (group.log.failure) lines.push(`group ${group.name}: log FAILED (${group.log.failure.code}: ${group.log.failure.message}); writes fail until a restart recovers it`);
  }
  for (const volume of status.volumes) {
    if (volume.lastError) lines.push(`volume ${volume.name}: last error ${volume.lastError.code}: ${volume.lastError.message}`);
  }
  return lines.join("\n");
}

function buildProgram(): Command {
  const program = new Command("lockstep")
    .description("Block-volume replication: NBD volumes through a durable, write-ordered log")
    .option("--node <dir-or-url>", "the node to talk to: its directory, or its API URL")
    .option("--token <token>", "admin token (when --node is a URL); default LOCKSTEP_TOKEN")
    .option("--json", "print one JSON document")
    .configureOutput({ outputError: () => undefined }) // main() prints the one error line
    .exitOverride();
  const globals = (): GlobalOptions => program.opts<GlobalOptions>();
  const target = () => resolveTarget(globals().node, globals().token);

  program
    .command("serve")
    .description("run one node in the foreground")
    .requiredOption("--config <file>", "YAML config")
    .option("--exit-with-parent", "stop when standard input closes (used by demo)")
    .action(async (options: { config: string; exitWithParent?: boolean }) => {
      await serve(options.config, { exitWithParent: options.exitWithParent });
    });

  program
    .command("demo")
    .description("start a local cluster on loopback; first stdout line is the ready JSON")
    .option("--dir <dir>", "directory for the nodes' data", "lockstep-demo")
    .option("--size <size>", "size of each new volume", "1GiB")
    .option("--volumes <n>", "volumes in group demo", "1")
    .addOption(new Option("--durability <mode>", "write-path durability").choices(["activity-map", "write-ahead"]).default("activity-map"))
    .option("--secondaries <n>", "secondary nodes replicating group demo", "1")
    .addOption(new Option("--mode <mode>", "replication mode of the links").choices(["sync", "async", "periodic"]).default("async"))
    .option("--interval <duration>", "periodic links: ship every interval", "1s")
    .action(async (options: { dir: string; size: string; volumes: string; durability: "activity-map" | "write-ahead"; secondaries: string; mode: "sync" | "async" | "periodic"; interval: string }) => {
      const volumes = Number(options.volumes);
      if (!Number.isInteger(volumes) || volumes < 1 || volumes > 64) throw new OperatingError("USAGE", "--volumes: a whole number from 1 to 64");
      const secondaries = Number(options.secondaries);
      if (!Number.isInteger(secondaries) || secondaries < 0 || secondaries > linksPerGroupMax) throw new OperatingError("USAGE", `--secondaries: a whole number from 0 to ${linksPerGroupMax}`);
      const intervalMs = parseDuration(options.interval, "--interval");
      process.exitCode = await demo({ dir: options.dir, size: parseSize(options.size, "--size"), volumes, durability: options.durability, secondaries, mode: options.mode, intervalMs });
    });

  program.command("status").description("the node's groups, logs and volumes").action(async () => {
    const status = (await callApi(target(), "GET", "/v1/status")) as StatusView;
    print(globals().json, status, () => statusText(status));
  });

  const volume = program.command("volume").description("create, list, resize and delete volumes");
  volume
    .command("create <name>")
    .description("create a volume (a new sparse image, or adopt an existing one with --path)")
    .requiredOption("--group <group>", "the consistency group")
    .option("--size <size>", "size, e.g. 10GiB (optional when adopting an image)")
    .option("--path <path>", "image file or block device (default: in the node's directory)")
    .action(async (name: string, options: { group: string; size?: string; path?: string }) => {
      // A relative --path means relative to where the command runs, not to the node's directory.
      const path = options.path === undefined ? undefined : resolve(options.path);
      const body = { name, group: options.group, size: options.size === undefined ? undefined : parseSize(options.size, "--size"), path };
      const result = (await callApi(target(), "POST", "/v1/volumes", body)) as { volume: VolumeView };
      print(globals().json, result, () => `created ${result.volume.name}: ${formatSize(result.volume.size)} in group ${result.volume.group} at ${result.volume.path}`);
    });
  volume.command("list").description("list volumes").action(async () => {
    const result = (await callApi(target(), "GET", "/v1/volumes")) as { volumes: VolumeView[] };
    print(globals().json, result, () => volumeRows(result.volumes));
  });
  volume
    .command("resize <name> <size>")
    .description("grow or shrink a volume")
    .action(async (name: string, size: string) => {
      const result = (await callApi(target(), "POST", `/v1/volumes/${encodeURIComponent(name)}/resize`, { size: parseSize(size, "size") })) as { volume: VolumeView };
      print(globals().json, result, () => `resized ${name} to ${formatSize(result.volume.size)}`);
    });
  volume
    .command("delete <name>")
    .description("delete a volume (an image lockstep created is removed; an adopted one is kept)")
    .option("--force", "even with NBD clients connected")
    .action(async (name: string, options: { force?: boolean }) => {
      const result = await callApi(target(), "DELETE", `/v1/volumes/${encodeURIComponent(name)}${options.force ? "?force=true" : ""}`);
      print(globals().json, result, () => `deleted ${name}`);
    });
  addReplicationCommands(program, { json: () => globals().json, target, print, table });
  addSnapshotCommands(program, { json: () => globals().json, target, print, table });
  return program;
}

export async function main(argv: readonly string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv as string[]);
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.exitCode === 0) return; // --help, --version
      process.stderr.write(`error USAGE: ${error.message.replace(/^error: /, "")}\n`);
      process.exitCode = 2;
      return;
    }
    const typed = error instanceof OperatingError ? error : new OperatingError("INTERNAL", (error as Error)?.message ?? String(error), { cause: error });
    process.stderr.write(`error ${typed.code}: ${typed.message}\n`);
    process.exitCode = typed.exitCode;
  }
}
