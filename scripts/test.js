#!/usr/bin/env node
// `npm test`: makes sure the real clients the end-to-end tests drive are installed (Debian
// packages, installed with apt-get when missing; a loud failure if that is impossible), then
// runs every compiled test file under node's test runner with modest parallelism (2 cores).
//
//   node scripts/test.js [--only SUBSTRING ...]

import { execFileSync, spawnSync } from "node:child_process";
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const tools = {
  "qemu-io": "qemu-utils",
  "qemu-img": "qemu-utils",
  "qemu-nbd": "qemu-utils",
  nbdinfo: "libnbd-bin",
  nbdcopy: "libnbd-bin",
  nbdsh: "libnbd-bin",
  fio: "fio",
  nbdkit: "nbdkit",
};

function have(command) {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

function havePythonNbd() {
  return spawnSync("/usr/bin/python3", ["-c", "import nbd"], { stdio: "ignore" }).status === 0;
}

function ensureTools() {
  const missing = new Set(Object.entries(tools).filter(([command]) => !have(command)).map(([, pkg]) => pkg));
  if (!havePythonNbd()) missing.add("python3-libnbd");
  if (missing.size === 0) return;
  const packages = [...missing];
  console.log(`# installing Debian packages for the end-to-end tests: ${packages.join(" ")}`);
  const asRoot = process.getuid?.() === 0;
  const aptGet = (...args) =>
    execFileSync(asRoot ? "apt-get" : "sudo", asRoot ? args : ["apt-get", ...args], {
      stdio: "inherit",
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
    });
  try {
    aptGet("update", "-qq");
    aptGet("install", "-y", "-qq", ...packages);
  } catch (error) {
    console.error(`error: could not install ${packages.join(" ")} (${error.message}); the end-to-end tests need them`);
    process.exit(1);
  }
  const still = Object.keys(tools).filter((command) => !have(command));
  if (still.length > 0 || !havePythonNbd()) {
    console.error(`error: still missing after install: ${[...still, ...(havePythonNbd() ? [] : ["python3-libnbd"])].join(" ")}`);
    process.exit(1);
  }
}

function testFiles(directory) {
  const found = [];
  for (const entry of readdirSync(directory)) {
    const path = join(directory, entry);
    if (statSync(path).isDirectory()) found.push(...testFiles(path));
    else if (entry.endsWith(".test.js")) found.push(path);
  }
  return found.sort();
}

ensureTools();
const only = process.argv.flatMap((argument, index, all) => (all[index - 1] === "--only" ? [argument] : []));
const files = testFiles("dist/test").filter((file) => only.length === 0 || only.some((part) => file.includes(part)));
if (files.length === 0) {
  console.error("error: no test files found under dist/test");
  process.exit(1);
}
// --test-force-exit: a file whose tests have all finished exits even if a handle is still open
// (its child processes are killed by PID on exit, test/child-process.ts); the harness prints
// the handles it finds open, so a leak shows in the output instead of a 10-minute timeout.
const result = spawnSync(process.execPath, ["--test", "--test-concurrency=2", "--test-timeout=600000", "--test-force-exit", ...files], { stdio: "inherit" });
process.exit(result.status ?? 1);
