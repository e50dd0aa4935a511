// The snapshot commands of the CLI: `snapshot create|list|delete|restore|refresh|diff`. Thin
// clients of the admin API like the rest. Images are named VOLUME (the volume itself) or
// VOLUME@SNAPSHOT; a snapshot's NBD export has the same name.
//
//   lockstep snapshot create disk0@nightly                      a read-only snapshot of disk0
//   lockstep snapshot create --group db --name nightly          every volume of group db, one point
//   lockstep snapshot create disk0@test --from disk0@nightly --writable
//   lockstep snapshot list [disk0]                              the tree
//   lockstep snapshot diff disk0@nightly disk0                  regions that differ, and a total
//   lockstep snapshot restore disk0@nightly                     disk0 equal to it again
//   lockstep snapshot refresh disk0@test [--from-volume]        equal to its parent (or disk0) now
//   lockstep snapshot sync disk0@nightly disk0@test             a writable snapshot equal to another image
//   lockstep snapshot delete disk0@nightly [--recursive]

import type { Command } from "commander";
import { cliLongRequestMsMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { formatSize } from "../units.js";
import { callApi, type CommandOutput as Output } from "./client.js";


interface SnapshotView {
  name: string;
  volume: string;
  snapshot: string;
  parent: string;
  writable: boolean;
  size: number;
  createdLsn: string;
  createdAtMs: number;
  refreshedAtMs: number | null;
  depth: number;
  storeBytes: number | null;
}

// What an operation cost: its pause at the primary, its record, and the bytes on each link.
interface OperationCost {
  lsn: string;
  pauseMs: number;
  recordBytes: number;
  links: { peer: string; mode: string; bytes: number; inBand: boolean }[];
}

function costText(cost: OperationCost): string {
  const links = cost.links.map((link) => `${link.peer} (${link.mode}): ${link.inBand ? `${link.bytes} bytes` : "not in band (the link is on its bitmap)"}`);
  return `operation record at LSN ${cost.lsn}: ${cost.recordBytes} bytes; writes paused ${cost.pauseMs} ms; sent: ${links.length === 0 ? "no links" : links.join(", ")}`;
}

function treeRows(snapshots: SnapshotView[], table: Output["table"]): string {
  if (snapshots.length === 0) return "no snapshots";
  return table([
    ["SNAPSHOT", "PARENT", "MODE", "SIZE", "CREATED LSN", "CREATED", "STORE"],
    ...snapshots.map((snapshot) => [
      `${"  ".repeat(snapshot.depth - 1)}${snapshot.name}`,
      snapshot.parent,
      snapshot.writable ? "rw" : "ro",
      formatSize(snapshot.size),
      snapshot.createdLsn,
      new Date(snapshot.refreshedAtMs ?? snapshot.createdAtMs).toISOString().replace(/\.\d+Z$/, "Z") + (snapshot.refreshedAtMs === null ? "" : " (refreshed)"),
      snapshot.storeBytes === null ? "-" : formatSize(snapshot.storeBytes),
    ]),
  ]);
}

function diffText(result: { a: string; b: string; regions: { offset: number; length: number }[]; totalBytes: number; truncated: boolean }): string {
  const lines = result.regions.map((region) => `${region.offset}\t${region.length}`);
  if (result.truncated) lines.push(`… (more regions than listed)`);
  lines.push(`total: ${result.totalBytes} bytes (${formatSize(result.totalBytes)}) in ${result.regions.length}${result.truncated ? "+" : ""} region(s) differ between ${result.a} and ${result.b}`);
  return lines.join("\n");
}

export function addSnapshotCommands(program: Command, output: Output): void {
  const snapshot = program.command("snapshot").description("copy-on-write snapshots: create, list, delete, restore, refresh, diff (names VOLUME@SNAPSHOT)");
  snapshot
    .command("create [volume@name]")
    .description("take a snapshot of a volume (or, with --from, of one of its snapshots), or with --group of every volume of a group, at one point of the group's write order")
    .option("--from <image>", "the image to take it of: VOLUME or VOLUME@SNAPSHOT (default: the volume)")
    .option("--writable", "a writable snapshot (its writes never touch its origin or siblings)")
    .option("--group <group>", "snapshot every volume of the group at one consistent point (with --name)")
    .option("--name <name>", "the snapshot's name on every volume (with --group)")
    .action(async (image: string | undefined, options: { from?: string; writable?: boolean; group?: string; name?: string }) => {
      if (options.group !== undefined) {
        if (image !== undefined || options.name === undefined || options.from !== undefined || options.writable) throw new OperatingError("USAGE", "a group snapshot takes --group GROUP --name NAME only");
        const result = (await callApi(output.target(), "POST", `/v1/groups/${encodeURIComponent(options.group)}/snapshots`, { name: options.name })) as { snapshots: SnapshotView[] } & OperationCost;
        output.print(output.json(), result, () => `created ${result.snapshots.map((entry) => entry.name).join(", ")} at LSN ${result.lsn}\n${costText(result)}`);
        return;
      }
      if (image === undefined) throw new OperatingError("USAGE", "name the snapshot (VOLUME@NAME), or use --group GROUP --name NAME");
      const result = (await callApi(output.target(), "POST", "/v1/snapshots", { image, from: options.from, writable: options.writable ?? false })) as { snapshot: SnapshotView & OperationCost };
      output.print(output.json(), result, () => `created ${result.snapshot.name} (${result.snapshot.writable ? "writable" : "read-only"}) of ${result.snapshot.parent} at LSN ${result.snapshot.createdLsn}\n${costText(result.snapshot)}`);
    });
  snapshot
    .command("list [volume]")
    .description("the snapshot tree of one volume, or of all")
    .action(async (volume: string | undefined) => {
      const result = (await callApi(output.target(), "GET", `/v1/snapshots${volume === undefined ? "" : `?volume=${encodeURIComponent(volume)}`}`)) as { snapshots: SnapshotView[] };
      output.print(output.json(), result, () => treeRows(result.snapshots, output.table));
    });
  snapshot
    .command("delete <volume@snapshot>")
    .description("delete a snapshot and free the chunks no other snapshot needs")
    .option("--recursive", "also delete the snapshots taken of it")
    .option("--force", "even with NBD clients connected")
    .action(async (image: string, options: { recursive?: boolean; force?: boolean }) => {
      const query = [options.recursive ? "recursive=true" : "", options.force ? "force=true" : ""].filter((part) => part !== "").join("&");
      const result = (await callApi(output.target(), "DELETE", `/v1/snapshots/${encodeURIComponent(image)}${query === "" ? "" : `?${query}`}`, undefined, cliLongRequestMsMax)) as { deleted: string[] } & OperationCost;
      output.print(output.json(), result, () => `deleted ${result.deleted.join(", ")}\n${costText(result)}`);
    });
  snapshot
    .command("restore <volume@snapshot>")
    .description("make the volume's content equal to the snapshot's (only the chunks that differ are written)")
    .option("--volume <volume>", "the volume to restore (must be the snapshot's own)")
    .action(async (image: string, options: { volume?: string }) => {
      const result = (await callApi(output.target(), "POST", `/v1/snapshots/${encodeURIComponent(image)}/restore`, { volume: options.volume }, cliLongRequestMsMax)) as { volume: string; bytesWritten: number; chunks: number; chunksPending: number; bytesPending: number } & OperationCost;
      const background = result.chunksPending > 0 ? `; the volume reads as ${image} now, its ${result.chunksPending} differing chunk(s) (${formatSize(result.bytesPending)}) are copied back in the background (volume status shows how many are left)` : "; nothing differed";
      output.print(output.json(), result, () => `restored ${result.volume} from ${image}: writes paused ${result.pauseMs} ms${background}\n${costText(result)}`);
    });
  snapshot
    .command("refresh <volume@snapshot>")
    .description("make a snapshot equal to its parent's current content (or, --from-volume, the volume's)")
    .option("--from-volume", "refresh from the volume rather than the parent")
    .action(async (image: string, options: { fromVolume?: boolean }) => {
      const result = (await callApi(output.target(), "POST", `/v1/snapshots/${encodeURIComponent(image)}/refresh`, { fromVolume: options.fromVolume ?? false })) as { snapshot: SnapshotView & OperationCost };
      output.print(output.json(), result, () => `refreshed ${result.snapshot.name} from ${result.snapshot.parent}\n${costText(result.snapshot)}`);
    });
  snapshot
    .command("sync <from> <to>")
    .description("make image <to> (the volume, or a writable snapshot) equal to image <from>, writing only the chunks that differ; on every site, no data on the links")
    .action(async (from: string, to: string) => {
      const result = (await callApi(output.target(), "POST", "/v1/snapshots-sync", { from, to }, cliLongRequestMsMax)) as { bytesWritten: number; chunks: number } & OperationCost;
      output.print(output.json(), result, () => `synced ${to} from ${from}: ${result.bytesWritten === 0 ? "in place, no data copied" : `${result.chunks} chunk(s), ${formatSize(result.bytesWritten)} written locally`}\n${costText(result)}`);
    });
  snapshot
    .command("diff <a> <b>")
    .description("regions where two images of one volume differ (from metadata; no data is read), and the total")
    .action(async (a: string, b: string) => {
      const result = (await callApi(output.target(), "GET", `/v1/snapshots-diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`)) as Parameters<typeof diffText>[0];
      output.print(output.json(), result, () => diffText(result));
    });
}
