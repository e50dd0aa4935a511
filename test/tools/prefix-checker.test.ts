// The prefix checker: TypeScript and Python compute the same blocks and contents, synthetic
// images built from prefixes pass with the right interval, a missing, torn, foreign or future
// write fails, a brute-force definition agrees on random images, and a real run of the
// workload against qemu-nbd is a prefix both mid-run (sampled with the writer stopped) and at
// the end (exactly the acknowledged writes).

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import fc from "fast-check";
import { children, run } from "../child-process.js";
import { blockContent, blockOf, blockSize, checkPrefix, checkPrefixAtLeast, imageAfter } from "./prefix-checker.js";
import { PrefixWorkload, prefixWorkloadScript, pythonWithLibnbd } from "./prefix-workload.js";

function range(first: number, last: number): number[] {
  return Array.from({ length: Math.max(0, last - first + 1) }, (_, index) => first + index);
}

// The next write to `block` after `writeNumber` (Infinity if none up to `limit`).
function nextWriteTo(seed: number, blocks: number, block: number, writeNumber: number, limit: number): number {
  for (let later = writeNumber + 1; later <= limit; later++) if (blockOf(seed, later, blocks) === block) return later;
  return Infinity;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe("prefix checker: TypeScript and Python agree", () => {
  for (const [seed, blocks] of [[0, 1], [7, 100], [0xffff_ffff, 1 << 20], [123_456, 4096]] as const) {
    it(`blockOf and blockContent for seed ${seed}, ${blocks} blocks`, async () => {
      const count = 200;
      const result = await run(pythonWithLibnbd, [prefixWorkloadScript, "selftest", String(seed), String(blocks), String(count)], { timeoutMs: 30_000 });
      assert.equal(result.code, 0, result.stderr);
      const python = JSON.parse(result.stdout) as { blocks: number[]; contentSha256: string[] };
      const written = range(1, count).map((writeNumber) => blockOf(seed, writeNumber, blocks));
      assert.deepEqual(python.blocks, written);
      const hashes = written.map((block, index) => createHash("sha256").update(blockContent(seed, block, index + 1)).digest("hex"));
      assert.deepEqual(python.contentSha256, hashes);
    });
  }
});

describe("prefix checker: synthetic images", () => {
  const seed = 99;
  const blocks = 64;

  it("an all-zero image is prefix 0", () => {
    assert.deepEqual(checkPrefix(Buffer.alloc(blocks * blockSize), seed, blocks, 0), { ok: true, prefixMin: 0, prefixMax: 0 });
  });

  it("the image after writes 1..N is exactly prefix N", () => {
    for (const count of [1, 2, 17, 63, 64, 500]) {
      const verdict = checkPrefix(imageAfter(seed, blocks, range(1, count)), seed, blocks, count + 1000);
      assert.deepEqual(verdict, { ok: true, prefixMin: count, prefixMax: count }, `prefix ${count}`);
    }
  });

  it("a write missing in the middle fails; a queue depth that covers the gap accepts it", () => {
    const count = 300;
    const missing = range(260, 290).find((writeNumber) => nextWriteTo(seed, blocks, blockOf(seed, writeNumber, blocks), writeNumber, count) > count)!;
    assert.ok(missing !== undefined, "some write in 260..290 is never overwritten");
    const image = imageAfter(seed, blocks, range(1, count).filter((writeNumber) => writeNumber !== missing));
    const verdict = checkPrefix(image, seed, blocks, count);
    assert.equal(verdict.ok, false);
    assert.equal(verdict.block, blockOf(seed, missing, blocks));
    assert.match(verdict.reason!, new RegExp(`write ${missing} .* missing`));
    assert.deepEqual([verdict.prefixMin, verdict.prefixMax], [missing - 1, count]);
    assert.equal(checkPrefix(image, seed, blocks, count, count - missing).ok, false, "writes queueDepth apart are ordered");
    assert.equal(checkPrefix(image, seed, blocks, count, count - missing + 1).ok, true, "writes closer than queueDepth are not");
  });

  it("a write missing but overwritten later is invisible, so the image is a prefix", () => {
    const count = 300;
    const hidden = range(1, count).find((writeNumber) => nextWriteTo(seed, blocks, blockOf(seed, writeNumber, blocks), writeNumber, count) <= count)!;
    const image = imageAfter(seed, blocks, range(1, count).filter((writeNumber) => writeNumber !== hidden));
    assert.deepEqual(checkPrefix(image, seed, blocks, count), { ok: true, prefixMin: count, prefixMax: count });
  });

  it("a torn block fails", () => {
    const count = 200;
    const image = imageAfter(seed, blocks, range(1, count));
    const block = blockOf(seed, count, blocks);
    const older = range(1, count - 1).reverse().find((writeNumber) => blockOf(seed, writeNumber, blocks) === block)!;
    blockContent(seed, block, older).copy(image, block * blockSize + 2048, 2048); // the last 4 sectors from an older write
    const verdict = checkPrefix(image, seed, blocks, count);
    assert.equal(verdict.ok, false);
    assert.equal(verdict.block, block);
    assert.match(verdict.reason!, /torn/);
  });

  it("garbage, a misdirected write, a foreign seed and a write from the future fail", () => {
    const count = 200;
    const source = blockOf(seed, count, blocks); // written, surely
    const destination = (source + 1) % blocks;
    const cases: [string, (image: Buffer) => void, RegExp][] = [
      ["garbage", (image) => image.fill(0x5a, 3 * blockSize, 3 * blockSize + 512), /checksum/],
      ["misdirected", (image) => image.copy(image, destination * blockSize, source * blockSize, (source + 1) * blockSize), new RegExp(`holds block ${source}'s data`)],
      ["foreign seed", (image) => blockContent(seed + 1, 9, 1).copy(image, 9 * blockSize), /seed/],
      ["future", (image) => blockContent(seed, blockOf(seed, count + 5, blocks), count + 5).copy(image, blockOf(seed, count + 5, blocks) * blockSize), /beyond/],
    ];
    for (const [name, damage, reason] of cases) {
      const image = imageAfter(seed, blocks, range(1, count));
      damage(image);
      const verdict = checkPrefix(image, seed, blocks, count);
      assert.equal(verdict.ok, false, name);
      assert.match(verdict.reason!, reason, name);
    }
  });

  it("checkPrefixAtLeast demands every acknowledged write", () => {
    const image = imageAfter(seed, blocks, range(1, 50));
    assert.equal(checkPrefixAtLeast(image, seed, blocks, 60, 50).ok, true);
    const short = checkPrefixAtLeast(image, seed, blocks, 60, 51);
    assert.equal(short.ok, false);
    assert.match(short.reason!, /51 were acknowledged/);
  });

  it("agrees with the definition (equals the image after 1..P for some P) on random images", () => {
    const smallBlocks = 6;
    const writesMax = 30;
    const prefixes = range(0, writesMax).map((count) => imageAfter(seed, smallBlocks, range(1, count)));
    fc.assert(
      fc.property(fc.subarray(range(1, writesMax)), fc.integer({ min: 1, max: 4 }), (applied, queueDepth) => {
        const image = imageAfter(seed, smallBlocks, applied);
        const verdict = checkPrefix(image, seed, smallBlocks, writesMax);
        const prefix = prefixes.findIndex((candidate) => candidate.equals(image));
        assert.equal(verdict.ok, prefix >= 0);
        if (prefix >= 0) assert.deepEqual([verdict.prefixMin, verdict.prefixMax], [prefix, prefix]);
        // A wider queue depth accepts everything depth 1 does.
        if (verdict.ok) assert.equal(checkPrefix(image, seed, smallBlocks, writesMax, queueDepth).ok, true);
      }),
      { numRuns: 300, seed: 4242 },
    );
  });
});

describe("prefix workload against qemu-nbd", () => {
  const blocks = 1024;
  let dir: string;
  let imagePath: string;
  let server: ChildProcess;
  let uri: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "lockstep-prefix-"));
    imagePath = join(dir, "volume.raw");
    writeFileSync(imagePath, "");
    truncateSync(imagePath, blocks * blockSize);
    const socket = join(dir, "nbd.sock");
    server = spawn("qemu-nbd", ["--format=raw", `--socket=${socket}`, "--persistent", "--shared=4", imagePath], { stdio: "ignore" });
    children.add(server);
    for (let waitedMs = 0; !existsSync(socket); waitedMs += 20) {
      assert.ok(waitedMs < 10_000 && server.exitCode === null, "qemu-nbd listens");
      await sleep(20);
    }
    uri = `nbd+unix:///?socket=${socket}`;
  });

  after(async () => {
    if (server.exitCode === null && server.signalCode === null) {
      const closed = new Promise((resolve) => server.once("close", resolve));
      server.kill("SIGTERM");
      await closed;
    }
    children.delete(server);
    rmSync(dir, { recursive: true, force: true });
  });

  function zeroImage(): void {
    truncateSync(imagePath, 0); // qemu-nbd keeps the file open and reads the zeros
    truncateSync(imagePath, blocks * blockSize);
  }

  async function progressed(workload: PrefixWorkload, acknowledgedMin: number): Promise<void> {
    for (let waitedMs = 0; (workload.progress()?.acknowledged ?? 0) < acknowledgedMin; waitedMs += 20) {
      assert.ok(waitedMs < 10_000, "the workload makes progress");
      await sleep(20);
    }
  }

  it("at queue depth 1: a prefix mid-run, exactly the acknowledged writes after SIGTERM", async () => {
    const seed = 2024;
    zeroImage();
    const workload = new PrefixWorkload({ uri, blocks, seconds: 60, seed, progressPath: join(dir, "progress-1.json") });
    await progressed(workload, 200);
    const acknowledgedBefore = workload.progress()!.acknowledged;
    workload.signal("SIGSTOP"); // a point-in-time sample: at most one write was in flight
    await sleep(100);
    const sample = readFileSync(imagePath);
    workload.signal("SIGCONT");
    await progressed(workload, acknowledgedBefore + 200);
    const result = await workload.stop();
    assert.equal(result.code, 0, result.stderr);
    const final = workload.progress()!;
    assert.equal(final.stoppedBecause, "SIGTERM");
    assert.equal(final.acknowledged, final.issued, "writes in flight were drained");

    const middle = checkPrefixAtLeast(sample, seed, blocks, final.issued, acknowledgedBefore);
    assert.ok(middle.ok, middle.reason);
    assert.equal(middle.prefixMin, middle.prefixMax);
    assert.ok(middle.prefixMax < final.acknowledged);

    const end = checkPrefixAtLeast(readFileSync(imagePath), seed, blocks, final.issued, final.acknowledged);
    assert.deepEqual(end, { ok: true, prefixMin: final.acknowledged, prefixMax: final.acknowledged });
  });

  it("at queue depth 8: the final image is exactly the acknowledged writes", async () => {
    const seed = 77;
    const queueDepth = 8;
    zeroImage();
    const workload = new PrefixWorkload({ uri, blocks, seconds: 1, seed, progressPath: join(dir, "progress-8.json"), queueDepth });
    const result = await workload.finished;
    assert.equal(result.code, 0, result.stderr);
    const final = workload.progress()!;
    assert.equal(final.stoppedBecause, "time");
    assert.equal(final.acknowledged, final.issued);
    assert.ok(final.acknowledged > 100, `the workload wrote (${final.acknowledged})`);
    const end = checkPrefixAtLeast(readFileSync(imagePath), seed, blocks, final.issued, final.acknowledged, queueDepth);
    assert.deepEqual(end, { ok: true, prefixMin: final.acknowledged, prefixMax: final.acknowledged });
  });

  it("with FUA and flushes: durable trails acknowledged, a clean stop flushes; a later run continues from --first", async () => {
    const seed = 4242;
    const queueDepth = 4;
    zeroImage();
    const options = { uri, blocks, seconds: 1, seed, queueDepth, fuaPercent: 20, flushEvery: 16 };
    const first = new PrefixWorkload({ ...options, progressPath: join(dir, "progress-fua.json") });
    assert.equal((await first.finished).code, 0);
    const one = first.progress()!;
    assert.ok(one.fua > 0 && one.flushes > 0, `FUA writes and flushes went out: ${JSON.stringify(one)}`);
    assert.equal(one.durable, one.acknowledged, "the last flush made every acknowledged write durable");
    // Continue as after a crash that kept writes 1..(acknowledged − 10): the rewritten numbers
    // carry the same bytes, so the image stays a prefix of one write order.
    const continued = new PrefixWorkload({ ...options, seconds: 0.5, first: one.acknowledged - 10, progressPath: join(dir, "progress-fua-2.json") });
    assert.equal((await continued.finished).code, 0);
    const two = continued.progress()!;
    assert.equal(two.first, one.acknowledged - 10);
    assert.ok(two.acknowledged > one.acknowledged, "the second run wrote past the first");
    const end = checkPrefixAtLeast(readFileSync(imagePath), seed, blocks, Math.max(one.issued, two.issued), two.acknowledged, queueDepth);
    assert.deepEqual(end, { ok: true, prefixMin: two.acknowledged, prefixMax: two.acknowledged });
  });
});
