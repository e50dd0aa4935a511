// The one rule for given names (src/names.ts), and the places that use it agreeing on it.

import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { isName, nameLengthMax } from "../src/names.js";
import { parseConfig } from "../src/node/config.js";
import { isName as isNameBytes, isNameString } from "../src/replication/payload-codec.js";

const accepted = ["a", "A0", "0", "disk-0", "db_1.data", "x".repeat(nameLengthMax)];
const refused = ["", "-a", "_a", ".a", "a b", "a/b", "é", "a\n", "x".repeat(nameLengthMax + 1), "~p"];

describe("names", () => {
  it("accepts a letter or digit, then letters, digits, '_', '.' or '-', up to the limit", () => {
    for (const name of accepted) assert.ok(isName(name), name);
    for (const name of refused) assert.ok(!isName(name), name);
    assert.ok(!isName("abcd", 3), "a kind's own limit");
  });

  it("is the same rule on the wire, as text and as bytes", () => {
    for (const name of [...accepted, ...refused]) {
      assert.equal(isNameString(name), isName(name), name);
      assert.equal(isNameBytes(Buffer.from(name, "utf8")), isName(name), name);
    }
  });

  it("is what the config checks, with the key named in the error", () => {
    const config = (name: string) => `node: { name: ${JSON.stringify(name)}, dataDir: data }\nnbd: { socket: nbd.sock }\ngroups: [{ name: g, logSize: 256MiB }]\n`;
    assert.doesNotThrow(() => parseConfig(config("site-a"), "/tmp"));
    assert.throws(() => parseConfig(config("-site"), "/tmp"), /node\.name.*letters, digits/);
  });
});
