// Human sizes in configs and on the command line: "1GiB", "512M", "4096", "1.5TiB".
// Binary units (K, M, G, T with or without "i"/"iB"/"B") are powers of 1024, as storage
// administrators mean them for block devices.

import { OperatingError } from "./errors.js";

const unitFactor: Record<string, number> = { "": 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };

export function parseSize(text: string | number, what = "size"): number {
  if (typeof text === "number") {
    if (!Number.isSafeInteger(text) || text < 0) throw new OperatingError("USAGE", `${what}: ${text} is not a byte count`);
    return text;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) throw new OperatingError("USAGE", `${what}: cannot read "${text}" as a size (e.g. 4096, 512MiB, 1G)`);
  const bytes = Number(match[1]) * unitFactor[match[2]!.toLowerCase()]!;
  if (!Number.isSafeInteger(bytes)) throw new OperatingError("USAGE", `${what}: "${text}" is not a whole number of bytes`);
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let index = 0;
  while (value >= 1024 && index < units.length - 1) {
    value /= 1024;
    index += 1;
  }
  return `${Number.isInteger(value) ? value : value.toFixed(1)}${units[index]}`;
}

// "500ms", "5s", "2m", "1h" or a bare number of milliseconds → milliseconds. USAGE on anything else.
export function parseDuration(text: string | number, what = "duration"): number {
  const match = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$/.exec(String(text).trim());
  if (match === null) throw new OperatingError("USAGE", `${what}: "${text}" is not a duration (e.g. 500ms, 5s, 2m, 1h)`);
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? "ms") as "ms" | "s" | "m" | "h"];
  return Math.round(Number(match[1]) * factor);
}
