// Replication through faults, with real processes: a seeded fault proxy on the link (delay,
// stall, reset, partition), a prefix checker that samples the secondary's image while the
// workload runs, a link that stays down long enough to overflow the log, kill -9 of either
// node, and peers that must be refused.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { chaosRun } from "../tools/chaos-schedule.js";
import { checkPrefix, checkPrefixAtLeast } from "../tools/prefix-checker.js";
import { freezeProcess } from "../tools/freeze.js";
import { PrefixWorkload } from "../tools/prefix-workload.js";
import { cleanup, run, runOk, tempDir } from "./harness.js";
import { Cluster, replicaState } from "./replication-harness.js";

const blockSize = 4096;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// Freezes the secondary (every thread stopped: every write it issued has completed or not
// started), reads its image, lets it go on.
function sampleImage(pid: number, path: string, bytes: number): Buffer {
  freezeProcess(pid);
  try {
    return readFileSync(path).subarray(0, bytes);
  } finally {
    process.kill(pid, "SIGCONT");
  }
}

describe("replication through faults", () => {
  const dirs: string[] = [];
  after(() => dirs.forEach(cleanup));

  // LOCKSTEP_CHAOS_ROUNDS (npm run soak) runs more seeded fault schedules of each mode.
  const rounds = Number(process.env.LOCKSTEP_CHAOS_ROUNDS ?? "1");
  const schedules = (["async", "sync"] as const).flatMap((mode) => Array.from({ length: rounds }, (_, round) => ({ mode, round })));
  for (const { mode, round } of schedules) {
    it(`${mode}${round > 0 ? ` (schedule ${round + 1})` : ""}: the secondary is always a prefix of the primary's writes while the link is cut and restored`, async () => {
      const dir = tempDir(`prefix-${mode}`);
      dirs.push(dir);
      // A log large enough that short outages never overflow it (that case has its own test).
      const cluster = await Cluster.start(dir, 1, { logSize: "1GiB" });
      try {
        await cluster.primary.createVolume("disk0", "16MiB");
        await cluster.link("secondary1", mode, { proxy: true, seed: (mode === "sync" ? 7 : 11) + round * 1000 });
        await cluster.waitConsistent();
        const blocks = 4096;
        const seed = (mode === "sync" ? 101 : 202) + round;
        const progressPath = join(dir, "progress.json");
        const workload = new PrefixWorkload({ uri: cluster.primary.uri("disk0"), blocks, seconds: 12, seed, progressPath, queueDepth: 4 });
        const chaos = chaosRun(cluster.proxies.get("secondary1")!, { seed, durationMs: 9_000, stepsMax: 40, faultMsMax: 700 });
        const secondary = cluster.secondaries[0]!;
        const image = cluster.imagePath(secondary, "disk0");
        let samples = 0;
        let largestPrefix = 0;
        await sleep(500);
        let skipped = 0;
        while (workload.progress()?.stoppedBecause == null && samples < 40) {
          // A resync overwrites regions out of write order: while one runs the replica says it
          // is inconsistent (the protective snapshot of a later issue stands in for it), and
          // a sample taken then proves nothing. Only samples with the replica consistent, and no
          // resync begun, before and after, count.
          const before = await replicaState(secondary);
          const sample = sampleImage(secondary.pid, image, blocks * blockSize);
          await sleep(150); // the workload's progress file is at most 50 ms old: this covers every write issued before the sample
          const after = await replicaState(secondary);
          const progress = workload.progress();
          if (progress === undefined) continue;
          if (!(before.consistent && after.consistent && before.resyncs === after.resyncs)) {
            skipped += 1;
            continue;
          }
          const verdict = checkPrefix(sample, seed, blocks, progress.issued, 4);
          assert.ok(verdict.ok, `sample ${samples}: not a prefix: ${verdict.reason} (block ${verdict.block})`);
          largestPrefix = Math.max(largestPrefix, verdict.prefixMax);
          samples += 1;
          await sleep(100);
        }
        process.stdout.write(`# ${mode}: ${samples} prefix samples checked, ${skipped} taken during a resync skipped\n`);
        const applied = await chaos.stop();
        const result = await workload.finished;
        assert.equal(result.code, 0, result.stderr);
        assert.ok(samples >= 8, `only ${samples} samples`);
        assert.ok(applied.length >= 5, "the fault proxy acted");
        assert.ok(largestPrefix > 0, "the secondary received writes during the run");
        await cluster.drain();
        const final = workload.progress()!;
        const verdict = checkPrefixAtLeast(readFileSync(image).subarray(0, blocks * blockSize), seed, blocks, final.issued, final.acknowledged, 4);
        assert.ok(verdict.ok, `after drain the secondary holds every acknowledged write: ${verdict.reason}`);
        await cluster.compareImages("disk0");
        const links = await cluster.links();
        assert.ok(links[0]!.stats.connects >= 2, "the link was cut and came back");
        assert.equal(links[0]!.stats.regionBytesSent, 0, "resumes never resent data: a flapping link continues from the peer's durable LSN");
        assert.equal(links[0]!.stats.resyncsCompleted, 1, "only the initial sync: every reconnect resumed from the log");
      } finally {
        await cluster.stop();
      }
    });
  }

  it("a link down long enough to overflow the log falls back to its bitmap and resyncs only dirty regions", async () => {
    const dir = tempDir("overflow");
    dirs.push(dir);
    const fioDir = tempDir("overflow-fio");
    dirs.push(fioDir);
    const cluster = await Cluster.start(dir, 1, { logSize: "128MiB" });
    try {
      await cluster.primary.createVolume("disk0", "256MiB");
      await cluster.link("secondary1", "async");
      await cluster.waitConsistent();
      const paused = await cluster.primary.cli(["link", "pause", "g", "secondary1"]);
      assert.equal(paused.code, 0, paused.stderr);
      // 200 MiB of 64 KiB writes into the first 32 MiB: more than the log holds, few regions.
      await runOk("fio", ["--name=overflow", "--ioengine=nbd", `--uri=${cluster.primary.uri("disk0")}`, "--rw=randwrite", "--bs=64k", "--iodepth=8", "--size=32M", "--io_size=200M", "--randrepeat=0"], { cwd: fioDir, timeoutMs: 240_000 });
      const [link] = await cluster.links();
      assert.ok(link!.bitmap !== null, `the link switched to its bitmap (overflows ${link!.stats.overflows})`);
      assert.ok(link!.stats.overflows >= 1);
      const dirtyBytes = link!.bitmap!.dirtyBytes;
      assert.ok(dirtyBytes > 0 && dirtyBytes <= 32 * 1024 * 1024, `dirty ${dirtyBytes} bytes: only the written regions`);
      // While the bitmap is active, the secondary is not a consistent copy: no takeover.
      const status = JSON.parse((await cluster.primary.cli(["--json", "status"])).stdout) as { groups: { log: { usedPercent: number } }[] };
      assert.ok(status.groups[0]!.log.usedPercent < 90, "the log space was freed");
      const resumed = await cluster.primary.cli(["link", "resume", "g", "secondary1"]);
      assert.equal(resumed.code, 0, resumed.stderr);
      await cluster.waitConsistent(120_000);
      await cluster.drain();
      const [after] = await cluster.links();
      const sent = after!.stats.regionBytesSent;
      process.stdout.write(`# overflow resync: ${sent} bytes sent for ${dirtyBytes} dirty bytes (ratio ${(sent / dirtyBytes).toFixed(3)})\n`);
      assert.ok(sent <= dirtyBytes * 1.01 + 64 * 1024, `sent ${sent} for ${dirtyBytes} dirty`);
      assert.ok(sent >= dirtyBytes * 0.5, "the dirty regions were sent");
      await cluster.compareImages("disk0");
      const verified = await cluster.verify();
      assert.equal(verified.consistent, true);
    } finally {
      await cluster.stop();
    }
  });

  // Found by `npm run chaos` (seed 107): after an outage a periodic link's whole backlog is one
  // interval; larger than the secondary's log copy, it could never be applied whole, the
  // receiver waited for room forever and the link was dropped as silent and resumed, over and over.
  it("periodic: a backlog larger than the secondary's log is applied in parts, and drain completes", async () => {
    const dir = tempDir("periodic-backlog");
    dirs.push(dir);
    const fioDir = tempDir("periodic-backlog-fio");
    dirs.push(fioDir);
    const cluster = await Cluster.start(dir, 1, { logSize: "1GiB" }, { logSize: "128MiB" });
    try {
      await cluster.primary.createVolume("disk0", "64MiB");
      await cluster.link("secondary1", "periodic", { interval: "500ms" });
      await cluster.waitConsistent();
      assert.equal((await cluster.primary.cli(["link", "pause", "g", "secondary1"])).code, 0);
      // 200 MiB of records: more than the secondary's 128 MiB log, well under the primary's.
      await runOk("fio", ["--name=backlog", "--ioengine=nbd", `--uri=${cluster.primary.uri("disk0")}`, "--rw=randwrite", "--bs=64k", "--iodepth=8", "--size=32M", "--io_size=200M"], { cwd: fioDir, timeoutMs: 240_000 });
      const [paused] = await cluster.links();
      assert.equal(paused!.bitmap, null, "the backlog stayed in the primary's log");
      assert.equal((await cluster.primary.cli(["link", "resume", "g", "secondary1"])).code, 0);
      await cluster.drain("120s");
      await cluster.compareImages("disk0");
      const status = JSON.parse((await cluster.secondaries[0]!.cli(["--json", "status"])).stdout) as { groups: { stats: { intervalsSplit: number } }[] };
      assert.ok(status.groups[0]!.stats.intervalsSplit >= 1, "the interval was applied in parts");
    } finally {
      await cluster.stop();
    }
  });

  it("overflow policy stall: a down link keeps its records, writes wait and then get ENOSPC, nothing is lost", async () => {
    const dir = tempDir("stall");
    dirs.push(dir);
    const fioDir = tempDir("stall-fio");
    dirs.push(fioDir);
    const cluster = await Cluster.start(dir, 1, { logSize: "128MiB" });
    try {
      await cluster.primary.createVolume("disk0", "64MiB");
      await cluster.link("secondary1", "async", { overflow: "stall" });
      await cluster.waitConsistent();
      assert.equal((await cluster.primary.cli(["link", "pause", "g", "secondary1"])).code, 0);
      const fio = await run("fio", ["--name=stall", "--ioengine=nbd", `--uri=${cluster.primary.uri("disk0")}`, "--rw=randwrite", "--bs=64k", "--iodepth=4", "--size=32M", "--io_size=200M", "--continue_on_error=none"], { cwd: fioDir, timeoutMs: 120_000 });
      assert.notEqual(fio.code, 0, "writes beyond what the log holds fail once the stall times out");
      assert.match(fio.stdout + fio.stderr, /No space left on device|error=28|ENOSPC/i);
      const [link] = await cluster.links();
      assert.equal(link!.bitmap, null, "policy stall never switches to a bitmap");
      assert.equal(link!.stats.overflows, 0);
      const status = JSON.parse((await cluster.primary.cli(["--json", "status"])).stdout) as { groups: { stats: { logFullErrors: number } }[] };
      assert.ok(status.groups[0]!.stats.logFullErrors >= 1);
      // Resumed, the link streams what the log kept; the replica converges without a resync.
      assert.equal((await cluster.primary.cli(["link", "resume", "g", "secondary1"])).code, 0);
      await cluster.drain();
      await cluster.compareImages("disk0");
      const [after] = await cluster.links();
      assert.equal(after!.stats.regionBytesSent, 0, "no resync: every record came from the log");
    } finally {
      await cluster.stop();
    }
  });

  it("kill -9 of the secondary and of the primary in the middle of writing: every replica converges", async () => {
    const dir = tempDir("kill");
    dirs.push(dir);
    const fioDir = tempDir("kill-fio");
    dirs.push(fioDir);
    const cluster = await Cluster.start(dir, 1);
    try {
      await cluster.primary.createVolume("disk0", "64MiB");
      await cluster.link("secondary1", "sync");
      await cluster.waitConsistent();
      const fio = (seconds: number) =>
        run("fio", ["--name=kill", "--ioengine=nbd", `--uri=${cluster.primary.uri("disk0")}`, "--rw=randwrite", "--bs=16k", "--iodepth=16", "--size=64M", "--time_based", `--runtime=${seconds}`], { cwd: fioDir, timeoutMs: 120_000 });
      const secondary = cluster.secondaries[0]!;
      for (let round = 0; round < 2; round++) {
        const writing = fio(4);
        await sleep(1000 + round * 700);
        await secondary.kill();
        await sleep(300);
        await secondary.start();
        await writing;
      }
      const writing = fio(6);
      await sleep(1500);
      await cluster.primary.kill();
      await writing; // fio fails once its server is gone
      await cluster.primary.start();
      const writingAgain = fio(3);
      await sleep(800);
      await secondary.kill();
      await secondary.start();
      assert.equal((await writingAgain).code, 0);
      await cluster.waitConsistent(120_000);
      await cluster.drain();
      await cluster.compareImages("disk0");
      assert.equal((await cluster.verify()).consistent, true);
    } finally {
      await cluster.stop();
    }
  });

  it("sync: kill -9 of the primary loses no acknowledged write: the secondary holds every one", async () => {
    const dir = tempDir("sync-loss");
    dirs.push(dir);
    const cluster = await Cluster.start(dir, 1, { logSize: "512MiB" });
    try {
      await cluster.primary.createVolume("disk0", "16MiB");
      await cluster.link("secondary1", "sync");
      await cluster.waitConsistent();
      const blocks = 4096;
      const seed = 303;
      const progressPath = join(dir, "progress.json");
      const workload = new PrefixWorkload({ uri: cluster.primary.uri("disk0"), blocks, seconds: 30, seed, progressPath, queueDepth: 4 });
      await sleep(2500);
      await cluster.primary.kill(); // the whole primary site is gone from here on
      const result = await workload.finished;
      assert.notEqual(result.code, 0, "the workload saw its server die");
      const progress = workload.progress()!;
      assert.ok(progress.acknowledged > 100, `only ${progress.acknowledged} writes acknowledged`);
      // The secondary applies what it holds durably; every acknowledged write must be there.
      const secondary = cluster.secondaries[0]!;
      const deadline = Date.now() + 30_000;
      for (;;) {
        const status = JSON.parse((await secondary.cli(["--json", "status"])).stdout) as { groups: { appliedLsn: string; durableLsn: string; receivedLsn: string }[] };
        const group = status.groups[0]!;
        if (group.appliedLsn === group.receivedLsn) break;
        assert.ok(Date.now() < deadline, `secondary did not apply what it received: ${JSON.stringify(group)}`);
        await sleep(100);
      }
      const image = readFileSync(cluster.imagePath(secondary, "disk0")).subarray(0, blocks * blockSize);
      const verdict = checkPrefixAtLeast(image, seed, blocks, progress.issued, progress.acknowledged, 4);
      assert.ok(verdict.ok, `an acknowledged write is missing on the sync secondary: ${verdict.reason}`);
      process.stdout.write(`# sync loss test: ${progress.acknowledged} acknowledged writes, the secondary holds a prefix through ${verdict.prefixMax}\n`);
    } finally {
      await cluster.stop();
    }
  });

  it("initial sync of a large sparse volume ships only its allocated regions while writes go on", async () => {
    const dir = tempDir("initial");
    dirs.push(dir);
    const fioDir = tempDir("initial-fio");
    dirs.push(fioDir);
    // A log that the writes during the copy cannot overflow (an overflow would legitimately
    // restart the sync and resend: the overflow test covers that).
    const cluster = await Cluster.start(dir, 1, { logSize: "1GiB" });
    try {
      await cluster.primary.createVolume("disk0", "4GiB");
      const uri = cluster.primary.uri("disk0");
      await runOk("qemu-io", ["-f", "raw", uri, "-c", "write -P 0x11 0 8M", "-c", "write -P 0x22 1G 8M", "-c", "write -P 0x33 3G 8M"]);
      // No link yet: the log holds where writes went, not their data; the link added while
      // fio writes brings the data back from its starting point (GroupLinks.needsData).
      const omits = async () => (JSON.parse((await cluster.primary.cli(["status", "--json"])).stdout) as { groups: { logOmitsData: boolean }[] }).groups[0]!.logOmitsData;
      assert.equal(await omits(), true);
      const writing = run("fio", ["--name=initial", "--ioengine=nbd", `--uri=${uri}`, "--rw=randwrite", "--bs=4k", "--iodepth=8", "--offset=2G", "--size=4M", "--time_based", "--runtime=4"], { cwd: fioDir, timeoutMs: 60_000 });
      await cluster.link("secondary1", "async");
      const progress = await cluster.primary.cli(["link", "progress", "g", "secondary1", "--timeout", "60s"]);
      assert.equal(progress.code, 0, `${progress.stderr.slice(-1500)}\n--- primary\n${cluster.primary.logTail()}\n--- secondary\n${cluster.secondaries[0]!.logTail()}`);
      assert.match(progress.stderr, /g\/secondary1/, "the progress view names the link");
      const fio = await writing;
      assert.equal(fio.code, 0, fio.stderr);
      await cluster.drain();
      await cluster.compareImages("disk0");
      assert.equal(await omits(), false);
      const [link] = await cluster.links();
      const allocated = 24 * 1024 * 1024;
      assert.equal(link!.stats.overflows, 0, "the log did not overflow during the copy");
      process.stdout.write(`# initial sync: ${link!.stats.regionBytesSent} region bytes sent for a 4 GiB volume with ${allocated} bytes allocated\n`);
      assert.ok(link!.stats.regionBytesSent >= allocated, `every allocated byte was sent: ${JSON.stringify(link!.stats)}`);
      assert.ok(link!.stats.regionBytesSent <= allocated + 4 * 1024 * 1024 + 1024 * 1024, `only allocated regions were sent: ${JSON.stringify(link!.stats)}\n${cluster.primary.logTail()}`);
    } finally {
      await cluster.stop();
    }
  });

  it("refuses what is not its configured primary, and keeps serving", async () => {
    const dir = tempDir("refuse");
    dirs.push(dir);
    const cluster = await Cluster.start(dir, 1);
    const intruderCluster = await Cluster.start(join(dir, "intruder"), 0);
    try {
      await cluster.primary.createVolume("disk0", "16MiB");
      const secondary = cluster.secondaries[0]!;
      // Before any link: the replica has never been a copy of anything: no takeover.
      const early = await secondary.cli(["takeover", "g"]);
      assert.equal(early.code, 7);
      assert.match(early.stderr, /^error REPLICA_INCONSISTENT: /m);
      await cluster.link("secondary1", "async");
      await cluster.waitConsistent();
      await runOk("qemu-io", ["-f", "raw", cluster.primary.uri("disk0"), "-c", "write -P 0x31 0 1M"]);
      // A credential made for another node is refused at accept.
      const foreign = join(dir, "foreign.link");
      assert.equal((await cluster.primary.cli(["link", "add", "g", "someone-else", "127.0.0.1:9", "--credential-out", foreign])).code, 0);
      const wrongNode = await secondary.cli(["link", "accept", "--file", foreign]);
      assert.equal(wrongNode.code, 2);
      assert.match(wrongNode.stderr, /^error CREDENTIAL_INVALID: .*someone-else/m);
      assert.equal((await cluster.primary.cli(["link", "remove", "g", "someone-else"])).code, 0);
      // Another primary, with its own link credential the secondary never accepted: refused.
      await intruderCluster.primary.createVolume("disk0", "16MiB");
      const port = cluster.replicationPort("secondary1");
      const intruderCredential = join(dir, "intruder.link");
      assert.equal((await intruderCluster.primary.cli(["link", "add", "g", "secondary1", `127.0.0.1:${port}`, "--credential-out", intruderCredential])).code, 0);
      await runOk("qemu-io", ["-f", "raw", intruderCluster.primary.uri("disk0"), "-c", "write -P 0x66 0 1M"]);
      // Garbage on the replication port, straight over TCP.
      const { connect } = await import("node:net");
      await new Promise<void>((resolve) => {
        const socket = connect(Number(port), "127.0.0.1", () => socket.write("GET / HTTP/1.1\r\n\r\n" + "x".repeat(4096)));
        socket.on("error", () => undefined);
        socket.on("close", () => resolve());
        socket.setTimeout(15_000, () => socket.destroy());
      });
      await sleep(1500);
      const [intruderLink] = await intruderCluster.links();
      assert.notEqual(intruderLink!.state, "streaming", "the intruder never streams");
      assert.equal(intruderLink!.consistent, false);
      // The real link is unaffected, and the secondary holds the real primary's data only.
      await runOk("qemu-io", ["-f", "raw", cluster.primary.uri("disk0"), "-c", "write -P 0x32 1M 1M"]);
      await cluster.drain();
      await cluster.compareImages("disk0");
      const log = secondary.logTail();
      assert.match(log, /replication link refused/);
      // A consistent replica would be promotable; takeover itself is not built yet.
      const later = await secondary.cli(["takeover", "g"]);
      assert.match(later.stderr, /^error NOT_SUPPORTED: /m);
    } finally {
      await intruderCluster.stop();
      await cluster.stop();
    }
  });
});
