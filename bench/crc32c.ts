// CRC-32C cost per call, the project's native one (src/io/crc32c.ts, native/crc32c.c) against
// its portable path and its peers, measured in the same run on the same bytes:
//
//   node dist/bench/crc32c.js [--repeats N]
//
// Prints nanoseconds per call for 4 KiB (a 4k write's record) and microseconds per call for
// 1 MiB, the best of N timed loops each (the others lost to scheduling or JIT), and each row's
// ratio to the native one. Peers: node:zlib's crc32 (CRC-32, another polynomial, the built-in
// call of the same shape) and @node-rs/crc32's crc32c, which the project used before, when
// it is installed (it is no longer a dependency).

import { parseArgs } from "node:util";
import { crc32 } from "node:zlib";
import { crc32c } from "../src/io/crc32c.js";
import { nativeFs } from "../src/io/native.js";

type Checksum = (data: Uint8Array, initial: number) => number;

const sizes = [
  { label: "4 KiB", bytes: 4096, calls: 200_000, unit: "ns", nanosecondsPerUnit: 1 },
  { label: "1 MiB", bytes: 1 << 20, calls: 400, unit: "µs", nanosecondsPerUnit: 1_000 },
] as const;

// Imported by a name TypeScript does not resolve, so the bench builds without the package.
async function nodeRsCrc32c(): Promise<Checksum | null> {
  const name = "@node-rs/crc32";
  try {
    const module = (await import(name)) as { crc32c: (data: Uint8Array, initial?: number) => number };
    return (data, initial) => module.crc32c(data, initial);
  } catch {
    return null;
  }
}

// The best of `repeats` loops of `calls` calls, in nanoseconds per call.
function nanosecondsPerCall(checksum: Checksum, data: Uint8Array, calls: number, repeats: number): number {
  let best = Infinity;
  let state = 0;
  for (let repeat = 0; repeat < repeats; repeat++) {
    const start = process.hrtime.bigint();
    for (let call = 0; call < calls; call++) state = checksum(data, state);
    best = Math.min(best, Number(process.hrtime.bigint() - start) / calls);
  }
  if (state === 0.5) console.log(state); // never: keeps the chain of results observable
  return best;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { repeats: { type: "string", default: "7" } } });
  const repeats = Number(values.repeats);
  const implementations: Array<[string, Checksum]> = [
    [`lockstep crc32c (${nativeFs.crc32cHardware ? "crc32 instruction, 3 streams" : "portable tables"})`, crc32c],
    ["lockstep portable tables (slicing-by-8)", (data, initial) => nativeFs.crc32cPortable(data, initial)],
    ["node:zlib crc32 (CRC-32, not Castagnoli)", (data, initial) => crc32(data, initial)],
  ];
  const nodeRs = await nodeRsCrc32c();
  if (nodeRs !== null) implementations.push(["@node-rs/crc32 crc32c", nodeRs]);
  else console.log("# @node-rs/crc32 is not installed: its row is left out");
  for (const size of sizes) {
    const data = new Uint8Array(size.bytes).map((_, index) => (index * 2654435761) >>> 24);
    let nativeNanoseconds = 0;
    for (const [name, checksum] of implementations) {
      const nanoseconds = nanosecondsPerCall(checksum, data, size.calls, repeats);
      if (checksum === crc32c) nativeNanoseconds = nanoseconds;
      const perCall = (nanoseconds / size.nanosecondsPerUnit).toFixed(size.unit === "ns" ? 0 : 1);
      console.log(`${size.label.padEnd(6)} ${name.padEnd(52)} ${perCall.padStart(7)} ${size.unit}/call  ×${(nanoseconds / nativeNanoseconds).toFixed(2)}`);
    }
  }
}

await main();
