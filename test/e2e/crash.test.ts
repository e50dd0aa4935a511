// Crash trials: kill -9 the node at random moments while a libnbd client writes tagged blocks
// (FUA on some, FLUSH every 32) and fio writes with flushes on a second volume. After each
// restart, every write that was acknowledged with FUA or before a completed FLUSH reads back
// intact, and the log recovers cleanly. LOCKSTEP_CRASH_TRIALS sets the count (default 20;
// scripts/soak.js runs more).

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, projectRoot, run, runOk, tempDir, TestNode } from "./harness.js";

const trials = Number(process.env.LOCKSTEP_CRASH_TRIALS ?? 20);
const writer = join(projectRoot, "test", "e2e", "tagged-writer.py");

for (const durability of ["activity-map", "write-ahead"] as const) {
  describe(`kill -9 during writes (${durability})`, () => {
    let dir: string;
    let node: TestNode;

    before(async () => {
      dir = tempDir(`crash-${durability}`);
      node = new TestNode(dir, { durability });
      await node.start();
      await node.createVolume("tagged", "64MiB");
      await node.createVolume("load", "64MiB");
    });

    after(async () => {
      await node.stop();
      cleanup(dir);
    });

    const count = durability === "activity-map" ? trials : Math.max(2, Math.floor(trials / 4));
    it(`${count} trials lose no durable write`, async () => {
      let durableChecked = 0;
      for (let trial = 1; trial <= count; trial++) {
        const journal = join(dir, `journal-${trial}.json`);
        const killAfterMs = 300 + Math.floor(Math.random() * 1500);
        const writing = run("/usr/bin/python3", [writer, "write", node.uri("tagged"), "8192", "30", journal, String(trial)], { timeoutMs: 60_000 });
        const load = run("fio", ["--name=load", "--ioengine=nbd", `--uri=${node.uri("load")}`, "--rw=randwrite", "--bs=4k", "--iodepth=8", "--fsync=16", "--size=32m", "--time_based", "--runtime=30"], { timeoutMs: 60_000 });
        await new Promise((resolve) => setTimeout(resolve, killAfterMs));
        await node.kill();
        const written = await writing;
        await load;
        assert.equal(written.code, 0, `writer failed: ${written.stderr}`);
        const summary = JSON.parse(written.stdout) as { counts: { acked: number }; reason: string };
        assert.match(summary.reason, /server gone/, "the node was killed while the writer ran");
        await node.start();
        const verify = await runOk("/usr/bin/python3", [writer, "verify", node.uri("tagged"), journal], { timeoutMs: 60_000 });
        const result = JSON.parse(verify.stdout) as { checked: number; durableBlocks: number; violationCount: number; violations: unknown[] };
        assert.equal(result.violationCount, 0, `trial ${trial}: ${JSON.stringify(result.violations)}`);
        durableChecked += result.durableBlocks;
        const status = await node.cli(["status", "--json"]);
        assert.equal(status.code, 0, status.stderr);
        const recovery = (JSON.parse(status.stdout) as { groups: { recovery: { stoppedBecause: string } }[] }).groups[0]!.recovery;
        assert.ok(recovery !== null, "the node reports its recovery");
      }
      assert.ok(durableChecked > count, `durable writes were checked (${durableChecked})`);
    });
  });
}
