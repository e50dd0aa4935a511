// Small files replaced atomically, so that a crash leaves either the old or the new content,
// never a mix or an empty file: write a temporary file beside it, fdatasync it, rename it over
// the old one, and fsync the directory so the rename itself is durable. The catalog and the
// dirty-region bitmaps are kept this way. Reading one back is bounded: a file longer than its
// format allows is refused before it is read.
//
// The temporary file is `<path>.tmp`: writers of one path must not overlap (each owner
// serialises its own saves). A failed write removes the temporary file and leaves the old
// content in place.

import { promises as fsp } from "node:fs";
import { dirname } from "node:path";
import { fromSystemError, type OperatingError } from "../errors.js";
import { scheduleIo } from "./io-scheduler.js";

// Resolves once `bytes` is durably the content of `path`. Rejects with OperatingError
// (DISK_IO, DISK_FULL, READ_ONLY).
export function writeFileAtomic(path: string, bytes: Buffer | string): Promise<void> {
  return scheduleIo(path, () => replaceFile(path, bytes));
}

async function replaceFile(path: string, bytes: Buffer | string): Promise<void> {
  const temporary = `${path}.tmp`;
  try {
    await writeDurably(temporary, bytes);
    await fsp.rename(temporary, path);
  } catch (error) {
    await fsp.rm(temporary, { force: true }).catch(() => undefined);
    throw fromSystemError(error, `write ${path}`);
  }
  await syncDirectory(dirname(path));
}

// The file's content, or null when it does not exist. A file longer than bytesMax is not read:
// it rejects with the caller's error for it (its format's "damaged" error).
export function readFileBounded(path: string, bytesMax: number, tooLarge: (size: number) => OperatingError): Promise<Buffer | null> {
  return scheduleIo(path, () => readBounded(path, bytesMax, tooLarge));
}

async function readBounded(path: string, bytesMax: number, tooLarge: (size: number) => OperatingError): Promise<Buffer | null> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw fromSystemError(error, `open ${path}`);
  }
  try {
    const { size } = await handle.stat();
    if (size > bytesMax) throw tooLarge(size);
    const target = Buffer.alloc(size);
    let filled = 0;
    while (filled < target.length) {
      const { bytesRead } = await handle.read(target, filled, target.length - filled, filled);
      if (bytesRead === 0) break; // the file shrank under us: the caller sees a short one
      filled += bytesRead;
    }
    return target.subarray(0, filled);
  } catch (error) {
    throw fromSystemError(error, `read ${path}`);
  } finally {
    await handle.close();
  }
}

async function writeDurably(path: string, bytes: Buffer | string): Promise<void> {
  const handle = await fsp.open(path, "w", 0o600);
  try {
    await handle.writeFile(bytes);
    await handle.datasync();
  } finally {
    await handle.close();
  }
}

async function syncDirectory(path: string): Promise<void> {
  try {
    const directory = await fsp.open(path, "r");
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  } catch (error) {
    throw fromSystemError(error, `sync directory ${path}`);
  }
}
