// Resetting the page cache before every fio job.
//
// Without it the same job swings by more than 10x: a read job after a write job finds the
// whole image in memory. Two methods, both checked with fincore(1) afterwards:
//
//   fadvise  `sync`, then for each file `dd iflag=nocache count=0` and
//            `dd oflag=nocache conv=notrunc,fdatasync count=0`: GNU dd calls
//            posix_fadvise(POSIX_FADV_DONTNEED) on the whole file. Clean pages only, hence
//            the sync first. Touches only the files named (the image and the server's state).
//   drop     `sync`, then write 1 to /proc/sys/vm/drop_caches (root): the whole machine.
//
// `auto` uses fadvise and falls back to drop when fincore still sees pages of the image.

import { accessSync, constants } from "node:fs";
import { commandCheck, commandRun } from "./process-tree.js";

export type CacheResetMethod = "auto" | "fadvise" | "drop";

export interface CacheResetResult {
  readonly method: "fadvise" | "drop" | "fadvise+drop";
  readonly residentBytesBefore: number | null; // image bytes in the page cache; null: no fincore
  readonly residentBytesAfter: number | null;
}

const syncTimeoutMs = 180_000;
const ddTimeoutMs = 60_000;
const dropCachesPath = "/proc/sys/vm/drop_caches";

export function dropCachesWritable(): boolean {
  try {
    accessSync(dropCachesPath, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Bytes of filePath resident in the page cache, or null when fincore is missing. */
export async function residentBytes(filePath: string, fincoreAvailable: boolean): Promise<number | null> {
  if (!fincoreAvailable) return null;
  const result = await commandRun("fincore", ["--bytes", "--noheadings", "--output", "RES", filePath], {
    timeoutMs: ddTimeoutMs,
  });
  const bytes = Number(result.stdout.trim());
  return result.code === 0 && Number.isFinite(bytes) ? bytes : null;
}

async function fadviseDontNeed(filePath: string): Promise<void> {
  await commandCheck("dd", [`if=${filePath}`, "iflag=nocache", "count=0", "status=none"], {
    timeoutMs: ddTimeoutMs,
  });
  await commandCheck(
    "dd",
    [`of=${filePath}`, "oflag=nocache", "conv=notrunc,fdatasync", "count=0", "status=none"],
    { timeoutMs: ddTimeoutMs },
  );
}

async function dropCaches(): Promise<void> {
  // A write to a /proc file, done by a child so that a hang cannot block the bench.
  await commandCheck("sh", ["-c", `echo 1 > ${dropCachesPath}`], { timeoutMs: ddTimeoutMs });
}

/** Syncs, evicts imagePath and otherFiles from the page cache, and says how well it worked. */
export async function pageCacheReset(
  imagePath: string,
  otherFiles: readonly string[],
  method: CacheResetMethod,
  fincoreAvailable: boolean,
): Promise<CacheResetResult> {
  const residentBytesBefore = await residentBytes(imagePath, fincoreAvailable);
  await commandCheck("sync", [], { timeoutMs: syncTimeoutMs });
  if (method === "drop") {
    await dropCaches();
    return { method: "drop", residentBytesBefore, residentBytesAfter: await residentBytes(imagePath, fincoreAvailable) };
  }
  for (const filePath of [imagePath, ...otherFiles]) await fadviseDontNeed(filePath);
  let residentBytesAfter = await residentBytes(imagePath, fincoreAvailable);
  if (method === "auto" && residentBytesAfter !== null && residentBytesAfter > 0 && dropCachesWritable()) {
    await commandCheck("sync", [], { timeoutMs: syncTimeoutMs });
    await dropCaches();
    residentBytesAfter = await residentBytes(imagePath, fincoreAvailable);
    return { method: "fadvise+drop", residentBytesBefore, residentBytesAfter };
  }
  return { method: "fadvise", residentBytesBefore, residentBytesAfter };
}
