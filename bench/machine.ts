// What the figures were measured on: machine, kernel, filesystem, tool versions, commit.

import { readFileSync } from "node:fs";
import { availableParallelism, release, totalmem } from "node:os";
import { commandRun } from "./process-tree.js";

export interface MachineInfo {
  readonly processors: number;
  readonly cpuModel: string;
  readonly kernel: string;
  readonly memoryGiB: number;
  readonly filesystem: string; // of the temp dir: device, type, mount point
  readonly node: string;
  readonly tools: Record<string, string>;
  readonly commit: string;
}

const versionTimeoutMs = 10_000;

/** Debian package that provides each tool, for the "missing tool" message. */
export const toolPackages: Record<string, string> = {
  fio: "fio",
  nbdinfo: "libnbd-bin",
  nbdkit: "nbdkit",
  "qemu-nbd": "qemu-utils",
  fincore: "util-linux",
  dd: "coreutils",
  sync: "coreutils",
  sha256sum: "coreutils",
  nbdcopy: "libnbd-bin",
};

export async function toolAvailable(tool: string): Promise<boolean> {
  const result = await commandRun("sh", ["-c", 'command -v "$1"', "sh", tool], { timeoutMs: versionTimeoutMs });
  return result.code === 0;
}

async function versionLine(command: string, args: string[]): Promise<string> {
  try {
    const result = await commandRun(command, args, { timeoutMs: versionTimeoutMs });
    return (result.stdout || result.stderr).trim().split("\n")[0] ?? "";
  } catch {
    return "missing";
  }
}

function filesystemOf(path: string): string {
  let best = { mountPoint: "", line: "unknown" };
  for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) {
    const [device, mountPoint, type] = line.split(" ");
    if (device === undefined || mountPoint === undefined || type === undefined) continue;
    const covers = path === mountPoint || path.startsWith(mountPoint.endsWith("/") ? mountPoint : `${mountPoint}/`);
    if (covers && mountPoint.length >= best.mountPoint.length) {
      best = { mountPoint, line: `${device} ${type} on ${mountPoint}` };
    }
  }
  return best.line;
}

export async function machineDescribe(tempDir: string, repoRoot: string): Promise<MachineInfo> {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const cpuModel = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown";
  const commit = await commandRun("git", ["-C", repoRoot, "describe", "--always", "--dirty"], {
    timeoutMs: versionTimeoutMs,
  }).catch(() => null);
  return {
    processors: availableParallelism(),
    cpuModel,
    kernel: release(),
    memoryGiB: Math.round(totalmem() / 1024 ** 3),
    filesystem: filesystemOf(tempDir),
    node: process.version,
    tools: {
      fio: await versionLine("fio", ["--version"]),
      nbdkit: await versionLine("nbdkit", ["--version"]),
      "qemu-nbd": await versionLine("qemu-nbd", ["--version"]),
      libnbd: await versionLine("nbdinfo", ["--version"]),
    },
    commit: commit?.code === 0 ? commit.stdout.trim() : "unknown",
  };
}
