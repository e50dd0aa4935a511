import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { serveNodeFlags, serveNodeFlagsMissing } from "../../src/cli/node-flags.js";

const binPath = fileURLToPath(new URL("../../../bin/lockstep.js", import.meta.url));

describe("node flags of lockstep serve", () => {
  it("the lockstep command's first line carries exactly serveNodeFlags", () => {
    const first = readFileSync(binPath, "utf8").split("\n")[0]!;
    assert.equal(first, `#!/usr/bin/env -S node ${serveNodeFlags.join(" ")}`);
  });

  it("running the command itself starts Node with them (env -S splits the line)", () => {
    const result = spawnSync(binPath, ["--help"], { encoding: "utf8" });
    assert.equal(result.status, 0, result.stderr);
    const probe = spawnSync("/usr/bin/env", ["-S", `node ${serveNodeFlags.join(" ")} -e process.stdout.write(JSON.stringify(process.execArgv))`], { encoding: "utf8" });
    assert.equal(probe.status, 0, probe.stderr);
    assert.deepEqual(serveNodeFlagsMissing(JSON.parse(probe.stdout) as string[]), []);
  });

  it("names the flags a process lacks", () => {
    assert.deepEqual(serveNodeFlagsMissing([]), [...serveNodeFlags]);
    assert.deepEqual(serveNodeFlagsMissing([...serveNodeFlags, "--inspect"]), []);
  });
});
