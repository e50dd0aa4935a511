import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OperatingError } from "../../src/errors.js";
import { nbdPollMicrosDefault } from "../../src/constants.js";
import { parseConfig } from "../../src/node/config.js";

const valid = `
node: { name: n1, dataDir: data }
nbd: { socket: nbd.sock }
groups: [{ name: g, logSize: 256MiB }]
`;

function configError(text: string): string {
  try {
    parseConfig(text, "/base", "cfg.yaml");
  } catch (error) {
    assert.ok(error instanceof OperatingError);
    assert.equal(error.code, "CONFIG_INVALID");
    assert.equal(error.exitCode, 2);
    assert.doesNotMatch(error.message, /\n/, "one line");
    return error.message;
  }
  assert.fail("expected a config error");
}

describe("config", () => {
  it("accepts a valid config, resolves paths and fills defaults", () => {
    const config = parseConfig(valid, "/base");
    assert.equal(config.node.dataDir, "/base/data");
    assert.equal(config.nbd.socket, "/base/nbd.sock");
    assert.equal(config.groups[0]!.logSize, 256 * 1024 * 1024);
    assert.equal(config.groups[0]!.durability, "activity-map");
    assert.deepEqual(config.api.listen, { host: "127.0.0.1", port: 0 });
    assert.equal(config.nbd.pollMicros, nbdPollMicrosDefault);
    assert.equal(parseConfig(valid.replace("nbd: { socket: nbd.sock }", "nbd: { socket: nbd.sock, pollMicros: 0 }"), "/base").nbd.pollMicros, 0);
  });

  it("names the key and the problem in one line", () => {
    assert.match(configError(valid.replace("256MiB", "1MiB")), /cfg\.yaml: groups\[0\]\.logSize: must be between 128MiB and 1TiB/);
    assert.match(configError(valid.replace("256MiB", "lots")), /groups\[0\]\.logSize: .*cannot read "lots"/);
    assert.match(configError(valid.replace("name: n1", "name: 'bad name'")), /node\.name: must be/);
    assert.match(configError(`${valid}\nextra: 1\n`), /\(top level\): .*extra/);
    assert.match(configError(valid.replace("nbd: { socket: nbd.sock }", "nbd: {}")), /nbd: set socket, listen, or both/);
    assert.match(configError(valid.replace("nbd: { socket: nbd.sock }", "nbd: { socket: nbd.sock, pollMicros: 5000 }")), /nbd\.pollMicros: .*1000/);
    assert.match(configError(valid.replace("nbd: { socket: nbd.sock }", "nbd: { socket: nbd.sock, pollMicros: -1 }")), /nbd\.pollMicros/);
    assert.match(configError(`${valid}\napi: { listen: "10.0.0.1:80" }\n`), /api\.listen: the admin API listens on loopback only/);
    assert.match(configError(valid.replace("groups: [{ name: g, logSize: 256MiB }]", "groups: [{ name: g }, { name: g }]")), /groups: group names must be unique/);
    assert.match(configError("node: [1, 2"), /not valid YAML/);
    assert.match(configError(valid.replace("logSize: 256MiB", "logSize: 256MiB, durability: fast")), /groups\[0\]\.durability/);
  });
});
