// The replication commands of the CLI: `link add|accept|list|pause|resume|remove|progress`,
// `drain`, `verify`, `takeover`. Thin clients of the admin API like the rest.
//
// Setting a link up takes one step on each side, each with that node's own admin token:
//   lockstep --node PRIMARY link add demo site-b 10.0.0.2:7400 --mode sync --credential-out site-b.link
//   lockstep --node SECONDARY link accept --file site-b.link

import { promises as fsp } from "node:fs";
import { Command, Option } from "commander";
import { cliLongRequestMsMax } from "../constants.js";
import { OperatingError } from "../errors.js";
import { formatSize, parseDuration } from "../units.js";
import { callApi, type CommandOutput as Output } from "./client.js";


interface LinkView {
  group: string;
  peer: string;
  address: string;
  mode: string;
  state: string;
  consistent: boolean;
  sentLsn: string;
  durableLsn: string;
  appliedLsn: string;
  headLsn: string;
  lagBytes: number;
  lagSeconds: number | null;
  rpoSeconds: number | null;
  lastError: string | null;
  resync: { totalBytes: number; sentBytes: number; percent: number; bytesPerSecond: number; etaSeconds: number | null } | null;
  lastTwinBuild: { atLsn: string; built: number; kept: number; peerDeletes: number; regionBytes: number; bytesSent: number; ms: number } | null;
}

function linkRows(links: LinkView[], table: Output["table"]): string {
  if (links.length === 0) return "no links";
  // the snapshot twins the last resync built on each peer (after a link missed operations)
  const builds = links.flatMap((link) => {
    const build = link.lastTwinBuild;
    if (build === null || build === undefined) return [];
    return [`${link.group}/${link.peer}: twins built at LSN ${build.atLsn}: ${build.built} built, ${build.kept} kept, ${build.peerDeletes} deleted there; ${formatSize(build.bytesSent)} sent for ${formatSize(build.regionBytes)} of differing regions in ${(build.ms / 1000).toFixed(1)} s`];
  });
  return [table([
    ["GROUP", "PEER", "ADDRESS", "MODE", "STATE", "CONSISTENT", "APPLIED/HEAD", "LAG", "RPO", "RESYNC"],
    ...links.map((link) => [
      link.group,
      link.peer,
      link.address,
      link.mode,
      link.state,
      link.consistent ? "yes" : "NO",
      `${link.appliedLsn}/${link.headLsn}`,
      `${formatSize(link.lagBytes)} ${link.lagSeconds === null ? "?" : `${link.lagSeconds.toFixed(1)}s`}`,
      link.rpoSeconds === null ? "?" : `${link.rpoSeconds.toFixed(1)}s`,
      link.resync === null ? "-" : `${link.resync.percent}% ETA ${link.resync.etaSeconds ?? "?"}s`,
    ]),
  ]), ...builds].join("\n");
}

function progressBar(link: LinkView): string {
  const resync = link.resync;
  const width = 30;
  if (resync === null) return `${link.group}/${link.peer}: ${link.state}${link.consistent ? ", consistent" : ", waiting for the resync to be applied"}`;
  const filled = Math.round((Math.min(100, resync.percent) / 100) * width);
  return `${link.group}/${link.peer} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${resync.percent.toFixed(1)}% ${formatSize(resync.sentBytes)}/${formatSize(resync.totalBytes)} ${formatSize(resync.bytesPerSecond)}/s ETA ${resync.etaSeconds ?? "?"}s`;
}

export function addReplicationCommands(program: Command, output: Output): void {
  const link = program.command("link").description("replication links: add and accept (one step on each side), list, pause, resume, remove");
  link
    .command("add <group> <peer> <address>")
    .description("on the primary: add a link of GROUP to node PEER listening at ADDRESS (host:port); writes the peer's credential")
    .addOption(new Option("--mode <mode>", "sync | async | periodic").choices(["sync", "async", "periodic"]).default("async"))
    .option("--interval <duration>", "periodic links: ship every interval (e.g. 5s)")
    .addOption(new Option("--overflow <policy>", "when the lagging link would overflow the log").choices(["bitmap", "stall"]).default("bitmap"))
    .requiredOption("--credential-out <file>", "where to write the peer's half of the link credential (0600); carry it to the peer")
    .action(async (group: string, peer: string, address: string, options: { mode: string; interval?: string; overflow: string; credentialOut: string }) => {
      const intervalMs = options.interval === undefined ? undefined : parseDuration(options.interval, "--interval");
      const result = (await callApi(output.target(), "POST", `/v1/groups/${encodeURIComponent(group)}/links`, { peer, address, mode: options.mode, intervalMs, overflow: options.overflow })) as { link: LinkView; credential: string };
      await fsp.writeFile(options.credentialOut, result.credential, { mode: 0o600 });
      output.print(output.json(), { link: result.link, credentialOut: options.credentialOut }, () => `link ${group} → ${peer} (${options.mode}) added; run on ${peer}: lockstep --node <its dir> link accept --file ${options.credentialOut}`);
    });
  link
    .command("accept")
    .description("on the secondary: accept a link from its primary with the credential file `link add` wrote")
    .requiredOption("--file <file>", "the credential file")
    .action(async (options: { file: string }) => {
      const credential = await fsp.readFile(options.file, "utf8").catch((error: NodeJS.ErrnoException) => {
        throw new OperatingError("USAGE", `--file ${options.file}: ${error.code ?? error.message}`);
      });
      const result = (await callApi(output.target(), "POST", "/v1/links/accept", { credential })) as { group: string; primary: string };
      output.print(output.json(), result, () => `accepted the link of group ${result.group} from primary ${result.primary}`);
    });
  link.command("list").description("links of this node's primary groups, with progress and lag").action(async () => {
    const result = (await callApi(output.target(), "GET", "/v1/links")) as { links: LinkView[] };
    output.print(output.json(), result, () => linkRows(result.links, output.table));
  });
  for (const verb of ["pause", "resume"] as const) {
    link.command(`${verb} <group> <peer>`).description(`${verb} a link (a paused link keeps its place; writes do not wait for it)`).action(async (group: string, peer: string) => {
      const result = await callApi(output.target(), "POST", `/v1/groups/${encodeURIComponent(group)}/links/${encodeURIComponent(peer)}/${verb}`);
      output.print(output.json(), result, () => `${verb}d ${group} → ${peer}`);
    });
  }
  link.command("remove <group> <peer>").description("remove a link (the peer keeps its replica)").action(async (group: string, peer: string) => {
    const result = await callApi(output.target(), "DELETE", `/v1/groups/${encodeURIComponent(group)}/links/${encodeURIComponent(peer)}`);
    output.print(output.json(), result, () => `removed ${group} → ${peer}`);
  });
  link
    .command("progress <group> <peer>")
    .description("show a progress bar of the link's initial sync or resync until the peer is consistent")
    .option("--timeout <duration>", "give up after this long", "1h")
    .action(async (group: string, peer: string, options: { timeout: string }) => {
      const deadline = Date.now() + parseDuration(options.timeout, "--timeout");
      const tty = process.stderr.isTTY === true;
      for (;;) {
        const { links } = (await callApi(output.target(), "GET", "/v1/links")) as { links: LinkView[] };
        const view = links.find((candidate) => candidate.group === group && candidate.peer === peer);
        if (view === undefined) throw new OperatingError("LINK_NOT_FOUND", { group, peer });
        process.stderr.write(tty ? `\r${progressBar(view)}\u001b[K` : `${progressBar(view)}\n`);
        if (view.consistent && view.state === "streaming") {
          if (tty) process.stderr.write("\n");
          output.print(output.json(), view, () => `${group} → ${peer}: consistent, applied ${view.appliedLsn}`);
          return;
        }
        if (Date.now() > deadline) throw new OperatingError("TIMEOUT", { what: "link progress", group, peer, state: view.state });
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    });

  program
    .command("drain")
    .description("wait until every link has applied everything written so far (and its peer is consistent)")
    .option("--group <group>", "only this group")
    .option("--timeout <duration>", "give up after this long", "10m")
    .action(async (options: { group?: string; timeout: string }) => {
      const timeoutMs = parseDuration(options.timeout, "--timeout");
      const result = (await callApi(output.target(), "POST", "/v1/drain", { group: options.group, timeoutMs }, timeoutMs)) as { groups: { group: string; lsn: string; links: string[] }[] };
      output.print(output.json(), result, () => result.groups.map((group) => `${group.group}: ${group.links.length} link(s) applied through LSN ${group.lsn}`).join("\n"));
    });

  program
    .command("verify")
    .description("compare region hashes of the primary and every secondary (ships hashes only); exit 1 when they differ")
    .option("--group <group>", "only this group")
    .action(async (options: { group?: string }) => {
      type Report = { consistent: boolean; groups: { group: string; links: { peer: string; bytesCompared: number; differingBytes: number; differing: { volume: string; offset: number; length: number }[] }[] }[] };
      const result = (await callApi(output.target(), "POST", "/v1/verify", { group: options.group }, cliLongRequestMsMax)) as Report;
      output.print(output.json(), result, () =>
        result.groups
          .flatMap((group) =>
            group.links.map((link) => {
              const head = `${group.group} → ${link.peer}: compared ${formatSize(link.bytesCompared)}, ${link.differingBytes === 0 ? "identical" : `${formatSize(link.differingBytes)} differ (a repair would send ${formatSize(link.differingBytes)})`}`;
              return [head, ...link.differing.map((region) => `  ${region.volume} offset ${region.offset} length ${region.length}`)].join("\n");
            }),
          )
          .join("\n") || "no links",
      );
      if (!result.consistent) throw new OperatingError("VERIFY_DIFFERS", "the replicas differ from the primary in the regions listed");
    });

  program
    .command("takeover <group>")
    .description("on a secondary: become the group's primary (refused while the replica is inconsistent)")
    .action(async (group: string) => {
      await callApi(output.target(), "POST", `/v1/groups/${encodeURIComponent(group)}/takeover`);
    });
}
