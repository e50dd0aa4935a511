// `lockstep demo` as DESIGN.md §7 promises: the first stdout line is the ready JSON; SIGINT
// stops every process it started; run again on the same directory it restarts the same node
// on its data (after a kill -9 too), never wiping it.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { after, describe, it } from "node:test";
import { cleanup, lockstepBin, runOk, tempDir } from "./harness.js";

interface Ready {
  ready: boolean;
  dir: string;
  nodes: Record<string, { role: string; pid: number; node: string; api: string; socket: string; nbd: string; volumes: Record<string, string> }>;
}

function startDemo(dir: string): Promise<{ child: ChildProcess; ready: Ready }> {
  const child = spawn(process.execPath, [lockstepBin, "demo", "--dir", dir, "--size", "64MiB", "--volumes", "2"], { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("demo not ready in 30 s")), 30_000);
    createInterface({ input: child.stdout! }).once("line", (line) => {
      clearTimeout(timer);
      resolve({ child, ready: JSON.parse(line) as Ready });
    });
    child.once("exit", (code) => reject(new Error(`demo exited ${code} before ready`)));
  });
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("lockstep demo", () => {
  const dir = tempDir("demo");
  const started: ChildProcess[] = [];
  after(() => {
    for (const child of started) if (child.exitCode === null) child.kill("SIGKILL");
    cleanup(dir);
  });

  it("prints the ready line, serves, stops on SIGINT, and restarts on its data", async () => {
    const first = await startDemo(dir);
    started.push(first.child);
    const primary = first.ready.nodes.primary!;
    assert.equal(first.ready.ready, true);
    assert.equal(primary.role, "primary");
    assert.deepEqual(Object.keys(primary.volumes).sort(), ["disk0", "disk1"]);
    assert.match(primary.nbd, /^nbd\+unix:\/\/\/disk0\?socket=/);
    await runOk("qemu-io", ["-f", "raw", primary.nbd, "-c", "write -P 0x3c 0 1M"]);
    first.child.kill("SIGINT");
    assert.equal(await exited(first.child), 0);
    assert.equal(alive(primary.pid), false, "the node process stopped with the demo");

    const second = await startDemo(dir);
    started.push(second.child);
    const again = second.ready.nodes.primary!;
    assert.deepEqual(again.volumes, primary.volumes, "the same volumes, not new ones");
    const read = await runOk("qemu-io", ["-f", "raw", again.nbd, "-c", "read -P 0x3c 0 1M"]);
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);

    // The demo killed outright takes its node down with it (the node watches its stdin).
    second.child.kill("SIGKILL");
    await exited(second.child);
    const deadline = Date.now() + 15_000;
    while (alive(again.pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(alive(again.pid), false, "no node is left behind by a killed demo");

    // A crash of the node: the next demo recovers the same data.
    const third0 = await startDemo(dir);
    started.push(third0.child);
    const crashed = third0.ready.nodes.primary!;
    await runOk("qemu-io", ["-f", "raw", crashed.nbd, "-c", "write -P 0x3d 1M 1M"]);
    process.kill(crashed.pid, "SIGKILL");
    assert.equal(await exited(third0.child), 1, "the demo reports its node's death");
    const third = await startDemo(dir);
    started.push(third.child);
    const recovered = await runOk("qemu-io", ["-f", "raw", third.ready.nodes.primary!.nbd, "-c", "read -P 0x3d 1M 1M", "-c", "read -P 0x3c 0 1M"]);
    assert.doesNotMatch(recovered.stdout, /Pattern verification failed/);
    third.child.kill("SIGTERM");
    assert.equal(await exited(third.child), 0);
  });
});
