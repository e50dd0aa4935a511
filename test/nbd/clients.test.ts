// Real clients against the server on a unix socket: qemu-io, nbdinfo, and libnbd's Python
// binding (Debian's python3-libnbd) with strict mode off, so that the server, not the
// client library, has to refuse what is wrong.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { nbdPayloadSizeMax } from "../../src/constants.js";
import { startHarness, python, run, waitFor, type Harness } from "./harness.js";
import { MemoryExport } from "./memory-export.js";

const MiB = 1024 * 1024;

describe("real NBD clients", () => {
  let harness: Harness;
  let disk: MemoryExport;
  let readOnly: MemoryExport;
  let scratch: MemoryExport;

  before(async () => {
    disk = new MemoryExport("disk", 16 * MiB, {}, "the test disk");
    readOnly = new MemoryExport("ro", 1 * MiB, { readOnly: true });
    readOnly.data.fill(0x5a);
    scratch = new MemoryExport("scratch", 4 * MiB, { canFastZero: false });
    harness = await startHarness([disk, readOnly, scratch]);
  });

  after(async () => {
    await harness.close();
  });

  it("qemu-io writes a pattern and reads it back", async () => {
    const result = await run("qemu-io", ["-f", "raw", harness.uri("disk"), "-c", "write -P 0xab 0 64k", "-c", "read -P 0xab 0 64k"]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /wrote 65536\/65536 bytes at offset 0/);
    assert.match(result.stdout, /read 65536\/65536 bytes at offset 0/);
    assert.doesNotMatch(result.stdout + result.stderr, /fail/i);
    assert.ok(disk.data.subarray(0, 65536).every((byte) => byte === 0xab));
    assert.equal(disk.data[65536], 0);
    await waitFor(() => harness.server.connectionCount === 0);
    assert.equal(disk.attached, 0, "detached after the client left");
  });

  it("qemu-io's pattern check fails on the wrong pattern (the check above can fail)", async () => {
    const result = await run("qemu-io", ["-f", "raw", harness.uri("disk"), "-c", "read -P 0xcd 0 4k"]);
    assert.match(result.stdout + result.stderr, /Pattern verification failed/);
  });

  it("nbdinfo --list shows every export with its description and block sizes", async () => {
    const result = await run("nbdinfo", ["--list", `nbd+unix://?socket=${harness.socketPath}`]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /export="disk":/);
    assert.match(result.stdout, /description: the test disk/);
    assert.match(result.stdout, /export="ro":[\s\S]*is_read_only: true/);
    assert.match(result.stdout, /block_size_minimum: 512/);
    assert.match(result.stdout, /block_size_maximum: 33554432/);
    assert.match(result.stdout, /base:allocation/);
  });

  it("nbdinfo --map shows holes after trims", async () => {
    const write = await run("qemu-io", ["-f", "raw", harness.uri("scratch"), "-c", "write -P 0x11 0 1M", "-c", "discard 256k 512k"]);
    assert.equal(write.code, 0, write.stderr);
    const result = await run("nbdinfo", ["--map", harness.uri("scratch")]);
    assert.equal(result.code, 0, result.stderr);
    const rows = result.stdout
      .trim()
      .split("\n")
      .map((line) => line.trim().split(/\s+/));
    assert.deepEqual(
      rows.map((row) => [Number(row[0]), Number(row[1]), Number(row[2])]),
      [
        [0, 256 * 1024, 0],
        [256 * 1024, 512 * 1024, 3],
        [768 * 1024, 256 * 1024, 0],
        [1024 * 1024, 3 * MiB, 3],
      ],
    );
    assert.ok(scratch.data.subarray(256 * 1024, 768 * 1024).every((byte) => byte === 0));
  });

  it("libnbd sees the spec's errors and its commands reach the export", async () => {
    disk.data.fill(0);
    disk.allocated.fill(0);
    const script = `
import nbd, json, errno
def err(fn):
    try:
        fn()
        return 0
    except nbd.Error as e:
        return getattr(errno, e.errno) if isinstance(e.errno, str) else e.errno
out = {}
h = nbd.NBD()
h.add_meta_context("base:allocation")
h.set_strict_mode(0)
h.connect_uri(${JSON.stringify(harness.uri("disk"))})
size = h.get_size()
out["size"] = size
out["block"] = [h.get_block_size(nbd.SIZE_MINIMUM), h.get_block_size(nbd.SIZE_PREFERRED), h.get_block_size(nbd.SIZE_MAXIMUM)]
out["structured"] = h.get_structured_replies_negotiated()
out["can"] = [h.can_flush(), h.can_fua(), h.can_trim(), h.can_zero(), h.can_fast_zero(), h.can_cache(), h.can_df(), h.can_multi_conn(), h.can_meta_context("base:allocation")]
out["write_past_end"] = err(lambda: h.pwrite(b"x" * 4096, size - 2048))
out["zero_past_end"] = err(lambda: h.zero(4096, size - 2048))
out["read_past_end"] = err(lambda: h.pread(4096, size - 2048))
out["trim_past_end"] = err(lambda: h.trim(4096, size))
out["read_misaligned"] = err(lambda: h.pread(512, 100))
out["write_misaligned"] = err(lambda: h.pwrite(b"y" * 100, 512))
out["read_oversized"] = err(lambda: h.pread(${nbdPayloadSizeMax} + 512, 0))
out["write_oversized"] = err(lambda: h.pwrite(b"w" * (${nbdPayloadSizeMax} + 512), 0))
out["unknown_flag"] = err(lambda: h.pread(512, 0, 1 << 7))
out["zero_fast"] = err(lambda: h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO))
out["fua_write"] = err(lambda: h.pwrite(b"\\xcd" * 4096, 8192, nbd.CMD_FLAG_FUA))
out["flush"] = err(h.flush)
out["zero_no_hole"] = err(lambda: h.zero(40960, 16384, nbd.CMD_FLAG_NO_HOLE))
out["cache"] = err(lambda: h.cache(65536, 0))
out["trim"] = err(lambda: h.trim(1 << 20, 65536))
entries = []
def extent(meta, offset, ents, error):
    entries.append([meta, offset, list(ents)])
    return 0
h.block_status(1 << 20, 0, extent)
h.block_status(1 << 20, 0, extent, nbd.CMD_FLAG_REQ_ONE)
out["block_status"] = entries
chunks = []
def chunk(data, offset, status, error):
    chunks.append([len(data), offset, status])
    return 0
out["df_read"] = err(lambda: h.pread_structured(4096, 8192, chunk, nbd.CMD_FLAG_DF))
out["df_chunks"] = chunks
out["read_back"] = h.pread(4096, 8192) == b"\\xcd" * 4096
h.shutdown()

r = nbd.NBD()
r.set_strict_mode(0)
r.connect_uri(${JSON.stringify(harness.uri("ro"))})
out["ro"] = [r.is_read_only(), err(lambda: r.pwrite(b"z" * 512, 0)), err(lambda: r.trim(512, 0)), err(lambda: r.zero(512, 0)), r.pread(512, 0) == b"\\x5a" * 512]
r.shutdown()

s = nbd.NBD()
s.set_request_block_size(False)
s.set_strict_mode(0)
s.connect_uri(${JSON.stringify(harness.uri("disk"))})
out["unaligned_write"] = err(lambda: s.pwrite(b"uuu", 1))
out["unaligned_read"] = s.pread(3, 1).decode()
s.shutdown()

z = nbd.NBD()
z.set_strict_mode(0)
z.connect_uri(${JSON.stringify(harness.uri("scratch"))})
out["fast_zero_unsupported"] = err(lambda: z.zero(4096, 0, nbd.CMD_FLAG_FAST_ZERO))
out["slow_zero_ok"] = err(lambda: z.zero(4096, 0))
z.shutdown()
print(json.dumps(out))
`;
    const flushesBefore = disk.flushes;
    const writesFuaBefore = disk.writesFua;
    const out = (await python(script, 30_000)) as Record<string, unknown>;
    assert.equal(out["size"], 16 * MiB);
    assert.deepEqual(out["block"], [512, 4096, nbdPayloadSizeMax]);
    assert.equal(out["structured"], true);
    assert.deepEqual(out["can"], [true, true, true, true, true, true, true, true, true]);
    assert.equal(out["write_past_end"], 28, "ENOSPC");
    assert.equal(out["zero_past_end"], 28, "ENOSPC");
    assert.equal(out["read_past_end"], 22, "EINVAL");
    assert.equal(out["trim_past_end"], 22, "EINVAL");
    assert.equal(out["read_misaligned"], 22);
    assert.equal(out["write_misaligned"], 22);
    assert.equal(out["read_oversized"], 22);
    assert.equal(out["write_oversized"], 22);
    assert.equal(out["unknown_flag"], 22);
    assert.equal(out["zero_fast"], 0);
    assert.equal(out["fua_write"], 0);
    assert.equal(out["flush"], 0);
    assert.equal(out["zero_no_hole"], 0);
    assert.equal(out["cache"], 0);
    assert.equal(out["trim"], 0);
    // Data: block 2 (FUA write) and blocks 4..13 (zero, NO_HOLE); holes elsewhere.
    assert.deepEqual(out["block_status"], [
      [
        "base:allocation",
        0,
        [8192, 3, 4096, 0, 4096, 3, 40960, 0, (1 << 20) - 57344, 3],
      ],
      ["base:allocation", 0, [8192, 3]],
    ]);
    assert.equal(out["df_read"], 0);
    assert.deepEqual(out["df_chunks"], [[4096, 8192, 1]]);
    assert.equal(out["read_back"], true);
    assert.deepEqual(out["ro"], [true, 1, 1, 1, true]);
    assert.equal(out["unaligned_write"], 0);
    assert.equal(out["unaligned_read"], "uuu");
    assert.equal(out["fast_zero_unsupported"], 95, "ENOTSUP");
    assert.equal(out["slow_zero_ok"], 0);
    assert.equal(disk.writesFua - writesFuaBefore, 1);
    assert.ok(disk.flushes > flushesBefore);
    assert.ok(disk.zeroCalls.some((options) => options.fastZero && !options.noHole));
    assert.ok(disk.zeroCalls.some((options) => options.noHole));
    assert.ok(disk.cacheCalls >= 1);
    assert.ok(disk.data.subarray(0, 1).equals(Buffer.from([0])) && disk.data.subarray(1, 4).toString() === "uuu");
    assert.ok(readOnly.data.every((byte) => byte === 0x5a), "the read-only export is unchanged");
    const errors = harness.observer.requests.filter((request) => request.errorCode !== undefined).map((request) => request.errorCode);
    assert.ok(errors.includes("WRITE_OUT_OF_RANGE") && errors.includes("REQUEST_MISALIGNED") && errors.includes("READ_ONLY"));
  });
});
