// The bench's command line. Validated here once; the rest of the bench trusts it.

import { parseArgs } from "node:util";
import type { CacheResetMethod } from "./page-cache.js";
import { rowsAll, rowsDefault } from "./fio-job.js";
import { syncRowsAll } from "./link-sync.js";
import { targetsAll, targetsDefault } from "./target-registry.js";
import { snapshotRowsAll } from "./target-snapshots.js";
import { operationRowsAll } from "./target-operations.js";

export interface BenchOptions {
  readonly targets: readonly string[];
  readonly rows: readonly string[];
  readonly runtimeSeconds: number;
  readonly rampSeconds: number;
  readonly quick: boolean;
  readonly rounds: number;
  readonly imageSizeBytes: number;
  readonly memoryCheck: boolean;
  readonly memoryWriteBytes: number;
  readonly memoryRandomSecondsMax: number;
  readonly cacheReset: CacheResetMethod;
  readonly rawEngine: string;
  readonly uvIoUring: "default" | "on" | "off";
  readonly tempParent: string;
  readonly docs: boolean;
  readonly resultPath: string | null; // null: bench/results/latest.json
}

const ownRowNames = [...syncRowsAll, ...snapshotRowsAll, ...operationRowsAll].map((row) => row.name);
const rowNamesKnown = [...rowsAll.map((row) => row.name), ...ownRowNames];
const rowsKnownDefault = [...rowsDefault, ...ownRowNames];

export const usage = `usage: npm run bench -- [options]

  --targets LIST       comma-separated, default ${targetsDefault.join(",")}
                       known: ${targetsAll.map((target) => target.name).join(", ")}
  --rows LIST          comma-separated, default ${rowsKnownDefault.join(",")}
                       known: ${rowNamesKnown.join(", ")}
                       (fio rows run on every target that runs them; ${syncRowsAll.map((row) => row.name).join(" and ")}
                       only on lockstep-link; ${snapshotRowsAll.map((row) => row.name).join(" and ")} only on
                       lockstep-snapshots; ${operationRowsAll.map((row) => row.name).join(", ")} only on
                       lockstep-operations, not a default target: its volume is 4 × --image-size
                       and the change --image-size; lockstep-async/-sync run randwrite-4k-qd16 only)
  --runtime SECONDS    measured time per job (default 15; --quick: 5)
  --ramp SECONDS       ramp time per job, not measured (default 3; --quick: 1)
  --rounds N           run every target's fio rows N times, target after target in each
                       round (default 1); tables show each row's median round and the
                       range; rows of its own and the memory check run in round 1 only
  --quick              short jobs, 1 GiB memory check, docs/BENCHMARKS.md left alone
  --image-size MIB     size of the bench image (default 1024)
  --memory-gib N       bytes written in the memory check, each phase (default 4; --quick: 1)
  --no-memory          skip the memory check
  --cache-reset M      auto | fadvise | drop (default auto: fadvise, drop if pages remain)
  --raw-engine E       fio engine for the raw target (default io_uring; libaio, psync)
  --uv-io-uring M      default | on | off: UV_USE_IO_URING for lockstep targets
  --tmp DIR            parent of the temp dir (default /var/tmp)
  --docs / --no-docs   regenerate docs/BENCHMARKS.md figures (default: yes unless --quick); a run
                       of only lockstep, lockstep-async/-sync/-link, lockstep-snapshots and
                       lockstep-operations rewrites only the replication, snapshot and/or
                       operations blocks it measured and keeps the data-path block
  --out PATH           JSON result file (default bench/results/latest.json)
`;

const roundsMax = 9;

export class UsageError extends Error {}

function listParse(value: string | undefined, fallback: readonly string[], known: readonly string[], what: string): string[] {
  if (value === undefined) return [...fallback];
  const names = value.split(",").map((name) => name.trim()).filter((name) => name !== "");
  const unknown = names.filter((name) => !known.includes(name));
  if (unknown.length > 0) throw new UsageError(`unknown ${what}: ${unknown.join(", ")} (known: ${known.join(", ")})`);
  if (names.length === 0) throw new UsageError(`--${what}s is empty`);
  return names;
}

function numberParse(value: string | undefined, fallback: number, name: string, min: number, max: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
    throw new UsageError(`--${name} must be a number from ${min} to ${max}, not ${value}`);
  }
  return parsed;
}

function choiceParse<T extends string>(value: string | undefined, fallback: T, choices: readonly T[], name: string): T {
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`--${name} must be one of ${choices.join(", ")}, not ${value}`);
  }
  return value as T;
}

function parseArgsStrict(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    strict: true,
    allowPositionals: false,
    options: {
      targets: { type: "string" },
      rows: { type: "string" },
      runtime: { type: "string" },
      ramp: { type: "string" },
      quick: { type: "boolean", default: false },
      rounds: { type: "string" },
      "image-size": { type: "string" },
      "memory-gib": { type: "string" },
      "no-memory": { type: "boolean", default: false },
      "cache-reset": { type: "string" },
      "raw-engine": { type: "string" },
      "uv-io-uring": { type: "string" },
      tmp: { type: "string" },
      docs: { type: "boolean" },
      "no-docs": { type: "boolean" },
      out: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
}

export function optionsParse(argv: readonly string[]): BenchOptions | "help" {
  let parsed: ReturnType<typeof parseArgsStrict>;
  try {
    parsed = parseArgsStrict(argv);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const values = parsed.values;
  if (values.help) return "help";
  const quick = values.quick === true;
  const runtimeSeconds = numberParse(values.runtime, quick ? 5 : 15, "runtime", 1, 3600);
  const rounds = numberParse(values.rounds, 1, "rounds", 1, roundsMax);
  if (!Number.isInteger(rounds)) throw new UsageError(`--rounds must be a whole number, not ${values.rounds}`);
  return {
    targets: listParse(values.targets, targetsDefault, targetsAll.map((target) => target.name), "target"),
    rows: listParse(values.rows, rowsKnownDefault, rowNamesKnown, "row"),
    runtimeSeconds,
    rampSeconds: numberParse(values.ramp, quick ? 1 : 3, "ramp", 0, 600),
    quick,
    rounds,
    imageSizeBytes: numberParse(values["image-size"], 1024, "image-size", 64, 65536) * 1024 * 1024,
    memoryCheck: values["no-memory"] !== true,
    memoryWriteBytes: numberParse(values["memory-gib"], quick ? 1 : 4, "memory-gib", 0.25, 64) * 1024 ** 3,
    memoryRandomSecondsMax: Math.max(2 * runtimeSeconds, 10),
    cacheReset: choiceParse(values["cache-reset"], "auto", ["auto", "fadvise", "drop"] as const, "cache-reset"),
    rawEngine: choiceParse(values["raw-engine"], "io_uring", ["io_uring", "libaio", "psync"] as const, "raw-engine"),
    uvIoUring: choiceParse(values["uv-io-uring"], "default", ["default", "on", "off"] as const, "uv-io-uring"),
    tempParent: values.tmp ?? "/var/tmp",
    docs: values["no-docs"] === true ? false : values.docs === true ? true : !quick,
    resultPath: values.out ?? null,
  };
}
