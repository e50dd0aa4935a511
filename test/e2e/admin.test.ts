// The node as an administrator meets it: config errors, the CLI's exit codes and one-line
// errors, the token on the admin API, volume create/list/resize/delete, status and metrics,
// and a clean restart that replays nothing.

import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { cleanup, lockstep, runOk, tempDir, TestNode } from "./harness.js";

describe("config errors", () => {
  it("one line naming the key, and exit code 2", async () => {
    const dir = tempDir("config");
    try {
      const path = join(dir, "bad.yaml");
      writeFileSync(path, "node: { name: n, dataDir: d }\nnbd: { socket: s }\ngroups: [{ name: g, logSize: 1KiB }]\n");
      const result = await lockstep(["serve", "--config", path]);
      assert.equal(result.code, 2);
      assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
      assert.match(result.stderr, /^error CONFIG_INVALID: .*bad\.yaml: groups\[0\]\.logSize: must be between/);
      const missing = await lockstep(["serve", "--config", join(dir, "none.yaml")]);
      assert.equal(missing.code, 2);
      assert.match(missing.stderr, /^error CONFIG_INVALID: .*none\.yaml: cannot read: ENOENT/);
    } finally {
      cleanup(dir);
    }
  });
});

describe("admin API and CLI", () => {
  let dir: string;
  let node: TestNode;

  before(async () => {
    dir = tempDir("admin");
    node = new TestNode(dir);
    await node.start();
  });

  after(async () => {
    await node.stop();
    cleanup(dir);
  });

  it("creates, lists, resizes and deletes volumes", async () => {
    const path = await node.createVolume("v1", "32MiB");
    const listed = await node.cli(["volume", "list", "--json"]);
    assert.equal(listed.code, 0, listed.stderr);
    const volumes = (JSON.parse(listed.stdout) as { volumes: { name: string; size: number; path: string }[] }).volumes;
    assert.deepEqual(volumes.map((volume) => [volume.name, volume.size, volume.path]), [["v1", 32 * 1024 * 1024, path]]);
    const resized = await node.cli(["volume", "resize", "v1", "48MiB", "--json"]);
    assert.equal(resized.code, 0, resized.stderr);
    const info = await runOk("nbdinfo", ["--size", node.uri("v1")]);
    assert.equal(info.stdout.trim(), String(48 * 1024 * 1024));
    const human = await node.cli(["volume", "list"]);
    assert.match(human.stdout, /v1\s+g\s+48MiB/);
    const deleted = await node.cli(["volume", "delete", "v1"]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const gone = await runOk("nbdinfo", ["--list", "--json", `nbd+unix://?socket=${node.socket}`]);
    assert.deepEqual((JSON.parse(gone.stdout) as { exports: unknown[] }).exports, []);
  });

  it("refuses bad requests with stable codes and exit statuses", async () => {
    await node.createVolume("v2", "16MiB");
    const cases: [string[], number, RegExp][] = [
      [["volume", "resize", "nope", "1GiB"], 3, /^error VOLUME_NOT_FOUND: /],
      [["volume", "create", "v2", "--group", "g", "--size", "1MiB"], 4, /^error VOLUME_EXISTS: /],
      [["volume", "create", "v3", "--group", "nogroup", "--size", "1MiB"], 3, /^error GROUP_NOT_FOUND: /],
      [["volume", "create", "v3", "--group", "g", "--size", "1000"], 2, /^error REQUEST_INVALID: .*multiple of 512/],
      [["volume", "create", "bad/name", "--group", "g", "--size", "1MiB"], 2, /^error REQUEST_INVALID: /],
      [["volume", "frobnicate"], 2, /^error USAGE: /],
    ];
    for (const [args, code, pattern] of cases) {
      const result = await node.cli(args);
      assert.equal(result.code, code, `${args.join(" ")}: ${result.stderr}`);
      assert.match(result.stderr, pattern, args.join(" "));
      assert.equal(result.stderr.trim().split("\n").length, 1, `one line: ${result.stderr}`);
    }
    const unreachable = await lockstep(["--node", join(dir, "nowhere"), "status"]);
    assert.equal(unreachable.code, 5);
    assert.match(unreachable.stderr, /^error NODE_UNREACHABLE: /);
  });

  it("requires the token, and serves metrics", async () => {
    const url = node.api!.url;
    const denied = await fetch(`${url}/v1/status`, { headers: { authorization: "Bearer wrong" } });
    assert.equal(denied.status, 401);
    assert.equal(((await denied.json()) as { error: { code: string } }).error.code, "UNAUTHORIZED");
    const wrongToken = await lockstep(["--node", url, "--token", "x".repeat(43), "status"]);
    assert.equal(wrongToken.code, 5);
    assert.match(wrongToken.stderr, /^error UNAUTHORIZED/);
    await runOk("qemu-io", ["-f", "raw", node.uri("v2"), "-c", "write -P 1 0 64k", "-c", "read 0 64k"]);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /lockstep_nbd_requests_total\{kind="write",result="ok"\} [1-9]/);
    assert.match(metrics, /lockstep_nbd_bytes_total\{kind="read"\} [1-9]/);
    assert.match(metrics, /lockstep_nbd_request_duration_seconds_bucket\{le="[0-9.e-]+",kind="write"\}/);
    assert.match(metrics, /lockstep_log_used_bytes\{group="g"\} \d+/);
    assert.match(metrics, /^lockstep_nbd_poll_windows_total [1-9]/m); // qemu-io's replies above
    const status = await node.cli(["status"]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /group g: primary, activity-map; log /);
  });

  it("restarts cleanly after SIGTERM with nothing to replay", async () => {
    assert.equal(await node.stop(), 0);
    await node.start();
    const status = JSON.parse((await node.cli(["status", "--json"])).stdout) as { groups: { recovery: { replayedRecords: number } }[] };
    assert.equal(status.groups[0]!.recovery.replayedRecords, 0);
    const read = await runOk("qemu-io", ["-f", "raw", node.uri("v2"), "-c", "read -P 1 0 64k"]);
    assert.doesNotMatch(read.stdout, /Pattern verification failed/);
  });
});
